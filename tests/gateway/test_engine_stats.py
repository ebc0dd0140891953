"""Each vLLM engine's own /metrics, scraped by the gateway: shown in /health/groups and as
gateway_engine_* metrics; an engine that does not answer is unknown, never idle."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.deployment import Deployment
from gateway.engine_share import SharedScrapes
from gateway.engine_stats import EngineScraper, parse_engine_metrics
from tests.conftest import GatewayFactory, RunningGateway, UpstreamFactory, deployment
from tests.metrics_samples import sample

VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 7.0
vllm:num_requests_waiting{engine="1",model_name="m"} 2.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.5
# HELP vllm:prefix_cache_queries Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1000.0
vllm:prefix_cache_queries_created{engine="0",model_name="m"} 1.7e9
# HELP vllm:prefix_cache_hits Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 640.0
"""


@pytest.mark.unit
def test_a_vllm_exposition_is_read_summed_over_engines() -> None:
    stats = parse_engine_metrics(VLLM_METRICS, 12.0)
    assert (stats.running, stats.waiting) == (4.0, 9.0)
    assert stats.kv_cache_usage == 0.5  # the fullest engine
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (1000.0, 640.0)
    older = parse_engine_metrics("# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc 0.75\n", 1.0)
    assert older.kv_cache_usage == 0.75
    assert older.waiting is None  # not said: unknown, not zero


async def _engines(gw: RunningGateway, group: str, count: int) -> dict[str, Any]:
    """/health/groups' engine reports of ``group`` once ``count`` deployments have one."""
    for _ in range(200):
        report = (await gw.http.get("/health/groups")).json()["model_groups"][group]
        if len(report.get("engines", {})) >= count:
            return dict(report["engines"])
        await asyncio.sleep(0.025)
    raise AssertionError(f"no engine stats in {report}")


@pytest.mark.service
async def test_engines_are_scraped_shown_and_exported(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    busy = await upstream("vllm-a", engine_metrics=VLLM_METRICS)
    silent = await upstream("vllm-b")  # answers chat, not /metrics
    cloud = await upstream("nebius")
    gw = await gateway(
        {
            "model_list": [
                deployment("vision", busy, id="a"),
                deployment("vision", silent, id="b"),
                deployment("chat", cloud, model="nebius/m", api_key="nb"),
            ],
            "router_settings": {"engine_stats_interval": 0.05, "engine_stats_timeout": 0.5},
        }
    )
    engines = await _engines(gw, "vision", 2)
    assert engines["a"]["waiting"] == 9.0
    assert engines["a"]["running"] == 4.0
    assert engines["a"]["kv_cache_usage"] == 0.5
    assert engines["a"]["prefix_cache_hits"] == 640.0
    assert engines["b"]["error"] == "/metrics answered HTTP 404"
    assert "waiting" not in engines["b"]  # unknown, never taken for idle
    assert cloud.engine_scrapes == 0  # only vLLM engines are scraped
    metrics = (await gw.http.get("/metrics")).text
    assert sample(metrics, "gateway_engine_requests_waiting", deployment="a") == 9.0
    assert sample(metrics, "gateway_engine_kv_cache_usage", deployment="a") == 0.5
    assert sample(metrics, "gateway_engine_up", deployment="a") == 1.0
    assert sample(metrics, "gateway_engine_up", deployment="b") == 0.0
    assert sample(metrics, "gateway_engine_requests_waiting", deployment="b") is None
    assert (sample(metrics, "gateway_engine_scrape_failures_total", deployment="b") or 0) >= 1


async def _until_error(gw: RunningGateway, expected: str) -> None:
    for _ in range(200):
        engine = (await _engines(gw, "vision", 1))["a"]
        if engine.get("error") == expected:
            assert "waiting" not in engine
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"the engine report stayed {engine}")


