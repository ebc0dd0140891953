"""The data plane's answers as bare ASGI messages.

Starlette's responses build a header object per response and, for a stream, an anyio task
group with a disconnect listener; on a small streamed request that is a fifth of the
gateway's CPU. These send the same messages with headers prepared as bytes, and a stream
watches for the client leaving with one plain task.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

T = TypeVar("T")

JSON = b"application/json"
EVENT_STREAM = b"text/event-stream"


class Reply:
    """A whole body at once."""

    def __init__(self, body: bytes, request_id: str, media_type: bytes = JSON, status: int = 200) -> None:
        self.body = body
        self.status = status
        self.headers = [
            (b"content-type", media_type),
            (b"content-length", b"%d" % len(body)),
            (b"x-request-id", request_id.encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


class StreamReply:
    """A body sent piece by piece as ``chunks`` yields it.

    When the client leaves, the task relaying the stream is cancelled where it waits (for the
    deployment's next piece, usually), so ``chunks`` sees the cancellation, releases what it
    holds and counts the request; the reply then ends quietly.
    """

    def __init__(self, chunks: AsyncIterator[bytes], request_id: str, media_type: bytes = EVENT_STREAM) -> None:
        self.chunks = chunks
        self.status = 200
        self.headers = [
            (b"content-type", media_type),
            (b"cache-control", b"no-cache"),
            (b"x-request-id", request_id.encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        relaying = asyncio.current_task()
        assert relaying is not None
        state = _Watch()
        watcher = asyncio.create_task(_watch_disconnect(receive, relaying, state))
        try:
            # The source is started first: closing a started generator runs its cleanup (what it
            # holds is released), closing one never started would not.
            first = await anext(self.chunks, None)
            await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
            if first is not None:
                await send({"type": "http.response.body", "body": first, "more_body": True})
                async for chunk in self.chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except asyncio.CancelledError:
            if not state.client_left:
                raise
            relaying.uncancel()
        finally:
            state.finished = True
            watcher.cancel()
            await _close(self.chunks)


class _Watch:
    __slots__ = ("client_left", "finished")

    def __init__(self) -> None:
        self.client_left = False
        self.finished = False


async def _watch_disconnect(receive: Receive, relaying: asyncio.Task[object], state: _Watch) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not state.finished:
                state.client_left = True
                relaying.cancel()
            return


async def unless_client_leaves(receive: Receive, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` (the request's body already read); a client that disconnects first
    cancels it (the deployment's connection is closed, its slot released) and ClientDisconnect is
    raised instead."""
    waiting = asyncio.current_task()
    assert waiting is not None
    state = _Watch()
    watcher = asyncio.create_task(_watch_disconnect(receive, waiting, state))
    try:
        return await awaitable
    except asyncio.CancelledError:
        if not state.client_left:
            raise
        waiting.uncancel()
        raise ClientDisconnect() from None
    finally:
        state.finished = True
        watcher.cancel()


async def _close(chunks: AsyncIterator[bytes]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()
