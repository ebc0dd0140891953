"""Limits that hold across every gateway process and replica, kept in Redis.

One Lua script admits a request in one round trip: the key's requests and tokens per minute,
the chosen deployment's cooldown, concurrency (``max_parallel_requests``) and requests per
minute, checked and recorded atomically with Redis's clock. Releasing a slot and counting a
response's tokens are queued and ride along with the next admission (or a flush 50 ms
later), so a busy gateway makes about one round trip per request.

When Redis fails or is slow, ``available`` turns false for a backoff (1 s, doubling up to
30 s): callers use their local limits meanwhile, a metric and a log line say so, and the
next try after the backoff brings shared limits back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import redis.asyncio as redis
from redis.exceptions import RedisError

from gateway.deployment import Deployment
from gateway.metrics import Metrics

log = logging.getLogger("gateway.limits")
PREFIX = "mmgateway:"
FLUSH_AFTER_S = 0.05
RENEW_EVERY_S = 10.0  # a running stream renews its slot this often (on its next chunk)
_MAX_QUEUED = 10_000  # releases and usages kept while Redis is away (leases expire by themselves)
_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)


def lease_ttl_ms(deployment: Deployment) -> int:
    """How long a slot is held without news: the longest a request may take, or a stream may go
    without renewing it (streams renew at least every ``RENEW_EVERY_S``), plus a margin."""
    return int((max(deployment.timeout, deployment.stream_timeout + RENEW_EVERY_S) + 30) * 1000)


@dataclass(frozen=True)
class KeyLimits:
    """A caller's limits: ``key_id`` names it in Redis (a digest, never the key)."""

    key_id: str
    rpm: int | None
    tpm: int | None
    check_local: Callable[[], None]  # the process-local check, used while Redis is away


@dataclass(frozen=True)
class Verdict:
    """``ok``, or why not: ``key_rpm``, ``key_tpm``, ``cooling``, ``busy``, ``deployment_rpm``, ``unavailable``."""

    outcome: str
    wait_s: float = 0.0


