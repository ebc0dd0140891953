"""A lean HTTP/1.1 client for the data plane: keep-alive pools, timeouts, streamed bodies.

The gateway sends one kind of request (a POST whose head is mostly known in advance, with a
body already in memory) and relays what comes back, so most of a general client's work per
request (cookies, redirects, header objects, tracing hooks, per-request timeout objects) is
overhead here. This client writes a prepared head and the body's pieces straight to the
transport and parses the answer with httptools (llhttp), as uvicorn does on the server side.

Exceptions::

    TransportError          the exchange failed below HTTP; ``reason`` says how, without addresses
    ├── ConnectFailed       no connection could be made (refused, unreachable, DNS, TLS)
    ├── ConnectionClosed    the peer closed the connection before the answer was complete
    └── InvalidResponse     the peer's answer is not HTTP/1.x
    TimeoutError            connecting, the whole answer, or the gap between two reads took too long
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

# A streamed answer the client reads slower than the deployment writes is held up to this
# much, then the socket is not read until the client has caught up.
_PAUSE_ABOVE_BYTES = 1024 * 1024
_RESUME_BELOW_BYTES = 256 * 1024


class TransportError(Exception):
    """The exchange failed below HTTP."""

    reason = "connection error"

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or self.reason)
        if reason:
            self.reason = reason


class ConnectFailed(TransportError):
    """No connection could be made."""

    reason = "connection refused or unreachable"


class ConnectionClosed(TransportError):
    """The peer closed the connection before the answer was complete."""

    reason = "connection closed mid-response"


class InvalidResponse(TransportError):
    """The peer's answer is not HTTP/1.x."""

    reason = "invalid HTTP response"


class _StaleConnection(ConnectionClosed):
    """A pooled connection closed before a byte of the answer: the request was not served."""


@dataclass(frozen=True)
class Origin:
    """Where requests go: scheme, host and port, and the ``Host`` header and path prefix to use."""

    tls: bool
    host: str
    port: int
    host_header: bytes
    path: bytes

    @classmethod
    def parse(cls, url: str) -> Origin:
        """``http(s)://host[:port][/prefix]``; ValueError for anything else."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        default = port == (443 if tls else 80)
        host_header = shown if default else f"{shown}:{port}"
        return cls(tls, host, port, _header_value(host_header), _header_value(parts.path.rstrip("/")))


def _header_value(value: str) -> bytes:
    if "\r" in value or "\n" in value:
        raise ValueError("a header value may not contain a line break")
    return value.encode("latin-1")


def request_head(method: bytes, origin: Origin, path: str, headers: Sequence[tuple[str, str]]) -> bytes:
    """The request line and headers up to, not including, ``Content-Length`` and the blank line.

    Built once per deployment and endpoint; ValueError for a header that cannot be sent.
    """
    lines = [method, b" ", origin.path, b"/", _header_value(path), b" HTTP/1.1\r\nHost: ", origin.host_header, b"\r\n"]
    for name, value in headers:
        lines += [_header_value(name), b": ", _header_value(value), b"\r\n"]
    return b"".join(lines)


class Response:
    """An answer being received: status and headers first, then the body as it arrives."""

    def __init__(self, connection: _Connection) -> None:
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

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (any case), or None."""
        wanted = name.lower().encode("latin-1")
        for key, value in reversed(self.raw_headers):
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    async def read(self) -> bytes:
        """The whole body."""
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
        if self._buffered > _PAUSE_ABOVE_BYTES and self._connection.response is self:
            self._connection.pause()
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self.complete and self.error is None:
            self.error = error
            self._wake()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; serves one exchange at a time."""

    def __init__(self, pool: ConnectionPool, origin: Origin) -> None:
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
        if response.status and not self._framed:
            self._complete()  # the body ran to the end of the connection
            return
        if response.received == 0 and self.exchanges > 1:
            response._fail(_StaleConnection())
        else:
            response._fail(ConnectionClosed())

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.raw_headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
            self._framed = True

    def on_headers_complete(self) -> None:
        assert self.response is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self.response.raw_headers.clear()  # an interim answer: the real one follows
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
        """Write one request and return its answer, to be awaited with ``headers``."""
        assert self.transport is not None
        response = self.response = Response(self)
        self.exchanges += 1
        self._framed = self._keep_alive = False
        self._deadline, self._gap = deadline, gap
        self._last_read = self._loop.time()
        self._arm()
        size = sum(len(part) for part in body)
        self.transport.writelines([head, b"Content-Length: %d\r\n\r\n" % size, *body])
        return response

    async def headers(self, response: Response) -> None:
        """Wait until the status line and headers of ``response`` are in."""
        while not response.status:
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


class ConnectionPool:
    """Keep-alive connections per origin, most recently used first; created in the running loop."""

    def __init__(self, connect_timeout: float, idle_timeout: float = 15.0, tls: ssl.SSLContext | None = None) -> None:
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._tls = tls  # None: the system's trusted authorities (SSL_CERT_FILE / SSL_CERT_DIR honoured)
        self._loop = asyncio.get_running_loop()

    async def request(
        self,
        origin: Origin,
        head: bytes,
        body: Sequence[bytes | memoryview],
        total_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> Response:
        """Send a request and wait for the answer's head; the caller releases the response.

        ``total_timeout`` bounds the whole exchange, body included; ``read_timeout`` the wait
        for each piece of the answer. A pooled connection the peer had closed is replaced once.
        """
        deadline = None if total_timeout is None else self._loop.time() + total_timeout
        for attempt in (0, 1):
            connection = await self._connection(origin, fresh=attempt > 0)
            response = connection.start(head, body, deadline, read_timeout)
            try:
                await connection.headers(response)
            except _StaleConnection:
                connection.close()
                continue
            except BaseException:
                connection.close()
                raise
            return response
        raise ConnectionClosed()

    async def close(self) -> None:
        """Close every connection."""
        for connection in list(self._open):
            connection.close()
        self._idle.clear()

    def put(self, connection: _Connection) -> None:
        """Keep an idle connection for the next request to its origin."""
        now = self._loop.time()
        connection.idle_since = now
        idle = self._idle.setdefault(connection.origin, [])
        while idle and now - idle[0].idle_since > self._idle_timeout:
            idle.pop(0).close()
        idle.append(connection)

    def forget(self, connection: _Connection) -> None:
        """Drop a closed connection."""
        self._open.discard(connection)
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)

    async def _connection(self, origin: Origin, fresh: bool) -> _Connection:
        idle = self._idle.get(origin)
        now = self._loop.time()
        while idle and not fresh:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since <= self._idle_timeout:
                return connection
            connection.close()
        return await self._connect(origin)

    async def _connect(self, origin: Origin) -> _Connection:
        tls = self._tls_context() if origin.tls else None
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await self._loop.create_connection(
                    lambda: _Connection(self, origin),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except TimeoutError:
            raise
        except ssl.SSLError:
            raise ConnectFailed("TLS handshake failed") from None
        except OSError:
            raise ConnectFailed() from None
        self._open.add(connection)
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls
