"""Health, readiness, metrics and API docs."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import GatewayFactory, UpstreamFactory, deployment
from tests.metrics_samples import sample

pytestmark = pytest.mark.service

HI = [{"role": "user", "content": "hi"}]


async def test_health_and_docs(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    fake = await upstream("vllm")
    gw = await gateway({"model_list": [deployment("vision", fake)]})
    assert (await gw.http.get("/health")).json() == {"status": "ok"}
    schema = (await gw.http.get("/openapi.json")).json()
    assert "/v1/chat/completions" in schema["paths"]
    # Every reference resolves: nested models live in the components.
    for ref in re.findall(r'"\$ref": ?"#/components/schemas/([^"]+)"', json.dumps(schema)):
        assert ref in schema["components"]["schemas"], ref
    assert (await gw.http.get("/docs")).status_code == 200


async def test_ready_needs_one_reachable_deployment_per_group(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    up = await upstream("up")
    down = await upstream("down")
    await down.stop()
    config = {
        "model_list": [deployment("vision", up, id="v-up"), deployment("vision", down, id="v-down")],
        "gateway_settings": {"ready_cache_seconds": 0, "ready_requires": ["vision"]},
    }
    gw = await gateway(config)
    ready = await gw.http.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["model_groups"]["vision"]["deployments"] == {
        "v-up": "ok",
        "v-down": "connection refused or unreachable",
    }

    config["model_list"].append(deployment("chat", down, id="c-down"))
    config["gateway_settings"]["ready_requires"] = ["vision", "chat"]
    gw2 = await gateway(config)
    not_ready = await gw2.http.get("/ready")
    assert not_ready.status_code == 503
    assert not_ready.json()["model_groups"]["chat"]["ready"] is False
    assert down.url not in not_ready.text


async def test_metrics_count_requests_tokens_and_latency(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    fake = await upstream("vllm")
    gw = await gateway({"model_list": [deployment("vision", fake, id="vllm-0")]})
    client = gw.openai()
    await client.chat.completions.create(model="vision", messages=HI)
    stream = await client.chat.completions.create(
        model="vision", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    async for _ in stream:
        pass
    await gw.http.post("/v1/chat/completions", json={"model": "missing", "messages": HI})
    text = (await gw.http.get("/metrics")).text
    ok = sample(text, "gateway_requests_total", deployment="vllm-0", model_group="vision", status_class="2xx")
    assert ok == 2.0
    assert sample(text, "gateway_requests_total", endpoint="chat/completions", model_group="vision") == 2.0
    assert sample(text, "gateway_requests_total", deployment="none", model_group="unknown", status_class="4xx") == 1.0
    assert 'gateway_prompt_tokens_total{model_group="vision"} 22.0' in text
    assert 'gateway_completion_tokens_total{model_group="vision"} 12.0' in text
    assert 'gateway_time_to_first_token_seconds_count{model_group="vision"} 1.0' in text
    assert (
        'gateway_request_duration_seconds_count{endpoint="chat/completions",model_group="vision",stream="true"} 1.0'
        in text
    )
    assert 'gateway_overhead_seconds_count{model_group="vision"} 2.0' in text
    assert 'gateway_in_flight_requests{model_group="vision"} 0.0' in text
    assert "process_resident_memory_bytes" in text


async def test_a_cloud_outage_shows_in_group_health_not_in_readiness(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    import asyncio
    import time

    from tests.fakes import free_socket
    from tests.metrics_samples import sample

    local = await upstream("vllm")
    closed = free_socket()
    closed_url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
    closed.close()  # nothing listens there any more
    silent = free_socket()  # accepts connections and never answers

    async def never_answer() -> None:
        loop = asyncio.get_running_loop()
        while True:
            connection, _ = await loop.sock_accept(silent)
            held.append(connection)

    held: list = []
    acceptor = asyncio.create_task(never_answer())
    silent_url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
    cloud = {"api_key": "sk-cloud-0123456789"}
    config = {
        "model_list": [
            deployment("vision", local),
            {"model_name": "chat", "litellm_params": {"model": "nebius/m", "api_base": closed_url, **cloud}},
            {"model_name": "reasoning", "litellm_params": {"model": "openai/m", "api_base": silent_url, **cloud}},
        ],
        "gateway_settings": {"ready_probe_timeout": 1.0, "ready_cache_seconds": 0, "ready_requires": ["vision"]},
    }
    try:
        gw = await gateway(config)
        started = time.monotonic()
        ready = await gw.http.get("/ready")
        assert ready.status_code == 200, ready.text
        assert time.monotonic() - started < 1.0, "readiness does not wait for cloud providers"
        assert set(ready.json()["model_groups"]) == {"vision"}

        groups = (await gw.http.get("/health/groups")).json()["model_groups"]
        assert groups["vision"]["ready"] is True
        assert groups["vision"]["required_for_ready"] is True
        assert groups["chat"]["required_for_ready"] is False
        assert groups["chat"]["deployments"] == {"chat/0": "connection refused or unreachable"}
        assert groups["reasoning"]["deployments"] == {"reasoning/0": "timed out"}
        assert groups["chat"]["healthy"] == 0

        failed = await gw.http.post("/v1/chat/completions", json={"model": "chat", "messages": HI})
        assert failed.status_code == 502
        groups = (await gw.http.get("/health/groups")).json()["model_groups"]
        assert groups["chat"]["last_errors"] == {"chat/0": "bad_gateway"}

        metrics = (await gw.http.get("/metrics")).text
        assert sample(metrics, "gateway_deployment_healthy", model_group="chat") == 0.0
        assert sample(metrics, "gateway_deployment_healthy", model_group="vision") == 1.0
        assert (await gw.http.get("/ready")).status_code == 200
    finally:
        acceptor.cancel()
        for connection in held:
            connection.close()
        silent.close()


async def test_by_default_a_local_outage_leaves_the_gateway_ready(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    # vLLM down (or loading its model for half an hour): the cloud group is still served.
    vllm = await upstream("vllm")
    await vllm.stop()
    cloud = await upstream("cloud")
    config = {
        "model_list": [
            deployment("vision", vllm),
            {"model_name": "chat", "litellm_params": {"model": "nebius/m", "api_base": cloud.url, "api_key": "k"}},
        ],
        "gateway_settings": {"ready_cache_seconds": 0},
    }
    gw = await gateway(config)
    ready = await gw.http.get("/ready")
    assert ready.status_code == 200, ready.text
    groups = (await gw.http.get("/health/groups")).json()["model_groups"]
    assert groups["vision"]["ready"] is False
    assert groups["vision"]["required_for_ready"] is False
    answer = await gw.openai().chat.completions.create(model="chat", messages=HI)
    assert answer.choices[0].message.content


async def test_group_health_needs_a_key_and_shows_only_the_keys_groups(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    fake = await upstream("vllm")
    config = {
        "model_list": [deployment("vision", fake), deployment("chat", fake)],
        "general_settings": {"master_key": "sk-master-0123456789"},
        "gateway_settings": {"api_keys": [{"key": "sk-team-0123456789", "models": ["chat"]}]},
    }
    gw = await gateway(config)
    anonymous = await gw.http.get("/health/groups")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"
    team = await gw.http.get("/health/groups", headers={"Authorization": "Bearer sk-team-0123456789"})
    assert set(team.json()["model_groups"]) == {"chat"}
    master = await gw.http.get("/health/groups", headers={"Authorization": "Bearer sk-master-0123456789"})
    assert set(master.json()["model_groups"]) == {"vision", "chat"}
    assert (await gw.http.get("/ready")).status_code == 200  # probes need no key
    assert (await gw.http.get("/health")).status_code == 200


async def test_ready_requires_names_the_groups_readiness_needs(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    down = await upstream("down")
    await down.stop()
    cloud = {"model": "nebius/m", "api_base": down.url, "api_key": "sk-cloud-0123456789"}
    config = {
        "model_list": [{"model_name": "chat", "litellm_params": cloud}],
        "gateway_settings": {"ready_requires": ["chat"], "ready_cache_seconds": 0},
    }
    gw = await gateway(config)
    assert (await gw.http.get("/ready")).status_code == 503