class SharedLimits:
    """Admissions, releases, token usage and cooldowns in Redis."""

    def __init__(self, client: redis.Redis, metrics: Metrics, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._metrics = metrics
        self._clock = clock
        self._lua = resources.files("gateway.limits").joinpath("admit.lua").read_text()
        self._script = client.register_script(self._lua)
        self._releases: list[tuple[str, str]] = []
        self._usages: list[tuple[str, str]] = []
        self._renewals: list[tuple[str, str, int]] = []
        self._ids = itertools.count()
        self._instance = os.urandom(6).hex()
        self._down_until = 0.0
        self._failures = 0
        self._flush: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        metrics.shared_limits_up.set(1)

    @classmethod
    def from_url(cls, url: str, metrics: Metrics, timeout_s: float = 0.25) -> SharedLimits:
        client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        return cls(client, metrics)

    async def start(self) -> None:
        """Load the script once, so that concurrent first admissions do not each miss it."""
        try:
            await self._client.script_load(self._lua)
        except (RedisError, OSError) as exc:
            self._mark_down(exc)

    @property
    def available(self) -> bool:
        """False while Redis is considered down (until the backoff ends)."""
        return self._clock() >= self._down_until

    async def admit(self, deployment: Deployment, caller: KeyLimits | None, lease: str) -> Verdict:
        """Check and record one request to ``deployment`` (and for ``caller`` when given)."""
        if not self.available:
            return Verdict("unavailable")
        ttl_ms = lease_ttl_ms(deployment)
        limits = (caller.rpm or 0, caller.tpm or 0) if caller is not None else (0, 0)
        key_id = caller.key_id if caller is not None else "-"
        result = await self._run(
            [f"{PREFIX}key:{key_id}:rpm", f"{PREFIX}key:{key_id}:tpm", *self._deployment_keys(deployment)],
            [*limits, deployment.max_parallel or 0, int(deployment.rpm.capacity) if deployment.rpm else 0],
            lease,
            ttl_ms,
        )
        if result is None:
            return Verdict("unavailable")
        return Verdict(result[0].decode(), int(result[1]) / 1000)

    def release(self, deployment: Deployment, lease: str) -> None:
        """Free the slot ``lease`` held (sent with the next admission)."""
        if deployment.max_parallel:
            self._queue(self._releases, (self._deployment_keys(deployment)[0], lease))

    def renew(self, deployment: Deployment, lease: str) -> None:
        """Keep the slot ``lease`` holds for a stream still running (sent with the next admission)."""
        if deployment.max_parallel:
            self._queue(self._renewals, (self._deployment_keys(deployment)[0], lease, lease_ttl_ms(deployment)))

    def record_usage(self, caller: KeyLimits, tokens: int) -> None:
        """Count a response's tokens against the caller's tokens per minute."""
        if caller.tpm and tokens > 0:
            # Named once here, so that sending it again (after a cancelled call) counts it once.
            self._queue(self._usages, (f"{PREFIX}key:{caller.key_id}:tpm", f"{tokens}:{self._next_id()}"))

    async def publish_cooldown(self, deployment: Deployment, seconds: float) -> None:
        """Take ``deployment`` out of every process's rotation for ``seconds``."""
        if not self.available or seconds <= 0:
            return
        try:
            await self._client.set(self._deployment_keys(deployment)[1], b"1", px=max(1, int(seconds * 1000)))
        except (RedisError, OSError) as exc:
            self._mark_down(exc)

    async def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
        await self.flush()
        await self._client.aclose()

    async def flush(self) -> None:
        """Send the queued releases and usages now."""
        if (self._releases or self._usages or self._renewals) and self.available:
            lease = f"flush:{self._next_id()}"
            await self._run([f"{PREFIX}flush", f"{PREFIX}flush", f"{PREFIX}flush", f"{PREFIX}flush", f"{PREFIX}flush"],
                            [0, 0, 0, 0], lease, 1)  # fmt: skip

    def _next_id(self) -> str:
        return f"{self._instance}:{next(self._ids)}"

    def new_lease(self) -> str:
        """A name for one attempt's slot, unique across processes (never the client's request id)."""
        return f"lease:{self._next_id()}"

    @staticmethod
    def _deployment_keys(deployment: Deployment) -> list[str]:
        base = f"{PREFIX}deployment:{deployment.id}"
        return [f"{base}:slots", f"{base}:cooldown", f"{base}:rpm"]

    def _queue(
        self,
        queue: list[tuple[str, str]] | list[tuple[str, str, int]],
        item: tuple[str, str] | tuple[str, str, int],
    ) -> None:
        if len(queue) < _MAX_QUEUED:
            queue.append(item)  # type: ignore[arg-type]
        if self._flush is None:
            loop = asyncio.get_running_loop()
            self._flush = loop.call_later(FLUSH_AFTER_S, self._start_flush)

    def _start_flush(self) -> None:
        self._flush = None
        task = asyncio.create_task(self.flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _run(self, keys: list[str], limits: list[int], lease: str, ttl_ms: int) -> list[bytes] | None:
        releases, self._releases = self._releases, []
        usages, self._usages = self._usages, []
        renewals, self._renewals = self._renewals, []
        all_keys = [*keys, *(k for k, _ in releases), *(k for k, _ in usages), *(k for k, _, _ in renewals)]
        args: list[str | int] = [*limits, lease, ttl_ms, len(releases), *(v for _, v in releases)]
        args += [len(usages), *(v for _, v in usages)]
        args += [len(renewals), *(v for _, lease_id, ttl in renewals for v in (lease_id, ttl))]
        try:
            result: list[bytes] = await self._script(keys=all_keys, args=args)
        except BaseException as exc:
            # Kept for the next call, also when this one was cancelled (its client left): applying
            # them twice is harmless (releases and renewals are idempotent, usages are named).
            self._releases[:0] = releases
            self._usages[:0] = usages
            self._renewals[:0] = renewals
            if not isinstance(exc, TimeoutError | RedisError | OSError):
                raise
            self._mark_down(exc)
            return None
        self._mark_up()
        return result

    def _mark_down(self, exc: BaseException) -> None:
        backoff = _BACKOFF_S[min(self._failures, len(_BACKOFF_S) - 1)]
        self._failures += 1
        self._down_until = self._clock() + backoff
        if self._failures == 1:
            self._metrics.shared_limits_up.set(0)
            log.warning(
                "Redis is unavailable: limits are per process until it is back",
                extra={"error": type(exc).__name__, "retry_in_s": backoff},
            )
        self._metrics.shared_limits_errors.inc()

    def _mark_up(self) -> None:
        if self._failures:
            log.info("Redis is back: limits are shared again", extra={"after_failures": self._failures})
            self._metrics.shared_limits_up.set(1)
        self._failures = 0
