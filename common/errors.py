"""Every failure a service reports, and its OpenAI error envelope.

ApiError
 ├── InvalidRequest          400 invalid_request_error
 ├── AuthenticationFailed    401 authentication_error
 ├── PermissionDenied        403 permission_error
 ├── NotFound                404 invalid_request_error / not_found
 ├── PayloadTooLarge         413 invalid_request_error / request_too_large
 ├── RateLimited             429 rate_limit_error (Retry-After)
 ├── UpstreamFailed          502 upstream_error
 ├── ServiceUnavailable      503 service_unavailable (Retry-After)
 └── UpstreamTimeout         504 timeout

The gateway adds its own (``gateway.errors``); the video service uses these as they are.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

if TYPE_CHECKING:
    from fastapi.exceptions import RequestValidationError

_ADDRESS = re.compile(
    r"\b(?:[a-z][a-z0-9+.-]*://\S+"  # URLs
    r"|\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?"  # IPv4 addresses, with a port
    r"|\[[0-9a-f:]+\](?::\d+)?"  # bracketed IPv6 addresses
    r"|(?:sk|pk|rk|key|token|Bearer)[-_ ][A-Za-z0-9_\-.]{8,})",  # key-looking tokens
    re.IGNORECASE,
)


def redacted(text: str) -> str:
    """``text`` (a provider's message passed on to a client) without URLs, addresses or keys."""
    return _ADDRESS.sub("[redacted]", text)


def printable(text: str) -> str:
    """``text`` with lone UTF-16 surrogates replaced, so it can always be encoded as UTF-8 JSON."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


class ApiError(Exception):
    """Base of every error that leaves a service as an OpenAI error envelope."""

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
        self.message = printable(message)
        self.param = printable(param) if param is not None else None
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


class InvalidRequest(ApiError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationFailed(ApiError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ApiError):
    status_code = 403
    error_type = "permission_error"
    code = "permission_denied"


class NotFound(ApiError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class PayloadTooLarge(ApiError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(ApiError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamFailed(ApiError):
    status_code = 502
    error_type = "upstream_error"
    code = "bad_gateway"


class ServiceUnavailable(ApiError):
    status_code = 503
    error_type = "service_unavailable"
    code = "service_unavailable"


class UpstreamTimeout(ApiError):
    status_code = 504
    error_type = "timeout"
    code = "upstream_timeout"


def error_response(
    error: ApiError,
    request_id: str | None = None,
    *,
    envelope: dict[str, Any] | None = None,
    status_code: int | None = None,
) -> Response:
    """Render ``error`` as a JSON response with its status and headers (``envelope`` and
    ``status_code`` replace OpenAI's where another API's shape is owed)."""
    headers = error.headers()
    if request_id:
        headers["X-Request-ID"] = request_id
    return Response(
        orjson.dumps(envelope if envelope is not None else error.envelope()),
        status_code=status_code or error.status_code,
        media_type="application/json",
        headers=headers,
    )


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def invalid_fields(exc: RequestValidationError) -> InvalidRequest:
    """A route's parameters or body that FastAPI refused, as a 400 naming the first field."""
    first = exc.errors()[0] if exc.errors() else {"loc": ["body"], "msg": "invalid request"}
    param = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "path")) or None
    return InvalidRequest(f"{param or 'body'}: {first['msg']}", param=param)


def install_error_handlers(
    app: Starlette, respond: Callable[[Request, ApiError], Response], log: logging.Logger
) -> None:
    """Route every exception of ``app`` (ours, HTTP errors, the unexpected) through ``respond``."""
    from fastapi.exceptions import RequestValidationError  # the web stack, loaded by the apps only

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return respond(request, exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error = InvalidRequest(str(exc.detail), code=_HTTP_CODES.get(exc.status_code))
        error.status_code = exc.status_code
        return respond(request, error)

    async def on_invalid_fields(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return respond(request, invalid_fields(exc))

    async def on_client_gone(request: Request, exc: Exception) -> Response:
        # Not a failure of ours: counted as nginx's 499, never logged as an error; nobody reads it.
        return Response(status_code=499)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", extra={"request_id": getattr(request.state, "request_id", None)})
        return respond(request, ApiError("internal error", code="internal_error"))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_invalid_fields)
    app.add_exception_handler(ClientDisconnect, on_client_gone)
    app.add_exception_handler(Exception, on_unexpected)
