"""Per-pod endpoints: a deployment whose ``api_base`` host is a Kubernetes headless Service
(``model_info.per_pod: true``) becomes one deployment per address the name resolves to.

Each pod then has its own routing weight, in-flight count, ``max_parallel_requests``,
cooldown and metrics (its id is ``<deployment id>@<address>``). The name is resolved again
every ``gateway_settings.dns_refresh_seconds``: pods that appear get traffic, pods that
disappear leave the rotation while their requests in flight finish normally. When a lookup
fails, the last known pods stay; before the first lookup succeeds, the name itself serves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

from gateway.deployment import Deployment
from gateway.routing import Router

log = logging.getLogger("gateway.discovery")

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (A and AAAA records), sorted."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _host_and_port(api_base: str) -> tuple[str, int]:
    parts = urlsplit(api_base)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _with_address(api_base: str, address: str) -> str:
    parts = urlsplit(api_base)
    host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class EndpointDiscovery:
    """Keeps the router's per-pod deployments in step with DNS."""

    def __init__(self, router: Router, resolver: Resolver | None = None, refresh_s: float = 10.0) -> None:
        self._router = router
        self._resolve = resolver or system_resolver
        self._refresh_s = refresh_s
        # Each per-pod template keeps its place; the pods found for it replace it in its group.
        self._templates = [d for g in router.groups.values() for d in g.deployments if d.per_pod]
        self._pods: dict[str, dict[str, Deployment]] = {t.id: {} for t in self._templates}

    @property
    def enabled(self) -> bool:
        return bool(self._templates)

    async def refresh(self) -> None:
        """Resolve every per-pod name once and update the groups."""
        for template in self._templates:
            host, port = _host_and_port(template.api_base)
            try:
                addresses = await self._resolve(host, port)
            except OSError as exc:
                log.warning("cannot resolve per-pod endpoints", extra={"deployment": template.id, "error": str(exc)})
                continue
            except Exception:
                log.exception("resolving per-pod endpoints failed", extra={"deployment": template.id})
                continue
            if addresses:
                self._apply(template, addresses)

    def _apply(self, template: Deployment, addresses: list[str]) -> None:
        known = self._pods[template.id]
        current = {a: known.get(a) or self._pod(template, a) for a in addresses}
        added, removed = set(current) - set(known), set(known) - set(current)
        self._pods[template.id] = current
        group = self._router.groups[template.group]
        others = [d for d in group.deployments if d is not template and d not in known.values()]
        group.deployments[:] = others + list(current.values())
        slots = self._router.host_slots
        if slots is not None:
            for address in removed:
                slots.forget(known[address].id)
        if added or removed:
            log.info(
                "per-pod endpoints changed",
                extra={"deployment": template.id, "added": sorted(added), "removed": sorted(removed)},
            )

    @staticmethod
    def _pod(template: Deployment, address: str) -> Deployment:
        return dataclasses.replace(
            template,
            id=f"{template.id}@{address}",
            api_base=_with_address(template.api_base, address),
            per_pod=False,
            in_flight=0,
            cooldown_until=0.0,
            latency_s=None,
            last_error=None,
            probe_failure=None,
            _fails=type(template._fails)(),
        )

    async def run(self) -> None:
        """Refresh forever, every ``refresh_s`` seconds; a failed refresh is logged and the next
        one tried (the endpoints found last stay in use meanwhile)."""
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except Exception:
                log.exception("refreshing per-pod endpoints failed; trying again")
