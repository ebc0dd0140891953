"""Per-pod endpoints: a headless Service name becomes one deployment per address (resolver injected;
the pods are fake vLLMs on 127.0.0.x, one port)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.config import parse_config
from tests.fakes import Behaviour, FakeUpstream, free_socket, serve
from tests.metrics_samples import sample
from tests.waiting import eventually

pytestmark = [pytest.mark.service, pytest.mark.timeout(60)]
HI = [{"role": "user", "content": "hi"}]


class Pods:
    """Fake vLLM pods on 127.0.0.2, .3, ... sharing one port, and the DNS answer naming them."""

    def __init__(self) -> None:
        probe = free_socket()
        self.port = probe.getsockname()[1]
        probe.close()
        self.fakes: dict[str, FakeUpstream] = {}
        self.answer: list[str] = []
        self.lookups = 0
        self.failing = False
        self.broken = False  # the next lookup raises something other than OSError

    async def add(self, address: str, **behaviour: Any) -> FakeUpstream:
        fake = await FakeUpstream(address, Behaviour(**behaviour)).start(address, self.port)
        self.fakes[address] = fake
        return fake

    async def resolve(self, host: str, port: int) -> list[str]:
        assert host == "vllm-headless"
        assert port == self.port
        self.lookups += 1
        if self.failing:
            raise OSError("temporary failure in name resolution")
        if self.broken:
            self.broken = False
            raise ValueError("an answer the resolver could not parse")
        return list(self.answer)


@pytest.fixture
async def pods() -> AsyncIterator[Pods]:
    found = Pods()
    yield found
    for fake in found.fakes.values():
        await fake.stop()


async def _gateway(pods: Pods, **router: Any) -> tuple[httpx.AsyncClient, Any, Any]:
    config = {
        "model_list": [
            {
                "model_name": "vision",
                "litellm_params": {
                    "model": "hosted_vllm/qwen",
                    "api_base": f"http://vllm-headless:{pods.port}/v1",
                    "max_parallel_requests": 4,
                },
                "model_info": {"id": "vllm", "per_pod": True},
            }
        ],
        "router_settings": {"num_retries": 2, "allowed_fails": 0, "cooldown_time": 30, **router},
        "gateway_settings": {"retry_backoff": 0.001, "dns_refresh_seconds": 0.05, "ready_cache_seconds": 0},
    }
    app = create_app(parse_config(config, {}).config, {}, resolver=pods.resolve)
    served = serve(app)
    return httpx.AsyncClient(base_url=served.url, timeout=30), served, app


async def test_one_failing_pod_cools_down_alone(pods: Pods) -> None:
    failing = await pods.add("127.0.0.2", fail_status=500)
    healthy = await pods.add("127.0.0.3")
    pods.answer = ["127.0.0.2", "127.0.0.3"]
    http, served, _ = await _gateway(pods, routing_strategy="simple-shuffle")  # identical requests reach both
    try:
        sent = 0
        while not failing.bodies or sent < 6:  # the shuffle reaches the failing pod sooner or later
            response = await http.post("/v1/chat/completions", json={"model": "vision", "messages": HI})
            assert response.status_code == 200
            sent += 1
            assert sent < 200
        assert len(failing.bodies) == 1, "after one failure the pod cools down and gets nothing more"
        assert len(healthy.bodies) == sent
        groups = (await http.get("/health/groups")).json()["model_groups"]["vision"]
        assert groups["deployments"]["vllm@127.0.0.2"] == "cooling down after failures"
        assert groups["deployments"]["vllm@127.0.0.3"] == "ok"
        metrics = (await http.get("/metrics")).text
        assert sample(metrics, "gateway_deployment_healthy", deployment="vllm@127.0.0.2") == 0.0
        assert sample(metrics, "gateway_deployment_healthy", deployment="vllm@127.0.0.3") == 1.0
        assert sample(metrics, "gateway_requests_total", deployment="vllm@127.0.0.3", status_class="2xx") == sent
    finally:
        await http.aclose()
        await served.stop()


async def test_least_busy_spreads_load_over_pods(pods: Pods) -> None:
    fakes = [await pods.add(f"127.0.0.{i}", delay_s=0.3) for i in (2, 3, 4)]
    pods.answer = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    http, served, _ = await _gateway(pods, routing_strategy="least-busy")
    try:
        body = {"model": "vision", "messages": HI}
        responses = await asyncio.gather(*(http.post("/v1/chat/completions", json=body) for _ in range(9)))
        assert [r.status_code for r in responses] == [200] * 9
        assert [len(f.bodies) for f in fakes] == [3, 3, 3]
        assert all(f.max_in_flight == 3 for f in fakes)
    finally:
        await http.aclose()
        await served.stop()


async def test_pods_that_come_and_go_are_followed(pods: Pods) -> None:
    first = await pods.add("127.0.0.2", delay_s=0.5)
    second = await pods.add("127.0.0.3")
    pods.answer = ["127.0.0.2"]
    http, served, _ = await _gateway(pods)
    try:
        body = {"model": "vision", "messages": HI}
        in_flight = asyncio.create_task(http.post("/v1/chat/completions", json=body))
        await eventually(lambda: _async(first.in_flight == 1))
        pods.answer = ["127.0.0.3"]  # the first pod leaves, a new one arrives

        async def switched() -> bool:
            groups = (await http.get("/health/groups")).json()["model_groups"]["vision"]["deployments"]
            return set(groups) == {"vllm@127.0.0.3"}

        await eventually(switched)
        assert (await in_flight).status_code == 200, "a request in flight to a removed pod finishes normally"
        for _ in range(3):
            assert (await http.post("/v1/chat/completions", json=body)).status_code == 200
        assert len(second.bodies) == 3
        assert len(first.bodies) == 1
        metrics = (await http.get("/metrics")).text
        assert sample(metrics, "gateway_in_flight_requests", model_group="vision") == 0.0
    finally:
        await http.aclose()
        await served.stop()


async def test_a_failed_lookup_keeps_the_known_pods(pods: Pods) -> None:
    pod = await pods.add("127.0.0.2")
    pods.answer = ["127.0.0.2"]
    http, served, _ = await _gateway(pods)
    try:
        assert (await http.post("/v1/chat/completions", json={"model": "vision", "messages": HI})).status_code == 200
        pods.failing = True
        failed_from = pods.lookups
        await eventually(lambda: _async(pods.lookups >= failed_from + 3))  # several lookups failed meanwhile
        assert (await http.post("/v1/chat/completions", json={"model": "vision", "messages": HI})).status_code == 200
        assert len(pod.bodies) == 2
        groups = (await http.get("/health/groups")).json()["model_groups"]["vision"]["deployments"]
        assert set(groups) == {"vllm@127.0.0.2"}
    finally:
        await http.aclose()
        await served.stop()


async def _async(value: bool) -> bool:
    return value


async def test_a_discovery_failure_of_any_kind_is_survived(pods: Pods, caplog: pytest.LogCaptureFixture) -> None:
    await pods.add("127.0.0.2")
    second = await pods.add("127.0.0.3")
    pods.answer = ["127.0.0.2"]
    http, served, _ = await _gateway(pods)
    try:
        pods.broken = True
        await eventually(lambda: _async(not pods.broken))
        pods.answer = ["127.0.0.2", "127.0.0.3"]  # a pod appears after the failed refresh

        async def both_known() -> bool:
            groups = (await http.get("/health/groups")).json()["model_groups"]["vision"]["deployments"]
            return set(groups) == {"vllm@127.0.0.2", "vllm@127.0.0.3"}

        await eventually(both_known)
        assert any("per-pod endpoints failed" in r.getMessage() for r in caplog.records)
        assert second is not None
    finally:
        await http.aclose()
        await served.stop()


async def _async(value: bool) -> bool:
    return value


async def test_each_pod_s_engine_is_scraped_and_a_pod_that_leaves_takes_its_stats(pods: Pods) -> None:
    exposition = '# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{engine="0"} {n}\n'
    await pods.add("127.0.0.2", engine_metrics=exposition.replace("{n}", "5"))
    await pods.add("127.0.0.3", engine_metrics=exposition.replace("{n}", "1"))
    pods.answer = ["127.0.0.2", "127.0.0.3"]
    http, served, _ = await _gateway(pods, engine_stats_interval=0.05)
    try:

        async def engines(expected: set[str]) -> dict[str, Any]:
            found: dict[str, Any] = {}

            async def reported() -> bool:
                nonlocal found
                found = (await http.get("/health/groups")).json()["model_groups"]["vision"].get("engines", {})
                return set(found) == expected

            await eventually(reported)
            return found

        both = await engines({"vllm@127.0.0.2", "vllm@127.0.0.3"})
        assert (both["vllm@127.0.0.2"]["waiting"], both["vllm@127.0.0.3"]["waiting"]) == (5.0, 1.0)
        pods.answer = ["127.0.0.3"]  # the first pod leaves
        await engines({"vllm@127.0.0.3"})
        metrics = (await http.get("/metrics")).text
        assert sample(metrics, "gateway_engine_requests_waiting", deployment="vllm@127.0.0.2") is None
        assert sample(metrics, "gateway_engine_requests_waiting", deployment="vllm@127.0.0.3") == 1.0
    finally:
        await http.aclose()
        await served.stop()
