"""The data plane's stream reply: a client that leaves at any point releases what the stream holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.replies import StreamReply

pytestmark = pytest.mark.unit


class Source:
    """A relay that yields ``pieces`` and records whether its cleanup ran."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = pieces
        self.released = False
        self.more = asyncio.Event()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            for piece in self.pieces:
                yield piece
            await self.more.wait()  # a deployment still generating
        finally:
            self.released = True


async def _leave_now() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def test_a_client_gone_while_the_head_is_sent_releases_the_stream() -> None:
    source = Source(b"data: 1\n\n")
    blocked = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        await blocked.wait()  # the socket's buffer is full: the head never goes out

    await asyncio.wait_for(StreamReply(source.chunks(), "rid")({}, _leave_now, send), timeout=5)
    assert source.released


async def test_a_client_gone_mid_stream_stops_the_relay_and_ends_quietly() -> None:
    source = Source(b"data: 1\n\n", b"data: 2\n\n")
    sent: list[dict[str, Any]] = []
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if len(sent) == 3:
            gone.set()

    await asyncio.wait_for(StreamReply(source.chunks(), "rid")({}, receive, send), timeout=5)
    assert source.released
    assert [m.get("body") for m in sent[1:]] == [b"data: 1\n\n", b"data: 2\n\n"]
    assert (b"x-request-id", b"rid") in sent[0]["headers"]


async def test_a_finished_stream_ends_with_an_empty_last_piece() -> None:
    source = Source(b"data: [DONE]\n\n")
    source.more.set()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await StreamReply(source.chunks(), "rid")({}, receive, send)
    assert sent[-1] == {"type": "http.response.body", "body": b""}
    assert source.released
