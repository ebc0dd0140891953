"""The access log: one JSON line per request, batched per event-loop iteration, whole lines per write."""

from __future__ import annotations

import asyncio
import io
import logging

import orjson
import pytest

from gateway.access_log import PIPE_BUF, AccessLog

pytestmark = pytest.mark.unit


class _Writes(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def _logger(level: int) -> logging.Logger:
    logger = logging.getLogger(f"gateway.access.test{level}")
    logger.setLevel(level)
    return logger


async def test_lines_of_one_loop_iteration_go_out_together_in_whole_lines() -> None:
    stream = _Writes()
    access = AccessLog(_logger(logging.INFO), stream)
    for number in range(100):
        access.line({"request_id": f"r{number}", "status": 200, "duration_ms": 1.5})
    assert stream.writes == []  # nothing written while the iteration runs
    await asyncio.sleep(0)
    assert 2 <= len(stream.writes) <= 5
    assert all(len(w) <= PIPE_BUF and w.endswith("\n") for w in stream.writes)
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [entry["request_id"] for entry in lines] == [f"r{n}" for n in range(100)]
    assert set(lines[0]) == {"time", "level", "logger", "message", "request_id", "status", "duration_ms"}
    assert (lines[0]["level"], lines[0]["message"]) == ("info", "request finished")


def test_outside_a_loop_a_line_is_written_at_once_and_a_quiet_logger_writes_nothing() -> None:
    stream = _Writes()
    AccessLog(_logger(logging.INFO), stream).line({"request_id": "x"})
    assert len(stream.writes) == 1
    quiet = _Writes()
    AccessLog(_logger(logging.WARNING), quiet).line({"request_id": "x"})
    assert quiet.writes == []
