"""What each vLLM engine says about itself: its ``/metrics`` scraped every few seconds.

A ``hosted_vllm/`` deployment (each pod of a per-pod one) is asked for ``/metrics`` at the root of
its ``api_base`` every ``router_settings.engine_stats_interval`` seconds, bounded by
``engine_stats_timeout``. What it reports (requests waiting and running, KV-cache usage, prefix
cache hits and queries) is kept on the deployment, shown in ``/health/groups`` and exported as
``gateway_engine_*``. A deployment that does not answer has no current stats: it is unknown, never
taken for idle. Under ``--workers N`` one worker of the host scrapes each engine for all of them
(gateway.engine_share).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gateway.deployment import Deployment
from gateway.engine_share import SharedScrapes

log = logging.getLogger("gateway.engine")

_SHARED_MAX_AGE_FACTOR = 2.0  # another worker's scrape older than this many intervals: scrape here

# vLLM's names (the older KV-cache gauge too); counters are read from their ``_total`` sample.
_GAUGES = {
    "vllm:num_requests_waiting": "waiting",
    "vllm:num_requests_running": "running",
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:gpu_cache_usage_perc": "kv_cache_usage",
}
_COUNTERS = {"vllm:prefix_cache_hits": "prefix_cache_hits", "vllm:prefix_cache_queries": "prefix_cache_queries"}


@dataclass(frozen=True)
class EngineStats:
    """One scrape of an engine: None where it did not say (or when it did not answer: ``error``)."""

    scraped_at: float
    waiting: float | None = None
    running: float | None = None
    kv_cache_usage: float | None = None  # 0..1, the fullest engine of the deployment
    prefix_cache_hits: float | None = None  # tokens, since the engine started
    prefix_cache_queries: float | None = None
    error: str | None = None

    def current(self, now: float, max_age_s: float) -> bool:
        """Whether these stats are a recent answer (else the engine's state is unknown)."""
        return self.error is None and now - self.scraped_at <= max_age_s

    def report(self) -> dict[str, Any]:
        """What ``/health/groups`` shows."""
        if self.error is not None:
            return {"error": self.error, "age_s": round(time.monotonic() - self.scraped_at, 1)}
        found: dict[str, Any] = {
            "waiting": self.waiting,
            "running": self.running,
            "kv_cache_usage": self.kv_cache_usage,
            "prefix_cache_hits": self.prefix_cache_hits,
            "prefix_cache_queries": self.prefix_cache_queries,
            "age_s": round(time.monotonic() - self.scraped_at, 1),
        }
        return {k: v for k, v in found.items() if v is not None}


def parse_engine_metrics(text: str, scraped_at: float) -> EngineStats:
    """The stats in a vLLM ``/metrics`` exposition: counts summed over its engines (data parallel),
    KV-cache usage the highest of them; ValueError when it is not Prometheus text."""
    sums: dict[str, float] = {}
    highest: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # By sample name: a counter's family is named with or without ``_total`` by exporters.
            field = _GAUGES.get(sample.name) or _COUNTERS.get(sample.name.removesuffix("_total"))
            if field is None or (field in _COUNTERS.values() and not sample.name.endswith("_total")):
                continue
            value = float(sample.value)
            if not math.isfinite(value):
                continue
            if field == "kv_cache_usage":
                highest[field] = max(highest.get(field, 0.0), value)
            else:
                sums[field] = sums.get(field, 0.0) + value
    found = {**sums, **highest}
    return EngineStats(
        scraped_at,
        waiting=found.get("waiting"),
        running=found.get("running"),
        kv_cache_usage=found.get("kv_cache_usage"),
        prefix_cache_hits=found.get("prefix_cache_hits"),
        prefix_cache_queries=found.get("prefix_cache_queries"),
    )


def scraped(deployment: Deployment) -> bool:
    """Whether the deployment is a vLLM whose engine is scraped."""
    return deployment.provider == "hosted_vllm" and not deployment.sdk


Fetch = Callable[[Deployment, float], Awaitable[tuple[int, bytes]]]


class EngineScraper:
    """Scrapes every vLLM deployment the router has now (pods come and go), all at once, each
    bounded by ``timeout_s``, every ``interval_s``."""

    def __init__(
        self,
        deployments: Callable[[], Iterable[Deployment]],
        fetch: Fetch,
        interval_s: float = 1.0,
        timeout_s: float = 0.5,
        on_failure: Callable[[Deployment], None] | None = None,
        shared: SharedScrapes | None = None,
    ) -> None:
        self._deployments = deployments
        self._fetch = fetch
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._on_failure = on_failure
        self._shared = shared  # the host's other workers: one of them scrapes each engine

    async def run(self) -> None:
        while True:
            await self.scrape_all()
            await asyncio.sleep(self.interval_s)

    async def scrape_all(self) -> None:
        """One scrape an engine: deployments of several groups on one vLLM share its answer."""
        engines: dict[str, list[Deployment]] = {}
        for deployment in self._deployments():
            if scraped(deployment):
                engines.setdefault(deployment.api_base.rstrip("/"), []).append(deployment)
        if self._shared is not None:
            self._shared.keep_only(set(engines))
        await asyncio.gather(*(self._scrape_engine(engine, same) for engine, same in engines.items()))

    async def _scrape_engine(self, engine: str, same: list[Deployment]) -> None:
        first, *others = same
        shared = self._shared
        if shared is None or shared.owns(engine):
            await self.scrape(first)
            if shared is not None and first.engine is not None:
                shared.publish(engine, dataclasses.asdict(first.engine))
        elif not self._adopt(first, _stats(shared.read(engine))):
            await self.scrape(first)  # the scraping worker has written nothing recent: ask the engine
        for deployment in others:
            deployment.engine = first.engine
            deployment.in_flight_at_scrape = deployment.in_flight

    def _adopt(self, deployment: Deployment, stats: EngineStats | None) -> bool:
        """Take another worker's recent scrape of the engine; False when there is none."""
        max_age_s = _SHARED_MAX_AGE_FACTOR * self.interval_s + self.timeout_s
        if stats is None or time.monotonic() - stats.scraped_at > max_age_s:
            return False
        if deployment.engine is None or deployment.engine.scraped_at != stats.scraped_at:
            deployment.engine = stats
            deployment.in_flight_at_scrape = deployment.in_flight  # a new answer: ours since start from now
        return True

    async def scrape(self, deployment: Deployment) -> None:
        started = time.monotonic()
        in_flight = deployment.in_flight  # what the engine's answer already counts of ours
        try:
            status, body = await asyncio.wait_for(self._fetch(deployment, self.timeout_s), self.timeout_s)
            if status != 200:
                raise ValueError(f"/metrics answered HTTP {status}")
            deployment.engine = parse_engine_metrics(body.decode("utf-8", "replace"), started)
            deployment.in_flight_at_scrape = in_flight
        except (TimeoutError, OSError, ValueError) as exc:
            reason = "no answer in time" if isinstance(exc, TimeoutError) else _reason(exc)
            self._failed(deployment, EngineStats(started, error=reason))
        except Exception as exc:  # a scrape never stops the loop (an unexpected answer, a bug)
            log.warning("engine scrape failed: %s", type(exc).__name__, extra={"deployment": deployment.id})
            self._failed(deployment, EngineStats(started, error=type(exc).__name__))

    def _failed(self, deployment: Deployment, stats: EngineStats) -> None:
        deployment.engine = stats
        if self._on_failure is not None:
            self._on_failure(deployment)


def _stats(found: dict[str, Any] | None) -> EngineStats | None:
    """Stats another worker published, or None when there are none (or they do not read)."""
    if found is None or not isinstance(found.get("scraped_at"), int | float):
        return None
    try:
        return EngineStats(**found)
    except TypeError:
        return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ValueError):
        return str(exc)[:200]
    return type(exc).__name__
