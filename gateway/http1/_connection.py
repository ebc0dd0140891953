"""One keep-alive connection and the answer being received on it."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Protocol, cast

import httptools

from gateway.http1._exceptions import BodyTooLarge, ConnectionClosed, InvalidResponse, StaleConnection
from gateway.http1._origin import Origin

_PAUSE_ABOVE_BYTES = 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024  # an answer's head larger than this, or with more headers, is refused
MAX_HEADERS = 100
_RESUME_BELOW_BYTES = 256 * 1024
WHOLE_LIMIT_BYTES = 64 * 1024 * 1024  # what ``read`` accepts unless told otherwise


class Owner(Protocol):
    """What a connection tells the pool that made it (``_pool.ConnectionPool``)."""

    def put(self, connection: Connection) -> None: ...

    def forget(self, connection: Connection) -> None: ...


class Response:
    """An answer being received: status and headers first, then the body as it arrives."""

    def __init__(self, connection: Connection) -> None:
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self._connection = connection
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self.received = 0  # bytes of the answer seen so far, head included
        self.complete = False
        self.error: BaseException | None = None
        self.released = False
        # Set once the body is to be read whole: the socket is never paused then (nothing would
        # resume it), and past this many bytes the answer fails instead.
        self._whole_limit: int | None = None

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (any case), or None."""
        wanted = name.lower().encode("latin-1")
        for key, value in reversed(self.raw_headers):
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def read_whole(self, limit: int) -> None:
        """From now on the body is read whole: keep reading the socket, fail past ``limit`` bytes."""
        self._whole_limit = limit
        if self._buffered > limit:
            self._too_large()
        elif self._connection.response is self:
            self._connection.resume()

    async def read(self, limit: int = WHOLE_LIMIT_BYTES) -> bytes:
        """The whole body; BodyTooLarge past ``limit`` bytes."""
        if self._whole_limit is None:
            self.read_whole(limit)
        while not self.complete:
            await self._wait()
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return body

    async def readany(self) -> bytes:
        """The next piece of the body as it arrived; ``b""`` once the body is complete."""
        while not self._chunks:
            if self.complete:
                return b""
            await self._wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered < _RESUME_BELOW_BYTES and self._connection.response is self:
            self._connection.resume()
        return chunk

    def release(self) -> None:
        """Give the connection back: to the pool when the answer was read whole, else closed."""
        if not self.released:
            self.released = True
            if self._connection.response is self:
                self._connection.finished(self.complete and not self._chunks)

    async def _wait(self) -> None:
        if self.error is not None:
            raise self.error
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None
        if self.error is not None:
            raise self.error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        limit = self._whole_limit
        if limit is not None:
            if self._buffered > limit:
                self._too_large()
                return
        elif self._buffered > _PAUSE_ABOVE_BYTES and self._connection.response is self:
            self._connection.pause()
        self._wake()

    def _too_large(self) -> None:
        self._chunks.clear()
        self._buffered = 0
        self._fail(BodyTooLarge(f"answer larger than {self._whole_limit} bytes"))
        if self._connection.response is self:
            self._connection.close()

    def _fail(self, error: BaseException) -> None:
        if not self.complete and self.error is None:
            self.error = error
            self._wake()


class Connection(asyncio.Protocol):
    """One keep-alive connection; serves one exchange at a time."""

    def __init__(self, pool: Owner, origin: Origin) -> None:
        self._pool = pool
        self.origin = origin
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self.closed = False
        self.exchanges = 0
        self.idle_since = 0.0
        self._keep_alive = False
        self._framed = False  # the answer says where its body ends (Content-Length or chunked)
        self._header_bytes = 0
        self._paused = False
        self._deadline: float | None = None
        self._gap: float | None = None
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None or response.complete:
            self.close()  # nothing was asked: the connection cannot be trusted any more
            return
        response.received += len(data)
        self._last_read = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            response._fail(InvalidResponse())
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        self._pool.forget(self)
        response = self.response
        if response is None or response.complete:
            return
        if response.status and not self._framed and exc is None:
            self._complete()  # the body ran to the end of the connection
            return
        if response.received == 0 and self.exchanges > 1:
            response._fail(StaleConnection())
        else:
            response._fail(ConnectionClosed())

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES or len(self.response.raw_headers) >= MAX_HEADERS:
            self.response._fail(InvalidResponse("answer headers too large"))
            self.close()
            return
        self.response.raw_headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
            self._framed = True

    def on_headers_complete(self) -> None:
        assert self.response is not None
        status = self._parser.get_status_code()
        if status == 101:
            # Switching protocols: what follows is not HTTP any more, and nothing asked for it.
            self.response._fail(InvalidResponse("the deployment switched protocols"))
            self.close()
            return
        if 100 <= status < 200:
            self.response.raw_headers.clear()  # an interim answer: the real one follows
            self._framed = False
            return
        self.response.status = status
        self.response._wake()

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response._feed(body)

    def on_message_complete(self) -> None:
        if self.response is not None and self.response.status:
            self._keep_alive = self._parser.should_keep_alive()
            self._complete()

    # exchanges
    def start(
        self, head: bytes, body: Sequence[bytes | memoryview], deadline: float | None, gap: float | None
    ) -> Response:
        """Write one request and return its answer, to be awaited with ``arrival``."""
        assert self.transport is not None
        response = self.response = Response(self)
        self.exchanges += 1
        self._framed = self._keep_alive = False
        self._header_bytes = 0
        self._deadline, self._gap = deadline, gap
        self._last_read = self._loop.time()
        self._arm()
        size = sum(len(part) for part in body)
        self.transport.writelines([head, b"Content-Length: %d\r\n\r\n" % size, *body])
        return response

    async def arrival(self, response: Response, whole: bool) -> None:
        """Wait until the status line and headers of ``response`` are in, or all of it."""
        while not (response.complete if whole else response.status):
            await response._wait()

    def finished(self, reusable: bool) -> None:
        """The exchange is over: pool the connection if it can serve another."""
        self.response = None
        self._cancel_timer()
        if reusable and self._keep_alive and not self.closed and not self._paused:
            self._pool.put(self)
        else:
            self.close()

    def close(self) -> None:
        """Close now; an answer in progress fails."""
        if self.response is not None:
            self.response._fail(ConnectionClosed())
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()
        self._cancel_timer()
        self._pool.forget(self)

    def pause(self) -> None:
        """Stop reading the socket while the reader has enough buffered."""
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        """Read the socket again."""
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self._last_read = self._loop.time()
            self.transport.resume_reading()

    def _complete(self) -> None:
        assert self.response is not None
        if self.response.error is not None:
            return  # refused mid-parse (headers too large, a protocol switch): it stays failed
        self.response.complete = True
        self._cancel_timer()
        self.response._wake()

    # timeouts: one timer per exchange, moved forward lazily instead of on every read
    def _arm(self) -> None:
        candidates = []
        if self._deadline is not None:
            candidates.append(self._deadline)
        if self._gap is not None:
            candidates.append(self._last_read + self._gap)
        if candidates:
            self._timer = self._loop.call_at(min(candidates), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self._loop.time()
        expired = self._deadline is not None and now >= self._deadline
        if self._gap is not None and not self._paused and now >= self._last_read + self._gap:
            expired = True
        if not expired:
            if self._paused:
                self._last_read = now  # a paused socket is the client's slowness, not the deployment's
            self._arm()
            return
        if self.response is not None:
            self.response._fail(TimeoutError())
        self.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
