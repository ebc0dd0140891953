"""The gateway's failures: the shared envelope (``common.errors``) plus what only a gateway reports.

GatewayError (= common.errors.ApiError)
 ├── ... the shared errors (400, 401, 403, 404, 413, 429, 502, 503, 504)
 ├── BudgetExceeded          400 budget_exceeded: a managed key or team past its max_budget
 ├── ModelNotFound           404 invalid_request_error / model_not_found
 ├── PermissionDenied        403 permission_error / model_not_allowed
 ├── UpstreamRejected        4xx passed on from a deployment, message kept, internals dropped
 ├── NoDeploymentAvailable   503 service_unavailable / no_deployment_available (Retry-After)
 └── ClientClosedRequest     499 (nginx's code): the client left first; counted, never sent
"""

from __future__ import annotations

import orjson
from starlette.responses import Response

from common import errors as shared
from common.errors import (
    ApiError,
    AuthenticationFailed,
    InvalidRequest,
    PayloadTooLarge,
    RateLimited,
    UpstreamFailed,
    UpstreamTimeout,
    error_response,
    install_error_handlers,
    redacted,
)

GatewayError = ApiError


class ModelNotFound(shared.NotFound):
    code = "model_not_found"


class PermissionDenied(shared.PermissionDenied):
    code = "model_not_allowed"


class NoDeploymentAvailable(shared.ServiceUnavailable):
    code = "no_deployment_available"


class ClientClosedRequest(ApiError):
    status_code = 499
    error_type = "client_closed_request"
    code = "client_closed_request"


class UpstreamRejected(ApiError):
    """A deployment refused the request itself (4xx): the client's to fix, so its message is kept."""

    error_type = "invalid_request_error"

    def __init__(self, status_code: int, message: str, *, param: str | None, code: str | None) -> None:
        super().__init__(message, param=param, code=code)
        self.status_code = status_code


def sse_error_event(error: ApiError) -> bytes:
    """The event that ends a stream which failed after its first byte, followed by ``[DONE]``."""
    return b"data: " + orjson.dumps(error.envelope()) + b"\n\ndata: [DONE]\n\n"


def responses_error_event(error: ApiError) -> bytes:
    """The Responses API's ``error`` event; its ``error`` member makes the OpenAI SDK raise."""
    body = {"type": "error", "code": error.code, "message": error.message, "param": error.param}
    body.update(error.envelope())
    return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"


# Anthropic's error types and statuses (its API answers 529 when overloaded, never 502 or 503).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ANTHROPIC_STATUS = {502: 500, 503: 529}


def anthropic_status(status_code: int) -> int:
    """The status Anthropic's API would answer for ours."""
    return _ANTHROPIC_STATUS.get(status_code, status_code)


def anthropic_envelope(error: ApiError) -> dict[str, object]:
    """``{"type": "error", "error": {"type", "message"}}``, as Anthropic's API and SDK have it."""
    status = anthropic_status(error.status_code)
    kind = _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def anthropic_error_event(error: ApiError) -> bytes:
    """The ``error`` event that ends an Anthropic stream which failed after its first byte."""
    return b"event: error\ndata: " + orjson.dumps(anthropic_envelope(error)) + b"\n\n"


def anthropic_error_response(error: ApiError, request_id: str | None = None) -> Response:
    """``error`` in Anthropic's envelope and status."""
    response = error_response(
        error, request_id, envelope=anthropic_envelope(error), status_code=anthropic_status(error.status_code)
    )
    if request_id:
        response.headers["request-id"] = request_id  # the header Anthropic's SDK reports
    return response


def rejected_from_upstream(status_code: int, body: bytes) -> UpstreamRejected:
    """Keep the client-facing parts of an upstream 4xx error and drop everything else."""
    message, param, code = f"the model deployment rejected the request (HTTP {status_code})", None, None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        message = redacted(str(error.get("message") or message)[:2000])
        param = error.get("param") if isinstance(error.get("param"), str) else None
        raw_code = error.get("code")
        code = str(raw_code) if isinstance(raw_code, str | int) else None
    elif isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        message = redacted(parsed["message"][:2000])
    return UpstreamRejected(status_code, message, param=param, code=code)


class BudgetExceeded(ApiError):
    """A managed key or its team spent its ``max_budget`` within the budget window (LiteLLM's shape)."""

    status_code = 400
    error_type = "budget_exceeded"
    code = "400"


__all__ = [
    "AuthenticationFailed",
    "BudgetExceeded",
    "ClientClosedRequest",
    "GatewayError",
    "InvalidRequest",
    "ModelNotFound",
    "NoDeploymentAvailable",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "UpstreamFailed",
    "UpstreamRejected",
    "UpstreamTimeout",
    "anthropic_envelope",
    "anthropic_error_event",
    "anthropic_error_response",
    "anthropic_status",
    "error_response",
    "install_error_handlers",
    "rejected_from_upstream",
    "responses_error_event",
    "sse_error_event",
]
