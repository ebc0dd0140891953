"""The data plane: its handler (auth, body checks, routing, forwarding) and its own ASGI entry.
``POST /v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings`` are dispatched before
FastAPI's stack (server-error, telemetry, body-limit,
exception, routing and exit-stack layers cost more than the rest of a small request). Every
other route, and the lifespan, go through FastAPI as usual. What the skipped layers did for
these routes is done here: the request id, the error envelope, and a logged 500 for the
unexpected.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.accounting import Accounting
from gateway.bodies import read_body
from gateway.errors import ClientClosedRequest, GatewayError, InvalidRequest, ModelNotFound
from gateway.forwarding import Call
from gateway.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from gateway.replies import Reply, StreamReply, unless_client_leaves
from gateway.request_ids import request_id_of
from gateway.state import GatewayState

log = logging.getLogger("gateway")

AsgiReply = Callable[[Scope, Receive, Send], Awaitable[None]]  # gateway.replies, or any Starlette response
Handler = Callable[[Request], Awaitable[AsgiReply]]
Respond = Callable[[Request, GatewayError], Response]


class GatewayApp(FastAPI):
    """FastAPI with a direct path for the data-plane routes."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.data_plane: dict[str, Handler] = {}
        self.respond: Respond | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.data_plane.get(scope["path"])
            if handler is not None:
                await self._serve(handler, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _serve(self, handler: Handler, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.respond is not None
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        scope["app"] = self
        request = Request(scope, receive, send)
        reply: AsgiReply
        try:
            reply = await handler(request)
        except GatewayError as exc:
            reply = self.respond(request, exc)  # with the request id
        except ClientDisconnect:
            # Gone while its body was read or its answer awaited: counted as 499, nothing to send.
            self.respond(request, ClientClosedRequest("the client closed the connection"))
            return
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            reply = self.respond(request, GatewayError("internal error", code="internal_error"))
        await reply(scope, receive, send)


PROXY_ENDPOINTS: list[tuple[str, str, str, type[BaseModel]]] = [
    ("/v1/chat/completions", "chat/completions", "messages", ChatCompletionRequest),
    ("/v1/completions", "completions", "prompt", CompletionRequest),
    ("/v1/embeddings", "embeddings", "input", EmbeddingRequest),
]


def proxy_endpoint(endpoint: str, field: str) -> Callable[[Request], Awaitable[Reply | StreamReply]]:
    async def handle(request: Request) -> Reply | StreamReply:
        return await proxy(request, request.state.gateway, endpoint, field)

    return handle


async def proxy(request: Request, state: GatewayState, endpoint: str, field: str) -> Reply | StreamReply:
    request_id: str = request.state.request_id
    principal = state.keys.authenticate(request.headers.get("authorization"))
    raw = await read_body(request, state.config.gateway_settings.max_body_bytes)
    facts = state.inspector.inspect(raw, field)
    model, stream = facts.model, facts.stream
    if stream and endpoint == "embeddings":
        raise InvalidRequest("embeddings cannot be streamed", param="stream")
    route = state.router.resolve(model)
    if route is None:
        raise ModelNotFound(f"model '{model}' is not served here; see GET /v1/models", param="model")
    request.state.model_group = route.group.name
    principal.check_model(route.group.name, model)
    shared = state.router.shared
    caller = principal.limits if shared is not None and shared.available else None
    if caller is None:
        principal.check_rate()
    accounting = Accounting(state.metrics, request_id, route.group.name, stream, access_log=state.access_log)
    request.state.accounting = accounting
    call = Call(
        endpoint, raw, model, stream, facts.has_images, request_id, accounting, caller, model_span=facts.model_span
    )
    return await unless_client_leaves(request.receive, state.forwarder.forward(call, route))
