"""Waiting in tests for something another task or process does, by asking until it holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], Awaitable[bool]], within_s: float = 10.0, what: str = "the condition did not hold in time"
) -> None:
    """Return once ``check()`` is true; fail with ``what`` if it is not within ``within_s``."""
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)
