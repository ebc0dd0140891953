"""uvicorn's HTTP protocol, receiving request bodies whole.

uvicorn hands a body to the app as it arrives: every piece is appended to a buffer, copied
out when the app asks, and reading stops past 64 KiB until the app has taken it. A 1 MiB
image then costs a dozen wake-ups of the request's task and three copies before the
gateway can look at it, although it needs all of it before anything goes upstream. This
protocol holds the pieces (up to ``HOLD_BYTES``) and hands them over in one message, so
the body is copied once, and the app wakes once.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Past this much, what is held goes to the app and uvicorn's flow control takes over, so one
# connection never holds more than this plus uvicorn's own buffer.
HOLD_BYTES = 16 * 1024 * 1024


def uvicorn_options() -> dict[str, Any]:
    """How ``gateway serve`` runs uvicorn (tests serve the app the same way)."""
    return {
        "loop": "uvloop",
        "http": WholeBodyProtocol,
        "access_log": False,  # the gateway writes its own access log (gateway.access_log)
        "proxy_headers": False,  # nothing reads the client address; the parsing costs every request
        "log_config": None,
        "timeout_graceful_shutdown": 30,
    }


class WholeBodyProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` delivering each request body in one piece."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pieces: list[bytes] = []
        self._held = 0

    def on_message_begin(self) -> None:
        """A new request: nothing held."""
        super().on_message_begin()
        self._pieces.clear()
        self._held = 0

    def on_body(self, body: bytes) -> None:
        """Hold a piece of the body."""
        if self._ignores_body():
            return
        self._pieces.append(body)
        self._held += len(body)
        if self._held > HOLD_BYTES:
            self._hand_over()

    def on_message_complete(self) -> None:
        """The body is complete: hand it over, then let uvicorn finish the request."""
        if not self._ignores_body():
            self._hand_over()
        super().on_message_complete()

    def _ignores_body(self) -> bool:
        # As uvicorn's on_body: an upgrade, or a response already sent, takes no body.
        return bool((self.parser.should_upgrade() and self._should_upgrade()) or self.cycle.response_complete)

    def _hand_over(self) -> None:
        if not self._pieces:
            return
        cycle = self.cycle
        whole = self._pieces[0] if len(self._pieces) == 1 else b"".join(self._pieces)
        self._pieces.clear()
        self._held = 0
        if cycle.body:
            cycle.body += whole  # the app has not taken the last piece yet
        else:
            cycle.body = whole  # type: ignore[assignment]  # bytes: uvicorn's bytes(body) then copies nothing
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()
