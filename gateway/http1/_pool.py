"""Keep-alive connections per origin."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence

from gateway.http1._connection import Connection, Response
from gateway.http1._exceptions import ConnectFailed, ConnectionClosed, StaleConnection
from gateway.http1._origin import Origin


class ConnectionPool:
    """Keep-alive connections per origin, most recently used first; created in the running loop."""

    def __init__(self, connect_timeout: float, idle_timeout: float = 15.0, tls: ssl.SSLContext | None = None) -> None:
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._idle: dict[Origin, list[Connection]] = {}
        self._open: set[Connection] = set()
        self._tls = tls  # None: the system's trusted authorities (SSL_CERT_FILE / SSL_CERT_DIR honoured)
        self._loop = asyncio.get_running_loop()
        self._swept = self._loop.time()

    async def request(
        self,
        origin: Origin,
        head: bytes,
        body: Sequence[bytes | memoryview],
        total_timeout: float | None = None,
        read_timeout: float | None = None,
        whole_limit: int | None = None,
    ) -> Response:
        """Send a request and wait for the answer's head (or, with ``whole_limit``, all of it, at
        most that many bytes: one wake-up instead of two); the caller releases the response.

        ``total_timeout`` bounds the whole exchange, body included; ``read_timeout`` the wait
        for each piece of the answer. A pooled connection the peer had closed is replaced once.
        """
        deadline = None if total_timeout is None else self._loop.time() + total_timeout
        for attempt in (0, 1):
            connection = await self._connection(origin, fresh=attempt > 0)
            response = connection.start(head, body, deadline, read_timeout)
            if whole_limit is not None:
                response.read_whole(whole_limit)
            try:
                await connection.arrival(response, whole_limit is not None)
            except StaleConnection:
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

    def put(self, connection: Connection) -> None:
        """Keep an idle connection for the next request to its origin."""
        now = self._loop.time()
        connection.idle_since = now
        idle = self._idle.setdefault(connection.origin, [])
        while idle and now - idle[0].idle_since > self._idle_timeout:
            idle.pop(0).close()
        idle.append(connection)
        if now - self._swept > self._idle_timeout:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Close idle connections past their time for every origin, also those no request goes
        to any more (a pod that left)."""
        self._swept = now
        for origin, idle in list(self._idle.items()):
            while idle and now - idle[0].idle_since > self._idle_timeout:
                idle.pop(0).close()
            if not idle:
                del self._idle[origin]

    def forget(self, connection: Connection) -> None:
        """Drop a closed connection."""
        self._open.discard(connection)
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)

    async def _connection(self, origin: Origin, fresh: bool) -> Connection:
        idle = self._idle.get(origin)
        now = self._loop.time()
        while idle and not fresh:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since <= self._idle_timeout:
                return connection
            connection.close()
        return await self._connect(origin)

    async def _connect(self, origin: Origin) -> Connection:
        tls = self._tls_context() if origin.tls else None
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await self._loop.create_connection(
                    lambda: Connection(self, origin),
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
