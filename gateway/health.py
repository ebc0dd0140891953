"""Readiness: every model group has at least one deployment that answers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.routing import Router
from gateway.upstream import UpstreamClient


class Readiness:
    """Probes deployments' ``/models``, caching the verdict for ``cache_s`` seconds."""

    def __init__(self, router: Router, client: UpstreamClient, probe_timeout: float, cache_s: float) -> None:
        self._router = router
        self._client = client
        self._probe_timeout = probe_timeout
        self._cache_s = cache_s
        self._lock = asyncio.Lock()
        self._checked_at = float("-inf")
        self._verdict: tuple[bool, dict[str, Any]] = (False, {})

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """Whether the gateway can serve every group, and the per-deployment findings."""
        async with self._lock:
            if time.monotonic() - self._checked_at >= self._cache_s:
                self._verdict = await self._probe_all()
                self._checked_at = time.monotonic()
            return self._verdict

    async def _probe_all(self) -> tuple[bool, dict[str, Any]]:
        deployments = [d for g in self._router.groups.values() for d in g.deployments]
        reasons = await asyncio.gather(*(self._client.probe(d, self._probe_timeout) for d in deployments))
        groups: dict[str, Any] = {}
        for deployment, reason in zip(deployments, reasons, strict=True):
            if reason is None and self._router.is_cooling(deployment):
                reason = "cooling down after failures"
            entry = groups.setdefault(deployment.group, {"ready": False, "deployments": {}})
            entry["deployments"][deployment.id] = "ok" if reason is None else reason
            entry["ready"] = entry["ready"] or reason is None
        ready = all(entry["ready"] for entry in groups.values())
        return ready, {"status": "ready" if ready else "not ready", "model_groups": groups}
