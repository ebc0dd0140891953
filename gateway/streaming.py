"""Relaying Server-Sent Events from a deployment: model name rewrite, usage capture, end detection.

Rewriting and scanning work on raw bytes. That is sound because inside a JSON string every
quote is escaped and every newline is ``\\n``: ``"model":"x"`` unescaped, or a line starting
with ``data: [DONE]``, can only be structure, never generated text.
"""

from __future__ import annotations

from typing import Any

import orjson

_DONE_LINE = b"data: [DONE]"


def model_replacements(upstream_model: str, requested_model: str) -> list[tuple[bytes, bytes]]:
    """Byte patterns that turn the upstream model name into the one the client asked for."""
    if upstream_model == requested_model:
        return []
    old, new = orjson.dumps(upstream_model), orjson.dumps(requested_model)
    return [(b'"model":' + old, b'"model":' + new), (b'"model": ' + old, b'"model": ' + new)]


class EventRelay:
    """Passes whole SSE events through, rewritten, and remembers usage and ``[DONE]``."""

    def __init__(self, replacements: list[tuple[bytes, bytes]]) -> None:
        self._replacements = replacements
        self._pending = b""
        self.usage: dict[str, Any] | None = None
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        """Take bytes as they arrived; return the complete events among them."""
        data = self._pending + chunk if self._pending else chunk
        lf, crlf = data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n")
        end = max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
        if end == 0:
            self._pending = data
            return b""
        ready, self._pending = data[:end], data[end:]
        return self._process(ready)

    def finish(self) -> bytes:
        """Whatever is left once the upstream closed the stream."""
        rest, self._pending = self._pending, b""
        return self._process(rest) if rest else b""

    def _process(self, events: bytes) -> bytes:
        for old, new in self._replacements:
            events = events.replace(old, new)
        if b'"usage"' in events:
            self._capture_usage(events)
        if events.startswith(_DONE_LINE) or b"\n" + _DONE_LINE in events:
            self.done = True
        return events

    def _capture_usage(self, events: bytes) -> None:
        for line in events.splitlines():
            if line.startswith(b"data: {") and b'"usage"' in line:
                try:
                    usage = orjson.loads(line[6:]).get("usage")
                except (orjson.JSONDecodeError, AttributeError):
                    continue
                if isinstance(usage, dict):
                    self.usage = usage
