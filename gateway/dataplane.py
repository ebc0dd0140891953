"""The data plane's own ASGI entry: ``POST /v1/chat/completions``, ``/v1/completions`` and
``/v1/embeddings`` are dispatched before FastAPI's stack (server-error, telemetry, body-limit,
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
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.errors import ClientClosedRequest, GatewayError
from gateway.requests import request_id_of

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
