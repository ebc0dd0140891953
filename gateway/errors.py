"""Every failure the gateway reports, and its OpenAI error envelope.

GatewayError
 ├── InvalidRequest          400 invalid_request_error
 ├── AuthenticationFailed    401 authentication_error
 ├── PermissionDenied        403 permission_error
 ├── ModelNotFound           404 invalid_request_error / model_not_found
 ├── PayloadTooLarge         413 invalid_request_error / request_too_large
 ├── RateLimited             429 rate_limit_error (Retry-After)
 ├── UpstreamRejected        4xx passed on from a deployment, message kept, internals dropped
 ├── UpstreamFailed          502 upstream_error
 ├── NoDeploymentAvailable   503 service_unavailable (Retry-After)
 └── UpstreamTimeout         504 timeout
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response


class GatewayError(Exception):
    """Base of every error that leaves the gateway as an OpenAI error envelope."""

    status_code = 500
    error_type = "internal_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    def envelope(self) -> dict[str, Any]:
        """The OpenAI ``{"error": {...}}`` body for this error."""
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        """Extra response headers (``Retry-After`` where a retry can succeed)."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class InvalidRequest(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationFailed(GatewayError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status_code = 403
    error_type = "permission_error"
    code = "model_not_allowed"


class ModelNotFound(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLarge(GatewayError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamRejected(GatewayError):
    """A deployment refused the request itself (4xx): the client's to fix, so its message is kept."""

    error_type = "invalid_request_error"

    def __init__(self, status_code: int, message: str, *, param: str | None, code: str | None) -> None:
        super().__init__(message, param=param, code=code)
        self.status_code = status_code


class UpstreamFailed(GatewayError):
    status_code = 502
    error_type = "upstream_error"
    code = "bad_gateway"


class NoDeploymentAvailable(GatewayError):
    status_code = 503
    error_type = "service_unavailable"
    code = "no_deployment_available"


class UpstreamTimeout(GatewayError):
    status_code = 504
    error_type = "timeout"
    code = "upstream_timeout"


def error_response(error: GatewayError, request_id: str | None = None) -> Response:
    """Render ``error`` as a JSON response with its status and headers."""
    headers = error.headers()
    if request_id:
        headers["X-Request-ID"] = request_id
    return Response(
        orjson.dumps(error.envelope()),
        status_code=error.status_code,
        media_type="application/json",
        headers=headers,
    )


def sse_error_event(error: GatewayError) -> bytes:
    """The event that ends a stream which failed after its first byte, followed by ``[DONE]``."""
    return b"data: " + orjson.dumps(error.envelope()) + b"\n\ndata: [DONE]\n\n"


def rejected_from_upstream(status_code: int, body: bytes) -> UpstreamRejected:
    """Keep the client-facing parts of an upstream 4xx error and drop everything else."""
    message, param, code = f"the model deployment rejected the request (HTTP {status_code})", None, None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or message)[:2000]
        param = error.get("param") if isinstance(error.get("param"), str) else None
        raw_code = error.get("code")
        code = str(raw_code) if isinstance(raw_code, str | int) else None
    elif isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        message = parsed["message"][:2000]
    return UpstreamRejected(status_code, message, param=param, code=code)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def install_error_handlers(
    app: Starlette, respond: Callable[[Request, GatewayError], Response], log: logging.Logger
) -> None:
    """Route every exception of ``app`` (ours, HTTP errors, the unexpected) through ``respond``."""

    async def on_gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return respond(request, exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error = InvalidRequest(str(exc.detail), code=_HTTP_CODES.get(exc.status_code))
        error.status_code = exc.status_code
        return respond(request, error)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", extra={"request_id": getattr(request.state, "request_id", None)})
        return respond(request, GatewayError("internal error", code="internal_error"))

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
