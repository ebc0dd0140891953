"""HTTP client for OpenAI-compatible deployments, and the mapping of their failures."""

from __future__ import annotations

import weakref
from collections.abc import Sequence

from gateway.deployment import Deployment
from gateway.errors import (
    GatewayError,
    NoDeploymentAvailable,
    RateLimited,
    UpstreamFailed,
    UpstreamTimeout,
    rejected_from_upstream,
)
from gateway.http1 import BodyTooLarge, ConnectionPool, Origin, Response, TransportError, request_head

TRANSPORT_ERRORS = (TransportError, TimeoutError, OSError)
MAX_METRICS_BYTES = 4 * 1024 * 1024  # a vLLM's /metrics is tens of kilobytes
ANTHROPIC_VERSION = "2023-06-01"
JSON_TYPE = b"application/json"


class AttemptFailed(Exception):
    """One attempt at one deployment failed; ``retryable`` says whether another try may succeed."""

    def __init__(self, error: GatewayError, retryable: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.retryable = retryable


def upstream_headers(deployment: Deployment) -> list[tuple[str, str]]:
    """What every request to ``deployment`` carries; its ``extra_headers`` win over the defaults."""
    headers = {
        "accept-encoding": ("Accept-Encoding", "identity"),
        "accept": ("Accept", "*/*"),
        "user-agent": ("User-Agent", "gateway"),
    }
    if deployment.provider == "anthropic":
        headers["anthropic-version"] = ("anthropic-version", ANTHROPIC_VERSION)
        if deployment.api_key:
            headers["x-api-key"] = ("x-api-key", deployment.api_key)
    elif deployment.api_key and not deployment.forward_authorization:
        headers["authorization"] = ("Authorization", f"Bearer {deployment.api_key}")
    for name, value in deployment.extra_headers.items():
        if not (deployment.forward_authorization and name.lower() == "authorization"):
            headers[name.lower()] = (name, value)
    return list(headers.values())


def authorization_line(deployment: Deployment, client_authorization: str | None) -> bytes:
    """The Authorization header line a deployment that forwards the client's gets: the client's
    own (its key for the gateway), else the deployment's api_key, else none."""
    value = client_authorization or (f"Bearer {deployment.api_key}" if deployment.api_key else None)
    if not value or any(c in value for c in "\r\n\0"):
        return b""
    return b"Authorization: " + value.encode("latin-1", "replace") + b"\r\n"


def check_deployment(deployment: Deployment) -> None:
    """ValueError when requests to ``deployment`` cannot be written (its api_base or a header)."""
    request_head(b"POST", Origin.parse(deployment.api_base), "chat/completions", upstream_headers(deployment))


class UpstreamClient:
    """Pooled keep-alive connections shared by every deployment; created inside the running event loop.

    The head of each deployment's requests is built once; a request adds its id, length and body.
    """

    def __init__(self, connect_timeout: float, max_answer_bytes: int = 64 * 1024 * 1024) -> None:
        self._pool = ConnectionPool(connect_timeout)
        self.max_answer_bytes = max_answer_bytes
        self._heads: weakref.WeakKeyDictionary[Deployment, dict[tuple[bytes, str], tuple[Origin, bytes]]] = (
            weakref.WeakKeyDictionary()
        )

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._pool.close()

    def _head(self, deployment: Deployment, method: bytes, endpoint: str, cache: bool = True) -> tuple[Origin, bytes]:
        heads = self._heads.get(deployment)
        if heads is None:
            heads = self._heads[deployment] = {}
        key = (method, endpoint)
        prepared = heads.get(key)
        if prepared is None:
            origin = Origin.parse(deployment.api_base)
            head = request_head(method, origin, deployment.path_prefix + endpoint, upstream_headers(deployment))
            prepared = (origin, head)
            if cache:
                heads[key] = prepared
        return prepared

    async def post(
        self,
        deployment: Deployment,
        endpoint: str,
        body: Sequence[bytes | memoryview],
        stream: bool,
        request_id: str,
        *,
        content_type: bytes = JSON_TYPE,
        extra_head: bytes = b"",
        method: bytes = b"POST",
    ) -> Response:
        """Send ``body`` to ``endpoint`` of ``deployment``; the caller releases the response.

        Non-streamed requests are bounded by the deployment's ``timeout`` as a whole; streamed
        ones by its ``stream_timeout`` between two pieces of the answer. ``extra_head`` holds
        whole header lines the client's request adds; other methods than POST name one object
        (``responses/{id}``), so their heads are not kept.
        """
        try:
            origin, head = self._head(deployment, method, endpoint, cache=method == b"POST")
        except ValueError as exc:
            raise AttemptFailed(UpstreamFailed(f"model '{deployment.group}' is misconfigured: {exc}"), True) from None
        if body:
            head += b"Content-Type: " + content_type + b"\r\n"
        head += extra_head + b"X-Request-ID: " + request_id.encode() + b"\r\n"
        if stream:
            return await self._pool.request(origin, head, body, read_timeout=deployment.stream_timeout)
        return await self._pool.request(
            origin, head, body, total_timeout=deployment.timeout, whole_limit=self.max_answer_bytes
        )

    async def engine_metrics(self, deployment: Deployment, timeout: float) -> tuple[int, bytes]:
        """GET ``/metrics`` at the root of a vLLM deployment's ``api_base`` (``.../v1`` dropped):
        its status and body (at most ``MAX_METRICS_BYTES``); OSError when it cannot be reached."""
        heads = self._heads.get(deployment)
        if heads is None:
            heads = self._heads[deployment] = {}
        prepared = heads.get((b"GET", "/metrics"))
        if prepared is None:
            root = deployment.api_base.rstrip("/").removesuffix("/v1")
            origin = Origin.parse(root)
            prepared = heads[b"GET", "/metrics"] = (
                origin,
                request_head(b"GET", origin, "metrics", upstream_headers(deployment)),
            )
        origin, head = prepared
        try:
            response = await self._pool.request(origin, head, (), total_timeout=timeout)
            try:
                body = await response.read(MAX_METRICS_BYTES)
            finally:
                response.release()
        except TRANSPORT_ERRORS as exc:
            raise OSError(describe_transport_error(exc)) from None
        return response.status, body

    async def probe(self, deployment: Deployment, timeout: float) -> str | None:
        """GET ``/models`` on the deployment; None when it answers 2xx (or is not probed: SDK
        providers have no common health route), else the reason."""
        if deployment.sdk:
            return None
        try:
            origin, head = self._head(deployment, b"GET", "models")
        except ValueError as exc:
            return f"misconfigured: {exc}"
        try:
            response = await self._pool.request(origin, head, (), total_timeout=timeout)
            try:
                await response.read(self.max_answer_bytes)
            finally:
                response.release()
        except TRANSPORT_ERRORS as exc:
            return describe_transport_error(exc)
        if response.status < 300 or (deployment.forward_authorization and response.status in (401, 403)):
            return None  # it answered (one that checks callers' keys refuses an anonymous probe)
        return f"HTTP {response.status}"


def describe_transport_error(exc: BaseException) -> str:
    """A short reason without addresses or payloads."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, TransportError):
        return exc.reason
    return "connection error"


def transport_failure(deployment: Deployment, exc: BaseException) -> AttemptFailed:
    """Map a connection-level exception to a retryable failure."""
    reason = describe_transport_error(exc)
    if isinstance(exc, BodyTooLarge):
        # Another deployment would answer as much: not retried, and no sign of an unhealthy one.
        return AttemptFailed(
            UpstreamFailed(f"model '{deployment.group}' answered more than the gateway accepts ({exc.reason})"),
            False,
        )
    if isinstance(exc, TimeoutError):
        return AttemptFailed(UpstreamTimeout(f"model '{deployment.group}' did not answer in time"), True)
    return AttemptFailed(UpstreamFailed(f"model '{deployment.group}' could not be reached: {reason}"), True)


def status_failure(deployment: Deployment, status: int, body: bytes, retry_after: str | None) -> AttemptFailed:
    """Map a non-2xx upstream answer: 408/429/5xx may be retried, other 4xx are the client's."""
    group = deployment.group
    if status in (401, 403) and deployment.forward_authorization:
        # The client's own key was refused: its error, passed on as the upstream said it.
        return AttemptFailed(rejected_from_upstream(status, body), False)
    if status == 429:
        return AttemptFailed(
            RateLimited(f"model '{group}' is rate limiting requests", retry_after=_parse_retry_after(retry_after)),
            True,
        )
    if status in (408, 504):
        return AttemptFailed(UpstreamTimeout(f"model '{group}' timed out (upstream HTTP {status})"), True)
    if status == 503:
        return AttemptFailed(NoDeploymentAvailable(f"model '{group}' is unavailable (upstream HTTP 503)"), True)
    if status >= 500:
        return AttemptFailed(UpstreamFailed(f"model '{group}' failed (upstream HTTP {status})"), True)
    if 300 <= status < 400:
        # Redirects are not followed (a POST cannot be replayed safely): its api_base is wrong.
        return AttemptFailed(UpstreamFailed(f"model '{group}' answered with HTTP {status}; check its api_base"), True)
    if status in (401, 403):
        # The deployment's own credentials are wrong: an operator problem, not the client's.
        return AttemptFailed(UpstreamFailed(f"model '{group}' refused the gateway's credentials"), True)
    return AttemptFailed(rejected_from_upstream(status, body), False)


def _parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
