"""The access log: one JSON line per request, in the format of every other log line, written
without the logging machinery's per-record cost. Lines finished in the same event-loop iteration
go out in one write of at most ``PIPE_BUF`` bytes, so lines of several worker processes sharing
stderr never interleave."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

PIPE_BUF = 4096  # writes up to this size to a pipe are atomic (POSIX)


class AccessLog:
    def __init__(self, logger: logging.Logger | None = None, stream: TextIO | None = None) -> None:
        self._logger = logger or logging.getLogger("gateway.access")
        self._stream = stream
        self._pending: list[str] = []

    def line(self, fields: dict[str, Any]) -> None:
        """Queue one request's line (when the access logger is enabled at INFO); written after this
        event-loop iteration, or at once outside a loop."""
        if not self._logger.isEnabledFor(logging.INFO):
            return
        entry = {
            "time": datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="milliseconds"),
            "level": "info",
            "logger": self._logger.name,
            "message": "request finished",
            **fields,
        }
        self._pending.append(orjson.dumps(entry, default=str).decode() + "\n")
        if len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        """Write the queued lines, in writes of whole lines of at most ``PIPE_BUF`` bytes."""
        lines, self._pending = self._pending, []
        stream = self._stream or sys.stderr
        chunk: list[str] = []
        size = 0
        for line in lines:
            if chunk and size + len(line) > PIPE_BUF:
                stream.write("".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            stream.write("".join(chunk))
        if lines:
            stream.flush()
