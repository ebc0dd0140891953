"""Token buckets for requests-per-minute limits."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """Allows ``rpm`` requests a minute with bursts up to ``rpm``; refills continuously."""

    def __init__(self, rpm: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(rpm)
        self.rate = rpm / 60.0
        self._tokens = float(rpm)
        self._clock = clock
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_acquire(self) -> bool:
        """Take one token if there is one."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until the next token is available."""
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self.rate)
