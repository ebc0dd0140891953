"""What can go wrong below HTTP::

TransportError          the exchange failed below HTTP; ``reason`` says how, without addresses
├── ConnectFailed       no connection could be made (refused, unreachable, DNS, TLS)
├── ConnectionClosed    the peer closed the connection before the answer was complete
├── InvalidResponse     the peer's answer is not HTTP/1.x
└── BodyTooLarge        an answer to be read whole is larger than the caller allows
TimeoutError            connecting, the whole answer, or the gap between two reads took too long
"""

from __future__ import annotations


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


class StaleConnection(ConnectionClosed):
    """A pooled connection closed before a byte of the answer: the request was not served."""


class BodyTooLarge(TransportError):
    """An answer to be read whole is larger than the caller allows."""

    reason = "answer too large"
