"""Reading and checking client request bodies before they are forwarded."""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import InvalidRequest, PayloadTooLarge

_IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image", "video_url"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, refusing bodies over ``limit`` bytes without buffering them."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than the {limit} byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than the {limit} byte limit")
        chunks.append(chunk)
    if not size:
        raise InvalidRequest("request body is empty; send a JSON object")
    try:
        body = orjson.loads(chunks[0] if len(chunks) == 1 else b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


def require_fields(body: dict[str, Any], field: str) -> tuple[str, bool]:
    """Check ``model``, the endpoint's main ``field`` and ``stream``; returns (model, stream)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    value = body.get(field)
    if value is None or (isinstance(value, list | str) and not value):
        raise InvalidRequest(f"'{field}' is required and must not be empty", param=field)
    if field == "messages" and not isinstance(value, list):
        raise InvalidRequest("'messages' must be a list of message objects", param="messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be true or false", param="stream")
    return model, stream


def has_images(body: dict[str, Any]) -> bool:
    """Whether any message carries an image or video part."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return False
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in _IMAGE_PART_TYPES:
                    return True
    return False


class RequestIdMiddleware:
    """Honours a sane incoming ``X-Request-ID`` or makes one, and returns it on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID.fullmatch(candidate):
                    request_id = candidate
                break
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                message["headers"] = [*headers, header]
            await send(message)

        await self.app(scope, receive, send_with_id)
