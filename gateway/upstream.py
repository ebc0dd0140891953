"""HTTP client for OpenAI-compatible deployments, and the mapping of their failures."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from gateway.deployment import Deployment
from gateway.errors import (
    GatewayError,
    NoDeploymentAvailable,
    RateLimited,
    UpstreamFailed,
    UpstreamTimeout,
    rejected_from_upstream,
)

TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class AttemptFailed(Exception):
    """One attempt at one deployment failed; ``retryable`` says whether another try may succeed."""

    def __init__(self, error: GatewayError, retryable: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.retryable = retryable


class JsonBody(Payload):
    """A JSON body sent as the pieces it was assembled from, so megabytes are never copied.

    An asyncio transport buffers a large write without blocking the loop, and image
    requests are routinely several MiB.
    """

    def __init__(self, parts: Sequence[bytes | memoryview]) -> None:
        super().__init__(parts, content_type="application/json")
        self._parts = parts
        self._size = sum(len(part) for part in parts)

    async def write(self, writer: AbstractStreamWriter) -> None:
        """Write every piece in order."""
        for part in self._parts:
            await writer.write(part)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """The body as text (aiohttp calls this only for debugging output)."""
        return b"".join(self._parts).decode(encoding, errors)


class UpstreamClient:
    """A pooled HTTP client shared by every deployment; created inside the running event loop."""

    def __init__(self, connect_timeout: float) -> None:
        self._connect_timeout = connect_timeout
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._session.close()

    async def post(
        self, deployment: Deployment, endpoint: str, body: Sequence[bytes | memoryview], stream: bool, request_id: str
    ) -> aiohttp.ClientResponse:
        """Send ``body`` to ``endpoint`` of ``deployment``; the caller releases the response."""
        headers = {
            "Accept-Encoding": "identity",
            "User-Agent": "gateway",
            "X-Request-ID": request_id,
            **deployment.extra_headers,
        }
        if deployment.api_key:
            headers["Authorization"] = f"Bearer {deployment.api_key}"
        if stream:
            timeout = aiohttp.ClientTimeout(connect=self._connect_timeout, sock_read=deployment.stream_timeout)
        else:
            timeout = aiohttp.ClientTimeout(total=deployment.timeout, connect=self._connect_timeout)
        return await self._session.post(
            f"{deployment.api_base}/{endpoint}", data=JsonBody(body), headers=headers, timeout=timeout
        )

    async def probe(self, deployment: Deployment, timeout: float) -> str | None:
        """GET ``/models`` on the deployment; None when it answers 2xx (or is not probed: SDK
        providers have no common health route), else the reason."""
        if deployment.sdk:
            return None
        headers = {"Authorization": f"Bearer {deployment.api_key}"} if deployment.api_key else {}
        try:
            async with self._session.get(
                f"{deployment.api_base}/models", headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                await response.read()
                return None if response.status < 300 else f"HTTP {response.status}"
        except TRANSPORT_ERRORS as exc:
            return describe_transport_error(exc)


def describe_transport_error(exc: BaseException) -> str:
    """A short reason without addresses or payloads."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection refused or unreachable"
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return "connection closed mid-response"
    return "connection error"


def transport_failure(deployment: Deployment, exc: BaseException) -> AttemptFailed:
    """Map a connection-level exception to a retryable failure."""
    reason = describe_transport_error(exc)
    if isinstance(exc, asyncio.TimeoutError):
        return AttemptFailed(UpstreamTimeout(f"model '{deployment.group}' did not answer in time"), True)
    return AttemptFailed(UpstreamFailed(f"model '{deployment.group}' could not be reached: {reason}"), True)


def status_failure(deployment: Deployment, status: int, body: bytes, retry_after: str | None) -> AttemptFailed:
    """Map a non-2xx upstream answer: 408/429/5xx may be retried, other 4xx are the client's."""
    group = deployment.group
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
