"""Readiness and group health.

``/ready`` says whether this process can serve what it must: the groups named in
``gateway_settings.ready_requires`` (by default those served only by local ``hosted_vllm/``
deployments) each have a deployment that answers. A cloud group being down shows in
``/health/groups`` and in ``gateway_deployment_healthy``, never in readiness, so a provider
outage does not take every gateway pod out of its Service.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from gateway.deployment import Deployment
from gateway.routing import Router
from gateway.upstream import UpstreamClient

LOCAL_PROVIDERS = frozenset({"hosted_vllm"})


def default_ready_requires(router: Router) -> set[str]:
    """The groups every deployment of which is local: without them this gateway is useless."""
    return {
        name for name, group in router.groups.items() if all(d.provider in LOCAL_PROVIDERS for d in group.deployments)
    }


class Readiness:
    """Probes deployments' ``/models``, each verdict cached for ``cache_s`` seconds."""

    def __init__(
        self,
        router: Router,
        client: UpstreamClient,
        probe_timeout: float,
        cache_s: float,
        requires: Iterable[str] | None = None,
    ) -> None:
        self._router = router
        self._client = client
        self._probe_timeout = probe_timeout
        self._cache_s = cache_s
        self.requires = set(requires) if requires is not None else default_ready_requires(router)
        self._probed: dict[str, tuple[float, asyncio.Task[str | None]]] = {}

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """Whether this process can serve its required groups, with the findings for those groups."""
        groups = await self._report(self.requires)
        ready = all(entry["ready"] for entry in groups.values())
        return ready, {"status": "ready" if ready else "not ready", "model_groups": groups}

    async def groups(self) -> dict[str, Any]:
        """Every group's health: reachable and cooling deployments, and each one's last error."""
        return {"model_groups": await self._report(set(self._router.groups))}

    async def _report(self, names: set[str]) -> dict[str, Any]:
        deployments = [d for name in sorted(names) for d in self._router.groups[name].deployments]
        reasons = await asyncio.gather(*(self._probe(d) for d in deployments))
        report: dict[str, Any] = {}
        for deployment, reason in zip(deployments, reasons, strict=True):
            cooling = self._router.is_cooling(deployment)
            entry = report.setdefault(
                deployment.group,
                {
                    "ready": False,
                    "required_for_ready": deployment.group in self.requires,
                    "healthy": 0,
                    "cooling_down": 0,
                    "deployments": {},
                },
            )
            state = "cooling down after failures" if cooling else reason or "ok"
            entry["deployments"][deployment.id] = state
            entry["healthy"] += state == "ok"
            entry["cooling_down"] += cooling
            entry["ready"] = entry["ready"] or state == "ok"
            if deployment.last_error is not None:
                entry.setdefault("last_errors", {})[deployment.id] = deployment.last_error
        return report

    async def _probe(self, deployment: Deployment) -> str | None:
        """The deployment's probe verdict (None: it answers), probing at most once per ``cache_s``."""
        now = time.monotonic()
        cached = self._probed.get(deployment.id)
        if cached is None or now - cached[0] >= self._cache_s:
            cached = (now, asyncio.ensure_future(self._client.probe(deployment, self._probe_timeout)))
            self._probed[deployment.id] = cached
        reason = await asyncio.shield(cached[1])
        deployment.probe_failure = reason
        return reason
