"""A fast OpenAI-compatible fake deployment for benchmarks: fixed answers, no model.

Run: ``python -m bench.fake_upstream --port 9000``.
"""

from __future__ import annotations

import argparse
import asyncio

import orjson
import uvloop
from aiohttp import web

STREAM_CHUNKS = 8
# A request with this max_tokens is answered as a model streams: one event per token, a
# millisecond apart, each written on its own (``bench.gateway``'s token stream scenario).
TOKEN_EVENTS = 200
TOKEN_INTERVAL_S = 0.001


def _completion() -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
        }
    )


def _token_event(index: int) -> bytes:
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "fake",
        "choices": [{"index": 0, "delta": {"content": f"w{index} "}, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _stream() -> bytes:
    return b"".join([*(_token_event(index) for index in range(STREAM_CHUNKS)), b"data: [DONE]\n\n"])


def token_events(count: int) -> list[bytes]:
    """One SSE event per token, then usage and ``[DONE]``."""
    usage = {"prompt_tokens": 10, "completion_tokens": count, "total_tokens": 10 + count}
    final = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "model": "fake", "choices": [], "usage": usage}
    events = [_token_event(index) for index in range(count)]
    return [*events, b"data: " + orjson.dumps(final) + b"\n\n", b"data: [DONE]\n\n"]


COMPLETION = _completion()
STREAM_EVENTS = _stream()
TOKEN_STREAM = token_events(TOKEN_EVENTS)
TOKEN_MARKER = b'"max_tokens":%d' % TOKEN_EVENTS


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    if b'"stream":true' in body or b'"stream": true' in body:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if TOKEN_MARKER in body:
            for event in TOKEN_STREAM:
                await asyncio.sleep(TOKEN_INTERVAL_S)
                await response.write(event)
        else:
            await response.write(STREAM_EVENTS)
        await response.write_eof()
        return response
    return web.Response(body=COMPLETION, content_type="application/json")


async def models(_: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