@pytest.mark.service
async def test_an_engine_that_stops_answering_is_unknown_and_requests_still_flow(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    fake = await upstream("vllm", engine_metrics=VLLM_METRICS)
    gw = await gateway(
        {
            "model_list": [deployment("vision", fake, id="a")],
            "router_settings": {"engine_stats_interval": 0.05, "engine_stats_timeout": 0.1},
        }
    )
    assert (await _engines(gw, "vision", 1))["a"]["waiting"] == 9.0
    fake.behaviour.hang = True  # its /metrics no longer answers: bounded by engine_stats_timeout
    await _until_error(gw, "no answer in time")
    fake.behaviour.hang = False
    fake.behaviour.engine_metrics = None
    await _until_error(gw, "/metrics answered HTTP 404")
    answer = await gw.openai().chat.completions.create(model="vision", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content


@pytest.mark.unit
async def test_groups_on_one_engine_share_one_scrape() -> None:
    def vllm(group: str, api_base: str) -> Deployment:
        return Deployment(group, group, "hosted_vllm", "m", api_base, None, 1, 1, 1, True)

    one, two = vllm("vision", "http://10.0.0.1:8000/v1"), vllm("chat", "http://10.0.0.1:8000/v1/")
    other = vllm("big", "http://10.0.0.2:8000/v1")
    asked: list[str] = []

    async def fetch(deployment: Deployment, timeout: float) -> tuple[int, bytes]:
        asked.append(deployment.api_base)
        return 200, VLLM_METRICS.encode()

    await EngineScraper(lambda: [one, two, other], fetch).scrape_all()
    assert sorted(asked) == ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"]  # once an engine
    assert one.engine is two.engine
    assert two.engine is not None
    assert two.engine.waiting == 9.0


@pytest.mark.service
async def test_scraping_is_off_with_an_interval_of_zero(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    fake = await upstream("vllm", engine_metrics=VLLM_METRICS)
    gw = await gateway({"model_list": [deployment("vision", fake)], "router_settings": {"engine_stats_interval": 0}})
    await gw.openai().chat.completions.create(model="vision", messages=[{"role": "user", "content": "hi"}])
    assert "engines" not in (await gw.http.get("/health/groups")).json()["model_groups"]["vision"]
    assert fake.engine_scrapes == 0


@pytest.mark.unit
async def test_the_workers_of_a_host_scrape_each_engine_once(tmp_path: Path) -> None:
    """Under --workers N one worker scrapes an engine and publishes it; the others read it, take
    over when it is gone, and scrape for themselves while what it wrote is old."""

    def vllm() -> Deployment:
        return Deployment("vision", "vllm", "hosted_vllm", "m", "http://10.0.0.1:8000/v1", None, 1, 1, 1, True)

    asked: list[str] = []
    failures: list[str] = []
    answer = {"status": 200}

    def worker(name: str) -> tuple[EngineScraper, Deployment, SharedScrapes]:
        async def fetch(deployment: Deployment, timeout: float) -> tuple[int, bytes]:
            asked.append(name)
            return answer["status"], VLLM_METRICS.encode()

        seen, shared = vllm(), SharedScrapes(tmp_path / "engines")
        scraper = EngineScraper(lambda: [seen], fetch, 1.0, 0.5, lambda d: failures.append(name), shared)
        return scraper, seen, shared

    (one, one_sees, one_shares), (two, two_sees, two_shares) = worker("one"), worker("two")
    await one.scrape_all()
    await two.scrape_all()
    assert asked == ["one"]  # the engine was asked once for both workers
    assert two_sees.engine is not None
    assert two_sees.engine.waiting == 9.0
    assert one_sees.engine is not None
    assert two_sees.engine.scraped_at == one_sees.engine.scraped_at
    answer["status"] = 503
    await one.scrape_all()
    await two.scrape_all()
    assert asked == ["one", "one"]
    assert two_sees.engine.error == "/metrics answered HTTP 503"  # the failure is shared, counted once
    assert failures == ["one"]
    answer["status"] = 200
    one_shares.close()  # the scraping worker died: the kernel frees its lock
    await two.scrape_all()
    assert asked == ["one", "one", "two"]
    assert two_sees.engine.waiting == 9.0
    stale = {**json.loads(next((tmp_path / "engines").glob("*.json")).read_text()), "scraped_at": time.monotonic() - 60}
    two_shares.keep_only(set())  # two lets go; one is back, holding the lock but not writing
    one_shares.owns("http://10.0.0.1:8000/v1")
    one_shares.publish("http://10.0.0.1:8000/v1", stale)
    await two.scrape_all()
    assert asked == ["one", "one", "two", "two"]  # what one wrote is old: two asks the engine itself
    one_shares.close()
    two_shares.close()
