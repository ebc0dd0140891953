"""A fast fake of Anthropic's Messages API for benchmarks (``POST /v1/messages``, plain and SSE).

Run: ``python -m bench.fake_anthropic --port 9001``.
"""

from __future__ import annotations

import argparse
import asyncio

import orjson
import uvloop
from aiohttp import web

_MESSAGE = orjson.dumps(
    {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "claude-bench",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    }
)


def _event(name: str, data: dict[str, object]) -> bytes:
    return f"event: {name}\ndata: ".encode() + orjson.dumps({"type": name, **data}) + b"\n\n"


_STREAM = b"".join(
    [
        _event("message_start", {"message": {"id": "msg_bench", "type": "message", "role": "assistant",
                                              "model": "claude-bench", "content": [],
                                              "usage": {"input_tokens": 10, "output_tokens": 0}}}),
        _event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        *[_event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "ok "}})] * 8,
        _event("content_block_stop", {"index": 0}),
        _event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                 "usage": {"output_tokens": 8}}),
        _event("message_stop", {}),
    ]
)  # fmt: skip


async def messages(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    if not body.get("stream"):
        return web.Response(body=_MESSAGE, content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(_STREAM)
    await response.write_eof()
    return response


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/messages", messages)
    app.router.add_get("/health", health)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
