"""A fake deployment that reads requests the way vLLM's server does: FastAPI parses and validates
the whole JSON body into pydantic models before answering, so a 1 MiB image costs the upstream
what it costs vLLM. Answers are fixed (no model).

Run: ``python -m bench.fake_vllm --port 9000``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response, StreamingResponse

from bench.fake_upstream import COMPLETION, STREAM_EVENTS, TOKEN_EVENTS, TOKEN_INTERVAL_S, TOKEN_STREAM


class ImageUrl(BaseModel):
    url: str


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    image_url: ImageUrl | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[ContentPart] | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message]
    stream: bool = False
    max_tokens: int | None = None
    stream_options: dict[str, Any] | None = None


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    input: str | list[dict[str, Any]]
    stream: bool = False


_TEXT = {"type": "output_text", "text": "ok", "annotations": []}
_ITEM = {"id": "msg_fake", "type": "message", "role": "assistant", "status": "completed", "content": [_TEXT]}
_USAGE = {"input_tokens": 9, "output_tokens": 1, "total_tokens": 10}


def _response(status: str, output: list[dict[str, Any]], usage: dict[str, int] | None) -> dict[str, Any]:
    head = {"id": "resp_fake01", "object": "response", "created_at": 0, "model": "fake", "status": status}
    return head | {"output": output, "usage": usage, "tools": [], "tool_choice": "auto", "parallel_tool_calls": True}


def _responses_stream() -> bytes:
    """vLLM's Responses events for a one-token answer."""
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": _response("in_progress", [], None)}),
        ("response.in_progress", {"response": _response("in_progress", [], None)}),
        ("response.output_item.added", {"output_index": 0, "item": {**_ITEM, "status": "in_progress", "content": []}}),
        ("response.content_part.added", {"item_id": "msg_fake", "output_index": 0, "content_index": 0, "part": _TEXT}),
        ("response.output_text.delta", {"item_id": "msg_fake", "output_index": 0, "content_index": 0, "delta": "ok"}),
        ("response.output_text.done", {"item_id": "msg_fake", "output_index": 0, "content_index": 0, "text": "ok"}),
        ("response.content_part.done", {"item_id": "msg_fake", "output_index": 0, "content_index": 0, "part": _TEXT}),
        ("response.output_item.done", {"output_index": 0, "item": _ITEM}),
        ("response.completed", {"response": _response("completed", [_ITEM], _USAGE)}),
    ]
    return b"".join(
        b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({**data, "sequence_number": n, "type": kind}) + b"\n\n"
        for n, (kind, data) in enumerate(events)
    )


RESPONSE = orjson.dumps(_response("completed", [_ITEM], _USAGE))
RESPONSE_EVENTS = _responses_stream()


async def _tokens() -> AsyncIterator[bytes]:
    for event in TOKEN_STREAM:
        await asyncio.sleep(TOKEN_INTERVAL_S)
        yield event


def create_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: ChatCompletionRequest) -> Response:
        if request.stream and request.max_tokens == TOKEN_EVENTS:
            return StreamingResponse(_tokens(), media_type="text/event-stream")
        if request.stream:
            return StreamingResponse(iter([STREAM_EVENTS]), media_type="text/event-stream")
        return Response(COMPLETION, media_type="application/json")

    @app.post("/v1/responses")
    async def responses(request: ResponsesRequest) -> Response:
        if request.stream:
            return StreamingResponse(iter([RESPONSE_EVENTS]), media_type="text/event-stream")
        return Response(RESPONSE, media_type="application/json")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "fake", "object": "model"}]}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False, loop="uvloop")


if __name__ == "__main__":
    main()
