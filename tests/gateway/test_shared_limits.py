"""Limits shared through a real Redis by three gateway processes: a key's rpm, a deployment's
max_parallel_requests, cooldowns; Redis dying mid-load never causes a 5xx, and comes back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.limits.shared import PREFIX
from tests.conftest import UpstreamFactory, deployment
from tests.fakes import FakeUpstream
from tests.gateway_process import GatewayProcess
from tests.metrics_samples import sample
from tests.redis_server import RedisServer, redis_server
from tests.waiting import eventually

__all__ = ["redis_server"]

pytestmark = [pytest.mark.service, pytest.mark.timeout(180)]
KEY = "sk-shared-0123456789"
BODY = {"model": "vision", "messages": [{"role": "user", "content": "hi"}]}


def _config(fake: FakeUpstream, redis: RedisServer, **params: Any) -> dict[str, Any]:
    return {
        "model_list": [deployment("vision", fake, id="vllm", **params)],
        "router_settings": {"redis_host": "127.0.0.1", "redis_port": redis.port, "num_retries": 1},
        "gateway_settings": {"api_keys": [{"key": KEY, "rpm": 60}], "queue_timeout": 10, "retry_backoff": 0.001},
    }


async def _replicas(tmp_path: Path, config: dict[str, Any], count: int = 3) -> list[GatewayProcess]:
    gateways = [GatewayProcess(tmp_path / f"gateway-{i}", config) for i in range(count)]
    await asyncio.gather(*(g.wait_up() for g in gateways))
    return gateways


REFUSALS: list[str] = []


async def _post(client: httpx.AsyncClient, url: str) -> int:
    response = await client.post(f"{url}/v1/chat/completions", json=BODY)
    if response.status_code != 200:
        REFUSALS.append(response.text)
    return response.status_code


async def test_a_keys_rpm_holds_across_three_replicas(
    upstream: UpstreamFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    fake = await upstream("vllm")
    gateways = await _replicas(tmp_path, _config(fake, redis_server))
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
            statuses = await asyncio.gather(*(_post(client, gateways[i % 3].url) for i in range(120)))
        assert 58 <= statuses.count(200) <= 62, statuses
        assert set(statuses) == {200, 429}
        assert len(fake.bodies) == statuses.count(200)
        calls = redis_server.command("INFO", "commandstats").decode()
        admissions = int(calls.split("cmdstat_evalsha:calls=")[1].split(",")[0])
        assert admissions <= 130, "about one Redis round trip per request (plus a few flushes)"
    finally:
        for gateway in gateways:
            gateway.stop()


async def test_max_parallel_requests_holds_across_three_replicas(
    upstream: UpstreamFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    fake = await upstream("vllm", delay_s=0.2)
    config = _config(fake, redis_server, max_parallel_requests=4)
    config["gateway_settings"]["api_keys"] = []
    gateways = await _replicas(tmp_path, config)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            statuses = await asyncio.gather(*(_post(client, gateways[i % 3].url) for i in range(24)))
        assert statuses == [200] * 24
        assert fake.max_in_flight == 4, "never more than 4 in flight from the three replicas together"
    finally:
        for gateway in gateways:
            gateway.stop()


async def test_a_cooldown_seen_by_one_replica_holds_for_all(
    upstream: UpstreamFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    broken = await upstream("broken", fail_status=500)
    healthy = await upstream("healthy")
    config = {
        "model_list": [deployment("vision", broken, id="broken"), deployment("vision", healthy, id="healthy")],
        "router_settings": {
            "redis_host": "127.0.0.1",
            "redis_port": redis_server.port,
            "allowed_fails": 0,
            "cooldown_time": 60,
            "routing_strategy": "simple-shuffle",
        },
        "gateway_settings": {"retry_backoff": 0.001},
    }
    first, second = await _replicas(tmp_path, config, count=2)

    async def published() -> bool:
        return redis_server.command("EXISTS", f"{PREFIX}deployment:broken:cooldown").startswith(b":1")

    try:
        async with httpx.AsyncClient(timeout=30) as client:
            while not broken.bodies:  # until the first replica tried the broken one (and cooled it down)
                assert await _post(client, first.url) == 200
            # The cooldown is published without blocking the request: wait until Redis holds it.
            await eventually(published, what="the first replica never published the cooldown")
            tried = len(broken.bodies)
            for _ in range(20):
                assert await _post(client, second.url) == 200
        assert len(broken.bodies) == tried, "the second replica never sent to the cooling deployment"
    finally:
        first.stop()
        second.stop()


async def test_redis_dying_mid_load_causes_no_5xx_and_shared_limits_come_back(
    upstream: UpstreamFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    fake = await upstream("vllm", delay_s=0.01)
    config = _config(fake, redis_server, max_parallel_requests=8)
    config["gateway_settings"]["api_keys"] = []
    (gateway,) = await _replicas(tmp_path, config, count=1)
    statuses: list[int] = []
    try:
        async with httpx.AsyncClient(timeout=30) as client:

            async def load(seconds: float) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    statuses.extend(await asyncio.gather(*(_post(client, gateway.url) for _ in range(4))))

            await load(0.5)
            redis_server.kill()
            await load(1.5)
            metrics = (await client.get(f"{gateway.url}/metrics")).text
            assert sample(metrics, "gateway_shared_limits_up") == 0.0
            assert (sample(metrics, "gateway_shared_limits_errors_total") or 0) >= 1
            redis_server.start()
            deadline = time.monotonic() + 20
            while True:
                await load(0.3)
                metrics = (await client.get(f"{gateway.url}/metrics")).text
                if sample(metrics, "gateway_shared_limits_up") == 1.0:
                    break
                assert time.monotonic() < deadline, "shared limits did not come back after Redis restarted"
        assert all(status == 200 for status in statuses), REFUSALS[-3:]
        assert fake.max_in_flight <= 8
    finally:
        gateway.stop()
