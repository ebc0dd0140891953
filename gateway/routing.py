"""Model groups, wildcard matching, deployment choice, admission, cooldowns and fallbacks."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.config import ProxyConfig, RouterSettings, RoutingStrategy
from gateway.deployment import Deployment
from gateway.deployments import build_deployments
from gateway.engine_aware import Affinity, EngineAware
from gateway.errors import NoDeploymentAvailable, RateLimited

if TYPE_CHECKING:  # the limits modules load Redis's client: only an app with limits needs them
    from gateway.limits.host import HostSlots
    from gateway.limits.shared import KeyLimits, SharedLimits

SHARED_POLL_S = 0.02  # how often a request waiting for a slot asks Redis again


@dataclass(eq=False)
class ModelGroup:
    """Deployments that serve one ``model_name``, exact or wildcard."""

    name: str
    deployments: list[Deployment]
    pattern: re.Pattern[str] | None = None
    strategy: RoutingStrategy = "simple-shuffle"
    waiters: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def context_tokens(self) -> int | None:
        """The context every deployment of the group can take, when each one declares it."""
        known = [d.context_tokens for d in self.deployments if d.context_tokens is not None]
        return min(known) if known and len(known) == len(self.deployments) else None

    @property
    def supports_vision(self) -> bool:
        """Whether any deployment of the group takes images."""
        return any(d.supports_vision for d in self.deployments)

    @property
    def supports_video(self) -> bool:
        """Whether every deployment of the group takes video items (a clip may go to any of them)."""
        return bool(self.deployments) and all(d.supports_video for d in self.deployments)


@dataclass(frozen=True)
class Route:
    """A group chosen for a requested model, with the part a wildcard matched."""

    group: ModelGroup
    wildcard_match: str | None = None


class Router:
    """Chooses deployments by LiteLLM's routing semantics."""

    def __init__(
        self,
        config: ProxyConfig,
        env: Mapping[str, str],
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings: RouterSettings = config.router_settings
        self.shared: SharedLimits | None = None  # set by the app when Redis is configured
        self.host_slots: HostSlots | None = None  # set by the app under --workers N (gateway.limits.host)
        self._lease_prefix = os.urandom(6).hex()
        self._leases = itertools.count()
        self._rng = rng or random.Random()
        self._clock = clock
        self.engine_aware = EngineAware(self.settings.routing_strategy_args, self.settings.engine_stats_interval)
        self.groups: dict[str, ModelGroup] = {}
        for name, deployments in build_deployments(config, env).items():
            strategy = self.settings.routing_strategy or default_strategy(deployments)
            self.groups[name] = ModelGroup(name, deployments, _wildcard_pattern(name), strategy)
        self._wildcards = sorted(
            (g for g in self.groups.values() if g.pattern is not None),
            key=lambda g: (g.name.count("*"), -len(g.name)),
        )
        self._fallbacks: dict[str, list[str]] = {}
        for mapping in self.settings.fallbacks:
            for source, targets in mapping.items():
                self._fallbacks.setdefault(source, []).extend(targets)
        # The groups whose requests (or their fallbacks') are routed engine-aware: only theirs are hashed.
        self._engine_aware_routes = {
            name: any(
                self.groups[n].strategy == "engine-aware"
                for n in [name, *(self._fallbacks.get(name) or self.settings.default_fallbacks)]
                if n in self.groups
            )
            for name in self.groups
        }

    def engine_aware_for(self, group: ModelGroup) -> bool:
        """Whether a request for ``group`` may be routed engine-aware (by it or a fallback group)."""
        return self._engine_aware_routes.get(group.name, False)

    def resolve(self, model: str) -> Route | None:
        """The exact group named ``model``, else the most specific matching wildcard group."""
        group = self.groups.get(model)
        if group is not None and group.pattern is None:
            return Route(group)
        for candidate in self._wildcards:
            assert candidate.pattern is not None
            match = candidate.pattern.fullmatch(model)
            if match:
                return Route(candidate, match.group(1))
        return None

    def plan(self, route: Route, has_images: bool, where: Callable[[Deployment], bool] | None = None) -> list[Route]:
        """The route followed by its fallback groups; image requests skip groups without vision,
        and with ``where``, groups with no deployment it admits."""
        names = self._fallbacks.get(route.group.name) or list(self.settings.default_fallbacks)
        routes = [route]
        for name in names:
            group = self.groups[name]
            if group is route.group or (has_images and not group.supports_vision):
                continue
            if where is not None and not any(where(d) for d in group.deployments):
                continue
            routes.append(Route(group))
        return routes

    async def acquire(
        self,
        group: ModelGroup,
        exclude: set[str],
        queue_timeout: float,
        caller: KeyLimits | None = None,
        lease: str | None = None,
        on_wait: Callable[[float], None] | None = None,
        where: Callable[[Deployment], bool] | None = None,
        affinity: Affinity | None = None,
    ) -> Deployment:
        """Reserve a deployment of ``group``, waiting up to ``queue_timeout`` for a free slot.

        With shared limits (and a ``lease`` naming this attempt), Redis admits the request:
        the caller's rate, the deployment's cooldown, concurrency and rate across every
        gateway process. While Redis is away, this process's own limits apply. With ``where``,
        only the deployments it admits are considered; ``affinity`` is what ``engine-aware``
        routing knows of the request (gateway.engine_aware).
        """
        deadline = self._clock() + queue_timeout
        eligible = group.deployments if where is None else [d for d in group.deployments if where(d)]
        if not eligible:
            raise NoDeploymentAvailable(f"no deployment of model '{group.name}' can serve this request")
        while True:
            now = self._clock()
            active = [d for d in eligible if not d.is_cooling(now)]
            if not active:
                wait = min(d.cooldown_until for d in eligible) - now
                raise NoDeploymentAvailable(
                    f"every deployment of model '{group.name}' is cooling down after failures",
                    retry_after=wait,
                )
            shared = self.shared if self.shared is not None and self.shared.available and lease else None
            if shared is None:
                if caller is not None:
                    caller.check_local()
                    caller = None
                free = [d for d in active if d.has_capacity()]
                if free:
                    untried = [d for d in free if d.id not in exclude] or free
                    chosen_local = self._take_local(group, untried, lease, affinity)
                    if chosen_local is not None:
                        return self._taken(group, chosen_local, affinity)
            else:
                assert lease is not None
                chosen_shared = await self._admit_shared(shared, group, active, exclude, caller, lease, affinity)
                if chosen_shared is not None:
                    return self._taken(group, chosen_shared, affinity)
                if not shared.available:
                    continue  # Redis just failed: admit on local limits at once
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise RateLimited(
                    f"model '{group.name}' is at its concurrency limit; try again shortly",
                    code="model_busy",
                    retry_after=1.0,
                )
            waiting_since = self._clock()
            if (shared is not None and shared.available) or self.host_slots is not None:
                await asyncio.sleep(min(remaining, SHARED_POLL_S))  # slots free up in other processes too
            else:
                await self._wait_for_release(group, remaining)
            if on_wait is not None:
                on_wait(self._clock() - waiting_since)  # queueing, not the gateway's own cost

    async def _admit_shared(
        self,
        shared: SharedLimits,
        group: ModelGroup,
        active: list[Deployment],
        exclude: set[str],
        caller: KeyLimits | None,
        lease: str,
        affinity: Affinity | None,
    ) -> Deployment | None:
        """Try the group's deployments in routing order until Redis admits one; None when all are full.

        A deployment this process alone already fills is not asked for (after a Redis outage,
        Redis does not know the requests admitted locally meanwhile)."""
        candidates = [d for d in active if d.has_capacity()]
        rpm_waits: list[float] = []
        while candidates:
            chosen = self._choose(group, [d for d in candidates if d.id not in exclude] or candidates, affinity)
            verdict = await shared.admit(chosen, caller, lease)
            if verdict.outcome == "ok":
                return chosen
            if verdict.outcome == "unavailable":
                return None  # the caller's loop continues on local limits
            if verdict.outcome in ("key_rpm", "key_tpm"):
                unit = "requests" if verdict.outcome == "key_rpm" else "tokens"
                raise RateLimited(f"this API key is over its {unit}-per-minute limit", retry_after=verdict.wait_s)
            if verdict.outcome == "cooling":
                chosen.cooldown_until = max(chosen.cooldown_until, self._clock() + verdict.wait_s)
            if verdict.outcome == "deployment_rpm":
                rpm_waits.append(verdict.wait_s)
            candidates.remove(chosen)
        if rpm_waits and len(rpm_waits) == len(active):  # every deployment is over its rate
            raise RateLimited(
                f"model '{group.name}' is at its requests-per-minute limit",
                code="model_rpm_exceeded",
                retry_after=min(rpm_waits),
            )
        return None

    def _take_local(
        self, group: ModelGroup, candidates: list[Deployment], lease: str | None, affinity: Affinity | None
    ) -> Deployment | None:
        """A deployment within this process's limits (and, under workers, a host slot for
        ``lease``); None when the host's slots are all taken; RateLimited when every candidate is
        over its requests per minute."""
        remaining = list(candidates)
        host_busy = False
        while remaining:
            chosen = self._choose(group, remaining, affinity)
            remaining.remove(chosen)
            slots = self.host_slots
            if slots is not None and lease is not None and not slots.take(chosen, lease):
                host_busy = True
                continue
            if chosen.rpm is None or chosen.rpm.try_acquire():
                return chosen
            if slots is not None and lease is not None:
                slots.give_back(lease)
        if host_busy:
            return None
        waits = [d.rpm.retry_after() for d in candidates if d.rpm is not None]
        raise RateLimited(
            f"model '{group.name}' is at its requests-per-minute limit",
            code="model_rpm_exceeded",
            retry_after=min(waits, default=1.0),
        )

    def _taken(self, group: ModelGroup, chosen: Deployment, affinity: Affinity | None) -> Deployment:
        chosen.in_flight += 1
        if group.strategy == "engine-aware":
            self.engine_aware.taken(chosen, affinity)
        return chosen

    def _choose(self, group: ModelGroup, candidates: list[Deployment], affinity: Affinity | None) -> Deployment:
        if len(candidates) == 1:
            return candidates[0]
        strategy = group.strategy
        if strategy == "engine-aware":
            return self.engine_aware.choose(candidates, affinity, self._clock())
        if strategy == "least-busy":
            least = min(d.in_flight for d in candidates)
            return self._rng.choice([d for d in candidates if d.in_flight == least])
        if strategy == "latency-based-routing":
            unmeasured = [d for d in candidates if d.latency_s is None]
            if unmeasured:
                return self._rng.choice(unmeasured)
            return min(candidates, key=lambda d: d.latency_s or 0.0)
        return self._rng.choices(candidates, weights=[d.weight for d in candidates])[0]

    async def _wait_for_release(self, group: ModelGroup, timeout: float) -> None:
        event = group.released
        group.waiters += 1
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            group.waiters -= 1

    def release(self, deployment: Deployment, lease: str | None = None) -> None:
        """Return a slot taken by ``acquire`` and wake one round of waiters."""
        deployment.in_flight -= 1
        if self.shared is not None and lease:
            self.shared.release(deployment, lease)
        if self.host_slots is not None and lease:
            self.host_slots.give_back(lease)
        group = self.groups[deployment.group]
        if group.waiters:
            event, group.released = group.released, asyncio.Event()
            event.set()

    def renew(self, deployment: Deployment, lease: str | None) -> None:
        """Keep a running stream's shared slot (its lease would expire otherwise)."""
        if self.shared is not None and lease:
            self.shared.renew(deployment, lease)

    def new_lease(self) -> str:
        """A name for one attempt's slot (shared or host), unique across processes."""
        if self.shared is not None:
            return self.shared.new_lease()
        return f"lease:{self._lease_prefix}:{next(self._leases)}"

    def record_failure(self, deployment: Deployment) -> bool:
        """Count a failed attempt; True when the deployment now cools down."""
        return deployment.record_failure(self.settings.allowed_fails, self.settings.cooldown_time, self._clock())

    def is_cooling(self, deployment: Deployment) -> bool:
        """Whether ``deployment`` is out of rotation now."""
        return deployment.is_cooling(self._clock())


def default_strategy(deployments: list[Deployment]) -> RoutingStrategy:
    """``engine-aware`` for a group of vLLM engines only (their state is scraped), else LiteLLM's default."""
    vllm = bool(deployments) and all(d.provider == "hosted_vllm" and not d.sdk for d in deployments)
    return "engine-aware" if vllm else "simple-shuffle"


def _wildcard_pattern(name: str) -> re.Pattern[str] | None:
    if "*" not in name:
        return None
    head, _, tail = name.partition("*")
    return re.compile(re.escape(head) + "(.*)" + re.escape(tail).replace(r"\*", ".*"))
