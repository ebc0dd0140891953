"""Every Prometheus metric the gateway exports, on one registry per app, prefixed ``gateway_``.

Labels stay bounded: model groups and deployments come from the config (an unknown
requested model is counted as ``unknown``), endpoints from gateway.endpoints' table, status
is a class such as ``2xx``.

Under ``gateway serve --workers N`` (``PROMETHEUS_MULTIPROC_DIR`` set by the parent), every
worker writes its values to that directory and a scrape of any worker reports the sum over
all of them (deployment health: the worst worker's view).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from gateway.deployment import Deployment
from gateway.engine_stats import EngineStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
UNKNOWN_GROUP = "unknown"
NO_DEPLOYMENT = "none"


# What a vLLM engine reports of itself (gateway.engine_stats), per deployment: name, help, value.
ENGINE_SERIES: tuple[tuple[str, str, Callable[[EngineStats], float | None]], ...] = (
    (
        "gateway_engine_up",
        "1 when the engine's /metrics answered the last scrape, 0 when not",
        lambda e: float(e.error is None),
    ),
    ("gateway_engine_requests_waiting", "Requests the engine has queued (all its clients)", lambda e: e.waiting),
    ("gateway_engine_requests_running", "Requests the engine is running", lambda e: e.running),
    ("gateway_engine_kv_cache_usage", "The engine's KV-cache usage, 0 to 1", lambda e: e.kv_cache_usage),
    (
        "gateway_engine_prefix_cache_hits",
        "Prompt tokens the engine found in its prefix cache",
        lambda e: e.prefix_cache_hits,
    ),
    (
        "gateway_engine_prefix_cache_queries",
        "Prompt tokens the engine looked up in its prefix cache",
        lambda e: e.prefix_cache_queries,
    ),
)


def engine_values(deployment: Deployment) -> Iterable[tuple[str, float]]:
    """The deployment's engine series that have a value (a failed scrape: only ``up``, 0)."""
    if deployment.engine is None:
        return
    for name, _, value in ENGINE_SERIES:
        found = value(deployment.engine)
        if found is not None and (deployment.engine.error is None or name == "gateway_engine_up"):
            yield name, found


class _DeploymentCollector(Collector):
    """Reads live deployment state at scrape time, so gauges never go stale."""

    def __init__(self, deployments: Callable[[], Iterable[Deployment]], now: Callable[[], float]) -> None:
        self._deployments = deployments
        self._now = now

    def collect(self) -> Iterable[Metric]:
        healthy = GaugeMetricFamily(
            "gateway_deployment_healthy",
            "1 when the deployment is in rotation and answers health probes, 0 otherwise",
            labels=["model_group", "deployment"],
        )
        busy = GaugeMetricFamily(
            "gateway_deployment_in_flight",
            "Requests a deployment is serving now",
            labels=["model_group", "deployment"],
        )
        engine = {
            name: GaugeMetricFamily(name, text, labels=["model_group", "deployment"]) for name, text, _ in ENGINE_SERIES
        }
        now = self._now()
        for deployment in self._deployments():
            labels = [deployment.group, deployment.id]
            healthy.add_metric(labels, 1.0 if deployment.is_healthy(now) else 0.0)
            busy.add_metric(labels, float(deployment.in_flight))
            for name, value in engine_values(deployment):
                engine[name].add_metric(labels, value)
        yield healthy
        yield busy
        yield from engine.values()


class GroupMetrics:
    """One model group's series for one endpoint, looked up once: finding a child by its labels
    costs more than updating it, and every request updates seven."""

    def __init__(self, metrics: Metrics, group: str, endpoint: str) -> None:
        self.in_flight = metrics.in_flight.labels(group)
        self.latency = {
            False: metrics.latency.labels(group, endpoint, "false"),
            True: metrics.latency.labels(group, endpoint, "true"),
        }
        self.ttft = metrics.ttft.labels(group)
        self.overhead = metrics.overhead.labels(group)
        self.prompt_tokens = metrics.prompt_tokens.labels(group)
        self.completion_tokens = metrics.completion_tokens.labels(group)
        self._requests_family = metrics.requests
        self._group = group
        self._endpoint = endpoint
        self._requests: dict[tuple[str, int], Counter] = {}

    def requests(self, deployment: str, status_code: int) -> Counter:
        """The requests counter of ``deployment`` for the class of ``status_code``."""
        key = (deployment, status_code // 100)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self._requests_family.labels(
                self._group, self._endpoint, deployment, status_class(status_code)
            )
        return child


MAX_TEAM_LABELS = 100


