"""``gateway serve --workers N``: several processes on one port, metrics summed over them, limits divided."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import UpstreamFactory, deployment
from tests.gateway_process import GatewayProcess
from tests.metrics_samples import sample

pytestmark = [pytest.mark.service, pytest.mark.timeout(120)]
KEY = "sk-workers-0123456789"
ENGINE_METRICS = '# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{engine="0"} 3.0\n'


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


async def test_workers_share_a_port_sum_their_metrics_and_divide_limits(
    upstream: UpstreamFactory, tmp_path: Path
) -> None:
    fake = await upstream("vllm")
    config = {
        "model_list": [deployment("vision", fake)],
        "gateway_settings": {"api_keys": [{"key": KEY, "rpm": 10}]},
    }
    gateway = GatewayProcess(tmp_path, config, workers=2)
    try:
        await gateway.wait_up()
        assert len(_children(gateway.process.pid)) >= 2, "two worker processes serve the port"
        body = {"model": "vision", "messages": [{"role": "user", "content": "hi"}]}
        statuses = []
        # A new connection per request, so the kernel spreads them over the workers.
        for _ in range(30):
            async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {KEY}"}) as client:
                statuses.append((await client.post("/v1/chat/completions", json=body)).status_code)
        admitted = statuses.count(200)
        # rpm 10 divided between two workers: 5 each, whichever worker a request reached.
        assert 5 <= admitted <= 11, statuses
        assert set(statuses) == {200, 429}
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            for _ in range(4):  # whichever worker answers the scrape, it reports every worker's counts
                metrics = (await client.get("/metrics")).text
                assert sample(metrics, "gateway_requests_total", model_group="vision", status_class="2xx") == admitted
    finally:
        gateway.stop()


async def test_the_access_log_has_one_whole_json_line_per_request_across_workers(
    upstream: UpstreamFactory, tmp_path: Path
) -> None:
    import asyncio

    import orjson

    fake = await upstream("vllm")
    gateway = GatewayProcess(tmp_path, {"model_list": [deployment("vision", fake)]}, workers=2)
    try:
        await gateway.wait_up()
        body = {"model": "vision", "messages": [{"role": "user", "content": "hi"}]}
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=gateway.url, limits=limits) as client:
            responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(200)))
        sent = {r.headers["x-request-id"] for r in responses if r.status_code == 200}
        assert len(sent) == 200
    finally:
        gateway.stop()
    entries = [orjson.loads(line) for line in gateway.log_path.read_text().splitlines()]  # every line is whole JSON
    access = [e for e in entries if e.get("logger") == "gateway.access"]
    assert {e["request_id"] for e in access} == sent
    assert all(e["status"] == 200 and e["model_group"] == "vision" for e in access)


async def test_max_parallel_requests_holds_across_workers_without_redis(
    upstream: UpstreamFactory, tmp_path: Path
) -> None:
    import asyncio

    fake = await upstream("vllm", delay_s=0.1)
    config = {
        "model_list": [deployment("vision", fake, max_parallel_requests=1)],
        "gateway_settings": {"queue_timeout": 30},
    }
    gateway = GatewayProcess(tmp_path, config, workers=3)
    try:
        await gateway.wait_up()
        body = {"model": "vision", "messages": [{"role": "user", "content": "hi"}]}

        async def one() -> int:
            # A connection each, so the kernel spreads the requests over the workers.
            async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
                return (await client.post("/v1/chat/completions", json=body)).status_code

        statuses = await asyncio.gather(*(one() for _ in range(24)))
        assert statuses == [200] * 24
        assert fake.max_in_flight == 1, "three workers together went past max_parallel_requests: 1"
    finally:
        gateway.stop()


async def test_one_worker_scrapes_each_engine_for_all(upstream: UpstreamFactory, tmp_path: Path) -> None:
    """Three workers, one vLLM: it is asked about once an interval, not three times, and every
    worker reports its stats."""
    fake = await upstream("vllm", engine_metrics=ENGINE_METRICS)
    interval = 0.1
    config = {
        "model_list": [deployment("vision", fake)],
        "router_settings": {"engine_stats_interval": interval},
        "gateway_settings": {"api_keys": [{"key": KEY}]},
    }
    gateway = GatewayProcess(tmp_path, config, workers=3)
    try:
        await gateway.wait_up()
        for _ in range(100):  # until the workers asked (a new connection each) all report the engine
            reports = []
            for _ in range(6):
                async with httpx.AsyncClient(
                    base_url=gateway.url, headers={"Authorization": f"Bearer {KEY}"}
                ) as client:
                    group = (await client.get("/health/groups")).json()["model_groups"]["vision"]
                reports.append(next(iter(group.get("engines", {}).values()), {}))
            if all(report.get("waiting") == 3.0 for report in reports):
                break
            await asyncio.sleep(interval)
        else:
            raise AssertionError(f"not every worker reports the engine: {reports}")
        start, started = fake.engine_scrapes, time.monotonic()
        for _ in range(1000):  # until twelve more scrapes
            if fake.engine_scrapes >= start + 12:
                break
            await asyncio.sleep(interval / 4)
        elapsed = time.monotonic() - started
        # One scraper: 12 scrapes take about 12 intervals (three unshared workers: about 4).
        assert elapsed >= 12 * interval * 0.75, elapsed
    finally:
        gateway.stop()
