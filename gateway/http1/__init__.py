"""A lean HTTP/1.1 client for the data plane: keep-alive pools, timeouts, streamed bodies.

The gateway sends one kind of request (a POST whose head is mostly known in advance, with a
body already in memory) and relays what comes back, so most of a general client's work per
request (cookies, redirects, header objects, tracing hooks, per-request timeout objects) is
overhead here. This client writes a prepared head and the body's pieces straight to the
transport and parses the answer with httptools (llhttp), as uvicorn does on the server side.

Failures are drawn in ``_exceptions``.
"""

from gateway.http1._connection import Response
from gateway.http1._exceptions import BodyTooLarge, ConnectFailed, ConnectionClosed, InvalidResponse, TransportError
from gateway.http1._origin import Origin, request_head
from gateway.http1._pool import ConnectionPool

__all__ = [
    "BodyTooLarge",
    "ConnectFailed",
    "ConnectionClosed",
    "ConnectionPool",
    "InvalidResponse",
    "Origin",
    "Response",
    "TransportError",
    "request_head",
]