class Metrics:
    """The gateway's metrics on a dedicated registry."""

    def __init__(
        self,
        deployments: Callable[[], Iterable[Deployment]],
        now: Callable[[], float],
        multiprocess_dir: str | None = None,
    ) -> None:
        self.multiprocess_dir = (
            multiprocess_dir if multiprocess_dir is not None else os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        )
        self._deployments = deployments
        self._now = now
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by model group, endpoint, deployment and status class",
            ["model_group", "endpoint", "deployment", "status_class"],
            registry=r,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time from request received to last byte sent",
            ["model_group", "endpoint", "stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "gateway_time_to_first_token_seconds",
            "Time from request received to the first streamed chunk",
            ["model_group"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "Time spent in the gateway: total minus time waiting on deployments and backoff",
            ["model_group"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "gateway_prompt_tokens", "Prompt tokens reported in usage", ["model_group"], registry=r
        )
        self.completion_tokens = Counter(
            "gateway_completion_tokens", "Completion tokens reported in usage", ["model_group"], registry=r
        )
        self.in_flight = Gauge(
            "gateway_in_flight_requests",
            "Requests being served now",
            ["model_group"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.retries = Counter("gateway_retries", "Attempts retried on another try", ["model_group"], registry=r)
        self.fallbacks = Counter(
            "gateway_fallbacks", "Requests moved to a fallback group", ["model_group", "fallback_group"], registry=r
        )
        self.cooldowns = Counter(
            "gateway_cooldowns", "Deployments taken out of rotation", ["model_group", "deployment"], registry=r
        )
        self.rate_limited = Counter(
            "gateway_rate_limited", "Requests refused with 429, by reason", ["reason"], registry=r
        )
        self.shared_limits_up = Gauge(
            "gateway_shared_limits_up",
            "1 while limits are shared through Redis, 0 while this process falls back to local limits",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.shared_limits_errors = Counter(
            "gateway_shared_limits_errors", "Redis calls that failed or timed out", registry=r
        )
        self.engine_scrape_failures = Counter(
            "gateway_engine_scrape_failures",
            "Scrapes of a vLLM engine's /metrics that failed or timed out",
            ["model_group", "deployment"],
            registry=r,
        )
        self.spend = Counter(
            "gateway_spend",
            "Cost of the requests answered (USD), from their usage and the models' prices",
            ["model_group", "team"],
            registry=r,
        )
        self.managed_keys = Gauge(
            "gateway_managed_keys", "Managed keys cached by this process", registry=r, multiprocess_mode="livemax"
        )
        self.spend_flush_failures = Counter(
            "gateway_spend_flush_failures", "Spend batches the keys database could not take (kept, retried)", registry=r
        )
        self._teams: set[str] = set()
        self._groups: dict[tuple[str, str], GroupMetrics] = {}
        ProcessCollector(registry=r)
        if not self.multiprocess_dir:
            r.register(_DeploymentCollector(deployments, now))
            return
        # Workers share their values through files; live deployment state is copied into gauges.
        self._healthy = Gauge(
            "gateway_deployment_healthy",
            "1 when the deployment is in rotation and answers health probes, 0 otherwise",
            ["model_group", "deployment"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self._busy = Gauge(
            "gateway_deployment_in_flight",
            "Requests a deployment is serving now",
            ["model_group", "deployment"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self._engine = {
            name: Gauge(name, text, ["model_group", "deployment"], registry=r, multiprocess_mode="livemax")
            for name, text, _ in ENGINE_SERIES
        }
        self._exposition = CollectorRegistry()
        MultiProcessCollector(self._exposition, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        ProcessCollector(registry=self._exposition)

    def spent(self, model_group: str, team: str | None, cost: float) -> None:
        """Count a request's cost; teams past the first ``MAX_TEAM_LABELS`` share the label ``other``."""
        label = team or "none"
        if label not in self._teams:
            if len(self._teams) >= MAX_TEAM_LABELS:
                label = "other"
            else:
                self._teams.add(label)
        self.spend.labels(model_group, label).inc(cost)

    def group(self, name: str, endpoint: str = "chat/completions") -> GroupMetrics:
        """The series of model group ``name`` on ``endpoint`` (groups come from the config and
        endpoints from gateway.endpoints, so they are few)."""
        found = self._groups.get((name, endpoint))
        if found is None:
            found = self._groups[name, endpoint] = GroupMetrics(self, name, endpoint)
        return found

    def refresh(self) -> None:
        """Copy this worker's live deployment state into the shared gauges (multiprocess mode)."""
        if not self.multiprocess_dir:
            return
        now = self._now()
        for deployment in self._deployments():
            self._healthy.labels(deployment.group, deployment.id).set(1.0 if deployment.is_healthy(now) else 0.0)
            self._busy.labels(deployment.group, deployment.id).set(float(deployment.in_flight))
            for name, value in engine_values(deployment):
                self._engine[name].labels(deployment.group, deployment.id).set(value)

    def render(self) -> bytes:
        """The text exposition of every metric (of every worker, in multiprocess mode)."""
        if not self.multiprocess_dir:
            return generate_latest(self.registry)
        self.refresh()
        return generate_latest(self._exposition)


def status_class(status_code: int) -> str:
    """``404`` -> ``"4xx"``."""
    return f"{status_code // 100}xx"
