"""Relaying Server-Sent Events from a deployment: model name rewrite, usage capture, end detection.

Rewriting and scanning work on raw bytes. That is sound because inside a JSON string every
quote is escaped and every newline is ``\\n``: ``"model":"x"`` unescaped, or a line starting
with ``data: [DONE]``, can only be structure, never generated text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

_DONE_LINE = b"data: [DONE]"
_RESPONSE_ID = re.compile(rb'"id":\s?"(resp_[A-Za-z0-9_\-]{1,200})"')
MAX_PENDING_BYTES = 8 * 1024 * 1024  # one unfinished event may not hold more than this


class EventTooLarge(Exception):
    """The deployment sent more than ``MAX_PENDING_BYTES`` without ending an event."""


def model_replacements(upstream_model: str, requested_model: str) -> list[tuple[bytes, bytes]]:
    """Byte patterns that turn the upstream model name into the one the client asked for."""
    if upstream_model == requested_model:
        return []
    old, new = orjson.dumps(upstream_model), orjson.dumps(requested_model)
    return [(b'"model":' + old, b'"model":' + new), (b'"model": ' + old, b'"model": ' + new)]


class EventRelay:
    """Passes whole SSE events through, rewritten, and remembers usage and ``[DONE]``."""

    def __init__(
        self,
        replacements: list[tuple[bytes, bytes]],
        max_pending: int = MAX_PENDING_BYTES,
        ends: tuple[bytes, ...] = (_DONE_LINE,),
        rename_id: Callable[[str], str] | None = None,
    ) -> None:
        self._replacements = list(replacements)
        self._pending = bytearray()
        self._max_pending = max_pending
        # A ``data: [DONE]`` line, or a marker with or without a space after its colon.
        self._done_line = _DONE_LINE in ends
        self._markers = [m for end in ends if end != _DONE_LINE for m in (end, end.replace(b":", b": ", 1))]
        self._rename_id = rename_id  # the first response id seen is renamed by it (Responses API)
        self.usage: dict[str, Any] | None = None
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        """Take bytes as they arrived; return the complete events among them.

        Only the new bytes (and the three before them) are searched for an event's end, so a
        long unfinished event costs linear time; past ``max_pending`` it raises EventTooLarge.
        """
        if not self._pending:
            end = _last_event_end(chunk, 0)
            if end == len(chunk):
                return self._process(chunk)
            self._pending += chunk[end:]
            self._check_size()
            return self._process(chunk[:end]) if end else b""
        searched_from = max(0, len(self._pending) - 3)
        self._pending += chunk
        end = _last_event_end(self._pending, searched_from)
        if end == 0:
            self._check_size()
            return b""
        ready = bytes(self._pending[:end])
        del self._pending[:end]
        return self._process(ready)

    def _check_size(self) -> None:
        if len(self._pending) > self._max_pending:
            self._pending.clear()
            raise EventTooLarge(f"an event grew past {self._max_pending} bytes without ending")

    def finish(self) -> bytes:
        """Whatever is left once the upstream closed the stream."""
        rest = bytes(self._pending)
        self._pending.clear()
        return self._process(rest) if rest else b""

    def _process(self, events: bytes) -> bytes:
        if self._rename_id is not None:
            found = _RESPONSE_ID.search(events)
            if found is not None:
                old = found.group(1)
                self._replacements.append((b'"' + old + b'"', orjson.dumps(self._rename_id(old.decode()))))
                self._rename_id = None
        for old, new in self._replacements:
            events = events.replace(old, new)
        if b'"usage"' in events:
            self._capture_usage(events)
        if not self.done:
            self.done = self._ended(events)
        return events

    def _ended(self, events: bytes) -> bool:
        if self._done_line and (
            events.startswith(_DONE_LINE) or b"\n" + _DONE_LINE in events or b"\r" + _DONE_LINE in events
        ):
            return True
        return any(marker in events for marker in self._markers)

    def _capture_usage(self, events: bytes) -> None:
        for line in events.splitlines():
            if line.startswith(b"data: {") and b'"usage"' in line:
                try:
                    event = orjson.loads(line[6:])
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(event, dict):
                    continue
                usage = event.get("usage")
                # Responses events carry it in their response; Anthropic's message_start in its message.
                holder = event.get("response") or event.get("message")
                if usage is None and isinstance(holder, dict):
                    usage = holder.get("usage")
                if isinstance(usage, dict):
                    # Anthropic reports input tokens at the start and output tokens at the end.
                    self.usage = {**self.usage, **usage} if self.usage else usage


def _last_event_end(data: bytes | bytearray, start: int) -> int:
    """The offset just past the last blank line (``\\n\\n``, ``\\r\\n\\r\\n`` or, as the SSE
    format allows, ``\\r\\r``) at or after ``start``; 0 if none."""
    lf, crlf, cr = data.rfind(b"\n\n", start), data.rfind(b"\r\n\r\n", start), data.rfind(b"\r\r", start)
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0, cr + 2 if cr >= 0 else 0)
