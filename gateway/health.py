"""Readiness and group health.

``/ready`` says whether this process can serve: it has started (config loaded, the SDK
imported, per-pod names resolved) and each group named in ``gateway_settings.ready_requires``
(none by default) has a deployment that answers. A group being down, local or cloud, shows in
``/health/groups`` and in ``gateway_deployment_healthy``, not in readiness: a vLLM outage or
its first model load must not take every gateway replica out of its Service, which would
stop the cloud groups and the video service too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from gateway.deployment import Deployment
from gateway.routing import Router
from gateway.upstream import UpstreamClient


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
        self.requires = set(requires or ())
        self._probed: dict[str, tuple[float, asyncio.Task[str | None]]] = {}

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """Whether this process can serve its required groups, with the findings for those groups."""
        groups = await self._report(self.requires)
        ready = all(entry["ready"] for entry in groups.values())
        return ready, {"status": "ready" if ready else "not ready", "model_groups": groups}

    async def groups(self, visible: Callable[[str], bool]) -> dict[str, Any]:
        """The health of each group ``visible`` admits: reachable and cooling deployments, and
        each one's last error."""
        return {"model_groups": await self._report({name for name in self._router.groups if visible(name)})}

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
            if deployment.engine is not None:  # what a vLLM engine says of itself (gateway.engine_stats)
                entry.setdefault("engines", {})[deployment.id] = deployment.engine.report()
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
