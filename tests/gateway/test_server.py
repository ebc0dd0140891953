"""The gateway's uvicorn protocol: request bodies reach the app whole, in one message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.server import HOLD_BYTES, uvicorn_options
from tests.fakes import Served, serve

pytestmark = pytest.mark.service


class Recorder:
    """An ASGI app that answers with the size of each ``http.request`` message it received."""

    def __init__(self) -> None:
        self.messages: list[int] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        sizes: list[int] = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            sizes.append(len(message["body"]))
            more = message.get("more_body", False)
        self.messages = sizes
        body = b",".join(b"%d" % size for size in sizes)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, Served]]:
    app = Recorder()
    served = serve(app, **uvicorn_options())
    yield app, served
    await served.stop()


async def _post(url: str, head: bytes, pieces: list[bytes]) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head)
    for piece in pieces:
        writer.write(piece)
        await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


async def test_a_body_sent_in_many_pieces_arrives_in_one_message(recorder: tuple[Recorder, Served]) -> None:
    app, served = recorder
    body = b"x" * (3 * 1024 * 1024)
    head = b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    answer = await _post(served.url, head, [body[i : i + 7000] for i in range(0, len(body), 7000)])
    assert answer.startswith(b"HTTP/1.1 200")
    assert app.messages == [len(body)]


async def test_a_chunked_body_arrives_whole_too(recorder: tuple[Recorder, Served]) -> None:
    app, served = recorder
    pieces = [b"%x\r\n%s\r\n" % (1000, b"y" * 1000) for _ in range(50)] + [b"0\r\n\r\n"]
    head = b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    await _post(served.url, head, pieces)
    assert app.messages == [50_000]


async def test_a_body_past_the_hold_limit_is_handed_over_in_parts_and_nothing_is_lost(
    recorder: tuple[Recorder, Served],
) -> None:
    app, served = recorder
    size = HOLD_BYTES + 5 * 1024 * 1024
    head = b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % size
    await _post(served.url, head, [b"z" * (1024 * 1024)] * (size // (1024 * 1024)))
    assert sum(app.messages) == size
    assert len(app.messages) >= 2
