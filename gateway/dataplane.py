"""The data plane: its handler (auth, body checks, routing, forwarding) and its own ASGI entry.
Every ``POST`` endpoint of gateway.endpoints (chat, Responses, Messages, audio, rerank, ...) is
dispatched before FastAPI's stack (server-error, telemetry, body-limit,
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

from gateway.accounting import Accounting
from gateway.audio import Upload, read_upload
from gateway.auth import Principal
from gateway.bodies import read_body
from gateway.bridges.messages import MessagesBridge
from gateway.deployment import Serving
from gateway.endpoints import BASE_FAMILIES, MESSAGES, RESPONSES, SCORE, Endpoint
from gateway.errors import ClientClosedRequest, GatewayError, InvalidRequest, ModelNotFound
from gateway.forwarding import Call
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


def proxy_endpoint(endpoint: Endpoint) -> Callable[[Request], Awaitable[Reply | StreamReply]]:
    async def handle(request: Request) -> Reply | StreamReply:
        return await proxy(request, request.state.gateway, endpoint)

    return handle


def credential(request: Request, endpoint: Endpoint) -> str | None:
    """The caller's key: ``Authorization: Bearer``, or Anthropic's ``x-api-key`` on its API."""
    authorization = request.headers.get("authorization")
    if authorization is None and endpoint.envelope == "anthropic":
        api_key = request.headers.get("x-api-key")
        return f"Bearer {api_key}" if api_key else None
    return authorization


def _anthropic_head(request: Request) -> bytes:
    """The client's ``anthropic-beta`` header, passed on to deployments that speak Anthropic's API."""
    beta = request.headers.get("anthropic-beta")
    if beta is None or any(c in beta for c in "\r\n") or len(beta) > 1024:
        return b""
    return b"anthropic-beta: " + beta.encode("latin-1", "replace") + b"\r\n"


async def proxy(request: Request, state: GatewayState, endpoint: Endpoint) -> Reply | StreamReply:
    request_id: str = request.state.request_id
    request.state.endpoint = endpoint.name
    authorization = credential(request, endpoint)
    principal = state.keys.authenticate(authorization)
    settings = state.config.gateway_settings
    upload: Upload | None = None
    user: str | None = None
    if endpoint.multipart:
        upload = await read_upload(request, settings.max_audio_bytes)
        raw, model, stream, has_images, span = b"", upload.model, upload.stream, False, None
    else:
        raw = await read_body(request, settings.max_body_bytes)
        facts = state.inspector.inspect(raw, endpoint.field, endpoint.required)
        model, stream, has_images, span, user = (
            facts.model,
            facts.stream,
            facts.has_images,
            facts.model_span,
            facts.user,
        )
    try:
        if stream and not endpoint.streams:
            raise InvalidRequest(f"{endpoint.name} cannot be streamed", param="stream")
        route = state.router.resolve(model)
        if route is None:
            raise ModelNotFound(f"model '{model}' is not served here; see GET /v1/models", param="model")
        request.state.model_group = route.group.name
        principal.check_model(route.group.name, model)
        # Chat, completions and embeddings: every deployment serves them (natively or through the SDK).
        everywhere = endpoint.family in BASE_FAMILIES
        if not everywhere and {d.serving(endpoint) for d in route.group.deployments} == {None}:
            providers = ", ".join(sorted({f"{d.provider}/" for d in route.group.deployments}))
            raise InvalidRequest(
                f"model '{route.group.name}' ({providers}) does not serve {endpoint.paths[0]}",
                param="model",
                code="unsupported_endpoint",
            )
        shared = state.router.shared
        caller = principal.limits if shared is not None and shared.available else None
        if caller is None:
            principal.check_rate()
        accounting = Accounting(
            state.metrics, request_id, route.group.name, stream, access_log=state.access_log, endpoint=endpoint.name
        )
        request.state.accounting = accounting
        release = principal.admit()  # a managed key's budget and parallel requests
        accounting.on_finish = _spend_counter(state, principal, release)
        call = Call(
            endpoint,
            raw,
            model,
            stream,
            has_images,
            request_id,
            accounting,
            caller,
            model_span=span,
            authorization=authorization,
        )
        if upload is None and state.router.engine_aware_for(route.group):
            engine_aware = state.router.engine_aware
            header = engine_aware.args.session_header
            call.affinity = engine_aware.affinity(
                raw, endpoint.field, request.headers.get(header) if header else None, user
            )
        # How the group and its fallbacks serve the endpoint (gateway.deployment.Serving).
        ways: set[Serving | None] = set()
        if not everywhere:
            ways = {d.serving(endpoint) for r in state.router.plan(route, has_images) for d in r.group.deployments}
        if None in ways:
            call.where = lambda d: d.serving(endpoint) is not None
        if upload is not None:
            call.upload = upload
        if endpoint.envelope == "anthropic":
            call.extra_head = _anthropic_head(request)
        if endpoint is SCORE:
            _check_pairs(call.parsed())
        if endpoint is RESPONSES:
            await state.responses.prepare(call, route, "bridge" in ways)
        elif endpoint is MESSAGES and "bridge" in ways:
            call.translation = MessagesBridge(call.parsed(), model)
        return await unless_client_leaves(request.receive, state.forwarder.forward(call, route))
    finally:
        if upload is not None:
            await upload.close()


def _spend_counter(
    state: GatewayState, principal: Principal, release: Callable[[], None] | None = None
) -> Callable[[Accounting, int], None]:
    """What runs once a request ended: its cost counted (metrics, managed spend), its slot freed."""

    def finished(accounting: Accounting, status: int) -> None:
        if release is not None:
            release()
        if accounting.cost:
            state.metrics.spent(accounting.model_group, principal.team_id, accounting.cost)
        if state.managed is not None and (status < 400 or accounting.cost):
            state.managed.record(
                principal,
                accounting.model_group,
                accounting.cost,
                accounting.prompt_tokens,
                accounting.completion_tokens,
                accounting.request_id,
            )

    return finished


_PAIRS = (("text_1", "text_2"), ("data_1", "data_2"), ("queries", "documents"), ("queries", "items"))


def _check_pairs(body: dict[str, Any]) -> None:
    """A score request names two sides: text_1/text_2 (or data_1/data_2, queries/documents)."""
    if not any(body.get(a) not in (None, "", []) and body.get(b) not in (None, "", []) for a, b in _PAIRS):
        raise InvalidRequest("'text_1' and 'text_2' (or 'queries' and 'documents') are required", param="text_1")
