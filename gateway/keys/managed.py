"""Managed keys as each gateway process sees them: cached, refreshed, checked without waiting.

- **Cache.** Every key and team is held in memory, keyed by the key's digest. Every
  ``key_cache_seconds`` one small query reads the database's revision; when it moved, everything
  is reloaded. An admin change reloads the process that made it at once and, with Redis, tells the
  others on a pub/sub channel, so they reload at once too.
- **Spend.** Requests add their cost to a counter in memory (``gateway.keys.spend``); every
  ``spend_flush_seconds`` one transaction adds the batch to the database, then the budgeted keys'
  and teams' totals are read back. A budget is checked against those totals plus this process's
  spend since: never a query on the request's path.
- **Losses.** A process killed without warning loses what it counted since its last flush (at
  most ``spend_flush_seconds``); a graceful stop flushes first. A database that cannot be reached
  keeps the batches here and writes them once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import RedisError

from common.errors import AuthenticationFailed, RateLimited, ServiceUnavailable
from gateway.auth import Principal
from gateway.config import GatewaySettings
from gateway.errors import BudgetExceeded
from gateway.keys.database import Budgets, DatabaseUnavailable, KeyDatabase, describe
from gateway.keys.durations import seconds
from gateway.keys.records import Limits, ManagedKey, Team
from gateway.keys.spend import Batch, SpendCounter
from gateway.limits.shared import PREFIX, KeyLimits
from gateway.metrics import Metrics
from gateway.ratelimit import TokenBucket

log = logging.getLogger("gateway.keys")
CHANNEL = f"{PREFIX}keys:changed"


@dataclass(eq=False)
class KeyGuard:
    """A managed key's checks: blocked, expired, budget, parallel requests (its own and its team's)."""

    key: ManagedKey
    team: Team | None
    owner: ManagedKeys

    def check_access(self) -> None:
        if self.key.blocked:
            raise AuthenticationFailed("this API key is blocked", code="key_blocked")
        if self.key.expires is not None and self.owner.clock() >= self.key.expires:
            raise AuthenticationFailed("this API key has expired", code="expired_key")
        if self.team is not None and self.team.blocked:
            raise AuthenticationFailed(f"this API key's team '{self.team.team_id}' is blocked", code="team_blocked")

    def admit(self) -> Callable[[], None]:
        owner = self.owner
        owner.check_budget("key", self.key.token, self.key, owner.key_budgets, owner.counter.unwritten_keys)
        team = self.team
        if team is not None:
            owner.check_budget("team", team.team_id, team, owner.team_budgets, owner.counter.unwritten_teams)
            bucket = owner.team_bucket(team)
            if bucket is not None and not bucket.try_acquire():
                raise RateLimited(
                    f"team '{team.team_id}' is over its requests-per-minute limit", retry_after=bucket.retry_after()
                )
        holds = [("key", self.key.token, owner.share_of(self.key.max_parallel_requests))]
        if team is not None:
            holds.append(("team", team.team_id, owner.share_of(team.max_parallel_requests)))
        for kind, name, limit in holds:
            if limit is not None and owner.in_flight.get((kind, name), 0) >= limit:
                raise RateLimited(f"this API key's {kind} is at its max_parallel_requests", retry_after=1.0)
        for kind, name, _ in holds:
            owner.in_flight[(kind, name)] = owner.in_flight.get((kind, name), 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                for kind, name, _ in holds:
                    left = owner.in_flight.get((kind, name), 1) - 1
                    if left > 0:
                        owner.in_flight[(kind, name)] = left
                    else:
                        owner.in_flight.pop((kind, name), None)

        return release


class ManagedKeys:
    """This process's copy of the managed keys and its spend counter (``gateway.auth.ManagedLookup``)."""

    def __init__(
        self,
        url: str,
        settings: GatewaySettings,
        metrics: Metrics,
        redis_url: str | None = None,
        share: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self._share = share  # workers on this host without Redis: each enforces its share of a limit
        self._redis_url = redis_url
        self._redis: redis.Redis | None = None
        self.database: KeyDatabase | None = None
        self.last_error = "the keys database is not open yet"
        self.counter = SpendCounter(settings.store_spend_logs, clock)
        self._principals: dict[bytes, Principal] = {}
        self.teams: dict[str, Team] = {}
        self.key_budgets: Budgets = {}
        self.team_budgets: Budgets = {}
        self._budgets_read = False  # until the first flush, budgets start from the loaded records
        self.in_flight: dict[tuple[str, str], int] = {}
        self._buckets: dict[tuple[str, str], tuple[int, TokenBucket]] = {}
        self.revision = -1
        self._reloading = asyncio.Lock()
        self._flushing = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []  # periodic work, stopped between two runs
        self._waiting: list[asyncio.Task[None]] = []  # waits that may be cancelled anywhere
        self._stopping = asyncio.Event()

    async def _open(self) -> None:
        if self.database is None:
            self.database = await asyncio.to_thread(KeyDatabase, self.url)
        await self.reload()

    async def _open_eventually(self) -> None:
        backoff = 1.0
        while self.revision < 0:
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
            try:
                await self._open()
                log.info("managed keys: loaded from %s", describe(self.url))
            except DatabaseUnavailable as exc:
                self.last_error = str(exc)
                log.warning("managed keys are unavailable: %s", exc)

    @property
    def db(self) -> KeyDatabase:
        """The open database; 503 with the reason while it could not be opened."""
        if self.database is None:
            raise ServiceUnavailable(f"managed keys are unavailable: {self.last_error}", retry_after=5)
        return self.database

    async def start(self) -> None:
        """Open (and migrate) the database, load every key, start refreshing and flushing. A database
        that cannot be reached is tried again in the background: config keys work meanwhile, and
        managed keys get 503 until they are loaded."""
        try:
            await self._open()
        except DatabaseUnavailable as exc:
            self.last_error = str(exc)
            log.warning("managed keys are unavailable: %s; trying again in the background", exc)
            self._waiting.append(asyncio.create_task(self._open_eventually()))
        if self._redis_url:
            # No read timeout: a subscriber waits for notices as long as none comes.
            self._redis = redis.Redis.from_url(self._redis_url, socket_connect_timeout=0.5)
            self._waiting.append(asyncio.create_task(self._listen()))
        self._tasks.append(asyncio.create_task(self._every(self.settings.key_cache_seconds, self.refresh)))
        self._tasks.append(asyncio.create_task(self._every(self.settings.spend_flush_seconds, self.flush)))

    async def close(self) -> None:
        """Stop the loops and write what was counted (a graceful stop loses no spend)."""
        self._stopping.set()
        for task in self._waiting:
            task.cancel()
        for task in [*self._waiting, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.database is not None:
            await self.flush()
            await asyncio.to_thread(self.database.close)
        if self._redis is not None:
            await self._redis.aclose()

    # The request path: dictionary lookups and arithmetic only.

    def find(self, key_digest: bytes) -> Principal | None:
        found = self._principals.get(key_digest)
        if found is None and self.revision < 0 and not self.url.startswith("sqlite:"):
            # The key may well be valid: the shared database is away (an embedded one that cannot
            # be opened means managed keys are unavailable here, and the key is simply unknown).
            raise ServiceUnavailable(
                "managed keys are not loaded yet: the keys database cannot be reached", retry_after=5
            )
        return found

    def share_of(self, limit: int | None) -> int | None:
        return None if limit is None else max(1, limit // self._share)

    def team_bucket(self, team: Team) -> TokenBucket | None:
        return self._bucket(("team", team.team_id), self.share_of(team.rpm_limit))

    def _bucket(self, name: tuple[str, str], rpm: int | None) -> TokenBucket | None:
        if rpm is None:
            return None
        held = self._buckets.get(name)
        if held is None or held[0] != rpm:
            held = (rpm, TokenBucket(rpm))
            self._buckets[name] = held
        return held[1]

    def window_spend(self, name: str, record: Limits, budgets: Budgets, unwritten: dict[str, float]) -> float:
        """What ``record`` (a key or team with a budget) spent in its window: its total as last read
        (none listed: nothing), plus this process's spend since."""
        default = (0.0 if self._budgets_read else record.spend, record.budget_reset_at)
        spend, reset_at = budgets.get(name, default)
        return self.in_window(spend, reset_at) + unwritten.get(name, 0.0)

    def in_window(self, spend: float, reset_at: float | None) -> float:
        """``spend`` unless its window ended (the next flush writes the reset)."""
        return 0.0 if reset_at is not None and self.clock() >= reset_at else spend

    def check_budget(self, kind: str, name: str, record: Limits, budgets: Budgets, unwritten: dict[str, float]) -> None:
        if record.max_budget is None:
            return
        spent = self.window_spend(name, record, budgets, unwritten)
        if spent >= record.max_budget:
            raise BudgetExceeded(
                f"Budget has been exceeded! {kind.capitalize()}={name[:16] if kind == 'key' else name} "
                f"Current cost: {spent:.6g}, Max budget: {record.max_budget:.6g}"
            )

    def record(
        self, principal: Principal, model_group: str, cost: float, prompt: int, completion: int, request_id: str
    ) -> None:
        """Count what one request cost (written with the next flush)."""
        if principal.spend_id is not None:
            self.counter.record(
                principal.spend_id, principal.team_id, model_group, cost, prompt, completion, request_id
            )

    # Background work.

    async def _every(self, interval_s: float, work: Callable[[], Awaitable[None]]) -> None:
        """``work`` every ``interval_s`` until ``close``, which lets the work under way finish (a flush
        cancelled mid-write would leave its batch neither written nor put back)."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval_s)
            if self._stopping.is_set():
                return
            try:
                await work()
            except DatabaseUnavailable as exc:
                log.warning("managed keys: %s", exc)
            except Exception:
                log.exception("managed keys: background work failed")

    async def refresh(self) -> None:
        """Reload when another process changed a key or a team."""
        if self.database is None:
            return
        if await asyncio.to_thread(self.db.revision) != self.revision:
            await self.reload()

    async def reload(self) -> None:
        """Read every key and team and build this process's copy off the event loop (10,000 keys
        take about 60 ms), then put it in place at once."""
        async with self._reloading:
            revision, teams, principals = await asyncio.to_thread(self._load)
            self.teams = teams
            self._principals = principals
            self.revision = revision
            self.metrics.managed_keys.set(len(principals))

    def _load(self) -> tuple[int, dict[str, Team], dict[bytes, Principal]]:
        revision, teams, keys = self.db.load()
        return revision, *self.build(teams, keys)

    def build(self, teams: list[Team], keys: list[ManagedKey]) -> tuple[dict[str, Team], dict[bytes, Principal]]:
        """The teams by id and the callers by key digest (rate buckets kept across reloads)."""
        by_id = {team.team_id: team for team in teams}
        principals: dict[bytes, Principal] = {}
        for key in keys:
            team = by_id.get(key.team_id) if key.team_id else None
            models = allowed_models(key, team)
            rpm = self.share_of(key.rpm_limit)
            principal = Principal(
                key.key_alias or key.key_name,
                models,
                self._bucket(("key", key.token), rpm),
                spend_id=key.token,
                team_id=key.team_id,
            )
            if key.rpm_limit or key.tpm_limit:
                principal.limits = KeyLimits(key.token[:32], key.rpm_limit, key.tpm_limit, principal.check_rate)
            principal.guard = KeyGuard(key, team, self)
            principals[bytes.fromhex(key.token)] = principal
        return by_id, principals

    async def flush(self) -> None:
        """Write what was counted since the last flush, then read the budgets' totals back."""
        if self.database is None:
            return
        async with self._flushing:
            batch = self.counter.take()
            try:
                key_budgets, team_budgets = await asyncio.to_thread(self._write, batch)
            except DatabaseUnavailable:
                self.counter.put_back(batch)
                self.metrics.spend_flush_failures.inc()
                if self.counter.dropped_logs:
                    log.warning("managed keys: %d request spend logs dropped while waiting", self.counter.dropped_logs)
                raise
            self.key_budgets, self.team_budgets = key_budgets, team_budgets
            self._budgets_read = True
            self.counter.written(batch)

    def _write(self, batch: Batch) -> tuple[Budgets, Budgets]:
        """One transaction a flush (two when a budget window ended)."""
        db = self.db
        now = self.clock()
        records: list[Limits] = [p.guard.key for p in self._principals.values() if isinstance(p.guard, KeyGuard)]
        records += self.teams.values()
        if any(r.budget_reset_at is not None and r.budget_reset_at <= now for r in records):
            db.reset_budgets(now, lambda duration: float(seconds(duration)))
        return db.add_spend(batch.rows, batch.logs)

    async def changed(self) -> None:
        """A key or team was changed here: reload now, and tell the other processes."""
        await self.reload()
        if self._redis is not None:
            try:
                await self._redis.publish(CHANNEL, str(self.revision))
            except (RedisError, OSError) as exc:
                log.warning("managed keys: cannot tell other processes through Redis: %s", type(exc).__name__)

    async def _listen(self) -> None:
        """Reload whenever another process says it changed something; reconnect with backoff."""
        assert self._redis is not None
        backoff = 0.5
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    backoff = 0.5
                    await self.refresh()  # what changed while not listening
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            await self.refresh()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, DatabaseUnavailable) as exc:
                log.warning("managed keys: change notices stopped (%s); polling meanwhile", type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)


def allowed_models(key: ManagedKey, team: Team | None) -> frozenset[str] | None:
    """The model groups a key may use: its own list, within its team's; None: every one."""
    own = frozenset(key.models) if key.models else None
    team_models = frozenset(team.models) if team is not None and team.models else None
    if own is None:
        return team_models
    return own if team_models is None else own & team_models
