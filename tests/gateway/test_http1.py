"""The data plane's HTTP/1.1 client against scripted servers on loopback: framing, keep-alive,
a pooled connection the peer closed, timeouts, back-pressure, TLS and broken peers."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from gateway.http1 import (
    BodyTooLarge,
    ConnectFailed,
    ConnectionClosed,
    ConnectionPool,
    InvalidResponse,
    Origin,
    Response,
    request_head,
)
from tests.fakes import free_port

pytestmark = pytest.mark.both_loops

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class ScriptedServer:
    """A loopback server whose handler writes exact bytes; counts connections and requests."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self, tls: ssl.SSLContext | None = None) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        number = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                self.requests.append(head + await reader.readexactly(length))
                await self._handler(reader, writer, number)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def replying(data: bytes, close: bool = False) -> Handler:
    """A handler answering every request with ``data``, then closing the connection if told."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        writer.write(data)
        if close:
            writer.close()

    return handler


@pytest.fixture
async def pool() -> AsyncIterator[ConnectionPool]:
    pool = ConnectionPool(connect_timeout=2)
    yield pool
    await pool.close()


async def serve(handler: Handler) -> ScriptedServer:
    return await ScriptedServer(handler).start()


def head(port: int, scheme: str = "http") -> tuple[Origin, bytes]:
    origin = Origin.parse(f"{scheme}://127.0.0.1:{port}/v1")
    return origin, request_head(b"POST", origin, "chat/completions", [("Accept", "*/*")])


async def test_requests_reuse_one_connection_and_bodies_arrive_whole(pool: ConnectionPool) -> None:
    server = await serve(replying(ok(b'{"ok":true}', b"Content-Type: application/json\r\nRetry-After: 3\r\n")))
    origin, prefix = head(server.port)
    for _ in range(3):
        response = await pool.request(origin, prefix, [b'{"a":', memoryview(b"1}")], total_timeout=5)
        assert response.status == 200
        assert response.header("content-type") == "application/json"
        assert response.header("Retry-After") == "3"
        assert await response.read() == b'{"ok":true}'
        response.release()
    assert server.connections == 1
    assert server.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Length: 7\r\n\r\n" in server.requests[0]
    assert server.requests[0].endswith(b'{"a":1}')
    await server.stop()


async def test_a_chunked_answer_is_readable_piece_by_piece_as_it_arrives(pool: ConnectionPool) -> None:
    more = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await more.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")

    server = await serve(answer)
    origin, prefix = head(server.port)
    response = await pool.request(origin, prefix, [b"{}"], read_timeout=5)
    assert await response.readany() == b"first"
    more.set()
    assert await response.readany() == b"second"
    assert await response.readany() == b""
    response.release()
    again = await pool.request(origin, prefix, [b"{}"], read_timeout=5)
    more.set()
    assert await again.read() == b"firstsecond"
    again.release()
    assert server.connections == 1
    await server.stop()


async def test_a_body_that_runs_to_the_close_is_complete_and_the_connection_is_not_reused(
    pool: ConnectionPool,
) -> None:
    server = await serve(replying(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it", close=True))
    origin, prefix = head(server.port)
    for _ in range(2):
        response = await pool.request(origin, prefix, [b"{}"], total_timeout=5)
        assert await response.read() == b"all of it"
        response.release()
    assert server.connections == 2
    await server.stop()


async def test_a_pooled_connection_closed_by_the_peer_is_replaced_without_an_error(pool: ConnectionPool) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: int) -> None:
        if connection == 1 and len(server.requests) == 2:
            writer.close()  # the keep-alive timeout of the peer, racing the second request
            return
        writer.write(ok(b"fine"))

    server = await serve(answer)
    origin, prefix = head(server.port)
    for _ in range(2):
        response = await pool.request(origin, prefix, [b"{}"], total_timeout=5)
        assert await response.read() == b"fine"
        response.release()
    assert server.connections == 2
    assert len(server.requests) == 3
    await server.stop()


async def test_a_new_connection_closed_before_an_answer_fails(pool: ConnectionPool) -> None:
    server = await serve(replying(b"", close=True))
    origin, prefix = head(server.port)
    with pytest.raises(ConnectionClosed):
        await pool.request(origin, prefix, [b"{}"], total_timeout=5)
    assert server.connections == 1
    await server.stop()


async def test_a_body_cut_short_fails_with_connection_closed(pool: ConnectionPool) -> None:
    server = await serve(replying(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", close=True))
    origin, prefix = head(server.port)
    response = await pool.request(origin, prefix, [b"{}"], total_timeout=5)
    with pytest.raises(ConnectionClosed, match="closed mid-response"):
        await response.read()
    response.release()
    await server.stop()


async def test_an_answer_that_is_not_http_fails_with_invalid_response(pool: ConnectionPool) -> None:
    server = await serve(replying(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"))
    origin, prefix = head(server.port)
    with pytest.raises(InvalidResponse):
        await pool.request(origin, prefix, [b"{}"], total_timeout=5)
    await server.stop()


async def test_an_interim_answer_is_skipped(pool: ConnectionPool) -> None:
    server = await serve(replying(b"HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n" + ok(b"final")))
    origin, prefix = head(server.port)
    response = await pool.request(origin, prefix, [b"{}"], total_timeout=5)
    assert response.status == 200
    assert response.header("X-Interim") is None
    assert await response.read() == b"final"
    response.release()
    await server.stop()


async def test_nothing_listening_fails_with_connect_failed(pool: ConnectionPool) -> None:
    origin, prefix = head(free_port())
    with pytest.raises(ConnectFailed, match="refused or unreachable"):
        await pool.request(origin, prefix, [b"{}"], total_timeout=5)


async def test_the_total_timeout_bounds_the_whole_answer(pool: ConnectionPool) -> None:
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await reader.read()  # never finishes the body

    server = await serve(trickle)
    origin, prefix = head(server.port)
    response = await pool.request(origin, prefix, [b"{}"], total_timeout=0.3)
    with pytest.raises(TimeoutError):
        await response.read()
    response.release()
    await server.stop()


async def test_the_read_timeout_bounds_the_gap_between_two_pieces(pool: ConnectionPool) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n")
        await reader.read()

    server = await serve(stall)
    origin, prefix = head(server.port)
    response = await pool.request(origin, prefix, [b"{}"], read_timeout=0.3)
    assert await response.readany() == b"hi"
    with pytest.raises(TimeoutError):
        await response.readany()
    response.release()
    await server.stop()


async def test_a_slow_reader_holds_back_the_socket_and_loses_nothing(pool: ConnectionPool) -> None:
    piece = bytes(range(256)) * 256  # 64 KiB
    pieces = 128  # 8 MiB in all

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(piece) * pieces))
        for _ in range(pieces):
            writer.write(piece)
            await writer.drain()

    server = await serve(flood)
    origin, prefix = head(server.port)
    response = await pool.request(origin, prefix, [b"{}"], read_timeout=5)
    received, most_held = 0, 0
    while chunk := await response.readany():
        received += len(chunk)
        most_held = max(most_held, response._buffered)
        await asyncio.sleep(0)  # a reader slower than the socket
    assert received == len(piece) * pieces
    assert most_held < 2 * 1024 * 1024
    response.release()
    await server.stop()


async def test_an_answer_released_unread_closes_its_connection(pool: ConnectionPool) -> None:
    server = await serve(replying(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n"))
    origin, prefix = head(server.port)
    response = await pool.request(origin, prefix, [b"{}"], read_timeout=5)
    assert await response.readany() == b"hi"
    response.release()
    again = await pool.request(origin, prefix, [b"{}"], read_timeout=5)
    again.release()
    assert server.connections == 2
    await server.stop()


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl is not None, "the TLS test needs the openssl command"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"]
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [openssl, *request, *subject, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_https_is_verified_against_the_trusted_authorities(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    server = await ScriptedServer(replying(ok(b"secret"))).start(tls=server_tls)
    origin, prefix = head(server.port, "https")
    untrusting = ConnectionPool(connect_timeout=2)
    with pytest.raises(ConnectFailed, match="TLS"):
        await untrusting.request(origin, prefix, [b"{}"], total_timeout=5)
    await untrusting.close()
    trusting = ConnectionPool(connect_timeout=2, tls=ssl.create_default_context(cafile=str(cert)))
    response: Response = await trusting.request(origin, prefix, [b"{}"], total_timeout=5)
    assert await response.read() == b"secret"
    response.release()
    await trusting.close()
    await server.stop()


def test_origins_and_heads_refuse_what_cannot_be_sent() -> None:
    assert Origin.parse("https://api.example.com/v1/").host_header == b"api.example.com"
    assert Origin.parse("http://[::1]:8000").host_header == b"[::1]:8000"
    assert Origin.parse("http://example.com/v1").path == b"/v1"
    with pytest.raises(ValueError, match="not an http"):
        Origin.parse("ftp://example.com")
    with pytest.raises(ValueError, match="credentials") as caught:
        Origin.parse("https://user:secret@example.com/v1")
    assert "secret" not in str(caught.value)
    with pytest.raises(ValueError, match="invalid port"):
        Origin.parse("http://example.com:99999")
    with pytest.raises(ValueError, match="line break"):
        request_head(b"POST", Origin.parse("http://example.com"), "x", [("X-Evil", "a\r\nHost: other")])


async def test_a_request_may_wait_for_the_whole_answer(pool: ConnectionPool) -> None:
    async def split(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
        await writer.drain()
        writer.write(b"all of it")

    server = await serve(split)
    origin, prefix = head(server.port)
    response = await pool.request(origin, prefix, [b"{}"], total_timeout=5, whole_limit=1024)
    assert response.complete
    assert await response.read() == b"all of it"
    response.release()
    await server.stop()

    server = await serve(replying(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", close=True))
    origin, prefix = head(server.port)
    with pytest.raises(ConnectionClosed):
        await pool.request(origin, prefix, [b"{}"], total_timeout=5, whole_limit=1024)
    await server.stop()


def large(size: int) -> Handler:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            writer.write(b"y" * 65536)
            await writer.drain()

    return answer


async def test_an_answer_read_whole_is_never_held_back(pool: ConnectionPool) -> None:
    size = 4 * 1024 * 1024
    server = await serve(large(size))
    origin, prefix = head(server.port)
    response = await pool.request(origin, prefix, [b"{}"], total_timeout=5, whole_limit=size)
    assert len(await response.read()) == size
    response.release()
    # Read whole after the head came in (the error body of a stream): the same.
    response = await pool.request(origin, prefix, [b"{}"], read_timeout=5)
    assert len(await response.read()) == size
    response.release()
    await server.stop()


async def test_an_answer_past_the_limit_fails_and_its_connection_closes(pool: ConnectionPool) -> None:
    server = await serve(large(4 * 1024 * 1024))
    origin, prefix = head(server.port)
    with pytest.raises(BodyTooLarge):
        await pool.request(origin, prefix, [b"{}"], total_timeout=5, whole_limit=1024 * 1024)
    response = await pool.request(origin, prefix, [b"{}"], read_timeout=5)
    with pytest.raises(BodyTooLarge):
        await response.read(1024 * 1024)
    response.release()
    assert server.connections == 2
    await server.stop()


async def test_a_protocol_switch_is_refused(pool: ConnectionPool) -> None:
    server = await serve(replying(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"))
    origin, prefix = head(server.port)
    with pytest.raises(InvalidResponse, match="switched protocols"):
        await pool.request(origin, prefix, [b"{}"], total_timeout=5)
    await server.stop()


async def test_a_reset_during_a_body_that_runs_to_the_close_is_a_failure(pool: ConnectionPool) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart of it")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
        writer.transport.abort()

    server = await serve(reset)
    origin, prefix = head(server.port)
    response = await pool.request(origin, prefix, [b"{}"], total_timeout=5)
    with pytest.raises(ConnectionClosed):
        await response.read()
    response.release()
    await server.stop()


@pytest.mark.parametrize(
    "headers", [b"X-Big: " + b"a" * 70_000 + b"\r\n", b"".join(b"X-%d: 1\r\n" % i for i in range(150))]
)
async def test_an_answer_with_too_many_or_too_large_headers_is_refused(pool: ConnectionPool, headers: bytes) -> None:
    server = await serve(replying(b"HTTP/1.1 200 OK\r\n" + headers + b"Content-Length: 2\r\n\r\nok"))
    origin, prefix = head(server.port)
    with pytest.raises(InvalidResponse, match="headers too large"):
        await pool.request(origin, prefix, [b"{}"], total_timeout=5, whole_limit=1024)
    await server.stop()


async def test_idle_connections_to_an_origin_nobody_uses_are_closed() -> None:
    pool = ConnectionPool(connect_timeout=2, idle_timeout=0.05)
    departed = await serve(replying(ok(b"a")))
    staying = await serve(replying(ok(b"b")))
    for server in (departed, staying):
        origin, prefix = head(server.port)
        response = await pool.request(origin, prefix, [b"{}"], total_timeout=5)
        await response.read()
        response.release()
    idle = [c for connections in pool._idle.values() for c in connections]
    assert len(idle) == 2
    await asyncio.sleep(0.1)  # both pass their idle time; only `staying` gets another request
    origin, prefix = head(staying.port)
    response = await pool.request(origin, prefix, [b"{}"], total_timeout=5)
    await response.read()
    response.release()
    assert idle[0].closed, "the departed origin's idle connection is still open"
    await pool.close()
    await departed.stop()
    await staying.stop()
