"""Retries, cooldowns, fallbacks, timeouts, admission limits and mid-stream failures."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import orjson
import pytest

from tests.conftest import GatewayFactory, UpstreamFactory, deployment
from tests.metrics_samples import sample

pytestmark = pytest.mark.service

HI = [{"role": "user", "content": "hi"}]
IMAGE = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]


def _config(*entries: dict[str, Any], **router: Any) -> dict[str, Any]:
    return {
        "model_list": list(entries),
        "router_settings": {"num_retries": 2, "cooldown_time": 30, **router},
        "gateway_settings": {"retry_backoff": 0.001},
    }


async def test_retry_same_deployment_after_transient_500(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    flaky = await upstream("flaky", fail_status=500, fail_times=1)
    gw = await gateway(_config(deployment("chat", flaky)))
    answer = await gw.openai().chat.completions.create(model="chat", messages=HI)
    assert answer.choices[0].message.content == "Hello from the fake (flaky)"
    assert len(flaky.bodies) == 2


async def test_retry_moves_to_another_deployment(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    broken = await upstream("broken", fail_status=502)
    healthy = await upstream("healthy")
    gw = await gateway(_config(deployment("chat", broken, id="a"), deployment("chat", healthy, id="b")))
    for _ in range(6):
        answer = await gw.openai().chat.completions.create(model="chat", messages=HI)
        assert answer.choices[0].message.content == "Hello from the fake (healthy)"
    metrics = (await gw.http.get("/metrics")).text
    # Each of the six requests first tried the broken deployment or, once it cooled down, went straight to b.
    retries = sample(metrics, "gateway_retries_total", model_group="chat")
    assert retries is not None
    assert retries >= 1


async def test_connect_error_is_retried_elsewhere(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    dead = await upstream("dead")
    await dead.stop()
    healthy = await upstream("healthy")
    gw = await gateway(_config(deployment("chat", dead, id="dead"), deployment("chat", healthy, id="ok")))
    for _ in range(4):
        answer = await gw.openai().chat.completions.create(model="chat", messages=HI)
        assert answer.choices[0].message.content == "Hello from the fake (healthy)"


async def test_failing_deployment_cools_down(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    broken = await upstream("broken", fail_status=500)
    healthy = await upstream("healthy")
    config = _config(
        deployment("chat", broken, id="broken"),
        deployment("chat", healthy, id="healthy"),
        allowed_fails=1,
        routing_strategy="simple-shuffle",  # identical requests reach both deployments
    )
    gw = await gateway(config)
    for _ in range(20):
        await gw.openai().chat.completions.create(model="chat", messages=HI)
    # Two failures put it in cooldown; after that it receives nothing more.
    assert len(broken.bodies) == 2
    metrics = (await gw.http.get("/metrics")).text
    assert 'gateway_cooldowns_total{deployment="broken",model_group="chat"} 1.0' in metrics
    assert 'gateway_deployment_healthy{deployment="broken",model_group="chat"} 0.0' in metrics


async def test_all_deployments_cooling_gives_503_with_retry_after(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    broken = await upstream("broken", fail_status=500)
    gw = await gateway(_config(deployment("chat", broken), allowed_fails=0, num_retries=0))
    first = await gw.http.post("/v1/chat/completions", json={"model": "chat", "messages": HI})
    second = await gw.http.post("/v1/chat/completions", json={"model": "chat", "messages": HI})
    assert first.status_code == 502
    assert second.status_code == 503
    assert int(second.headers["retry-after"]) >= 1
    assert second.json()["error"]["code"] == "no_deployment_available"
    assert len(broken.bodies) == 1


async def test_fallback_to_another_group(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    broken = await upstream("primary", fail_status=503)
    backup = await upstream("backup")
    config = _config(
        deployment("chat", broken), deployment("chat-backup", backup), fallbacks=[{"chat": ["chat-backup"]}]
    )
    gw = await gateway(config)
    answer = await gw.openai().chat.completions.create(model="chat", messages=HI)
    assert answer.choices[0].message.content == "Hello from the fake (backup)"
    assert answer.model == "chat"
    assert len(broken.bodies) == 3
    metrics = (await gw.http.get("/metrics")).text
    assert 'gateway_fallbacks_total{fallback_group="chat-backup",model_group="chat"} 1.0' in metrics


async def test_image_request_never_falls_back_to_group_without_vision(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    broken = await upstream("vision", fail_status=500)
    text_only = await upstream("text-only")
    vision_backup = await upstream("vision-backup")
    config = _config(
        deployment("vision", broken, supports_vision=True),
        deployment("chat", text_only),
        deployment("vision-backup", vision_backup, supports_vision=True),
        fallbacks=[{"vision": ["chat", "vision-backup"]}],
        num_retries=0,
    )
    gw = await gateway(config)
    with_image = await gw.openai().chat.completions.create(model="vision", messages=IMAGE)
    assert with_image.choices[0].message.content == "Hello from the fake (vision-backup)"
    assert text_only.bodies == []
    text = await gw.openai().chat.completions.create(model="vision", messages=HI)
    assert text.choices[0].message.content == "Hello from the fake (text-only)"


async def test_client_errors_are_not_retried_and_keep_their_message(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    body = b'{"error": {"message": "max_tokens is too large", "type": "BadRequestError", "param": "max_tokens"}}'
    strict = await upstream("strict", fail_status=400, fail_body=body)
    gw = await gateway(_config(deployment("chat", strict)))
    with pytest.raises(openai.BadRequestError) as caught:
        await gw.openai().chat.completions.create(model="chat", messages=HI, max_tokens=10**9)
    assert caught.value.status_code == 400
    assert caught.value.body == {
        "message": "max_tokens is too large",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": None,
    }
    assert len(strict.bodies) == 1


async def test_upstream_internals_never_leak(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    broken = await upstream("broken", fail_status=500)
    gw = await gateway(_config(deployment("chat", broken, api_key="sk-upstream-secret")))
    response = await gw.http.post("/v1/chat/completions", json={"model": "chat", "messages": HI})
    assert response.status_code == 502
    text = response.text
    for secret in ("sk-secret", "sk-upstream-secret", "/srv/model.py", "127.0.0.1", broken.url):
        assert secret not in text
    assert response.json()["error"] == {
        "message": "model 'chat' failed (upstream HTTP 500)",
        "type": "upstream_error",
        "param": None,
        "code": "bad_gateway",
    }


async def test_hanging_deployment_times_out(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    hung = await upstream("hung", hang=True)
    gw = await gateway(_config(deployment("chat", hung, timeout=0.3), num_retries=0))
    started = time.monotonic()
    response = await gw.http.post("/v1/chat/completions", json={"model": "chat", "messages": HI})
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout"
    assert time.monotonic() - started < 5


async def test_hanging_stream_start_times_out(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    hung = await upstream("hung", hang=True)
    gw = await gateway(_config(deployment("chat", hung, timeout=0.3), num_retries=0))
    body = {"model": "chat", "messages": HI, "stream": True}
    response = await gw.http.post("/v1/chat/completions", json=body)
    assert response.status_code == 504


async def test_stream_dropped_midway_ends_with_error_and_done(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    dropping = await upstream("dropping", drop_stream_after=2)
    gw = await gateway(_config(deployment("chat", dropping)))
    body = {"model": "chat", "messages": HI, "stream": True}
    async with gw.http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        raw = b"".join([chunk async for chunk in response.aiter_bytes()])
    events = [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    error = orjson.loads(events[-2])["error"]
    assert error["type"] == "upstream_error"
    assert [orjson.loads(e)["choices"][0]["delta"]["content"] for e in events[:-2]] == ["Hello", " from"]
    # No retry once bytes went to the client.
    assert len(dropping.bodies) == 1


async def test_sdk_sees_midstream_failure_as_error(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    dropping = await upstream("dropping", drop_stream_after=1)
    gw = await gateway(_config(deployment("chat", dropping)))
    stream = await gw.openai().chat.completions.create(model="chat", messages=HI, stream=True)
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass


async def test_stalled_stream_ends_after_stream_timeout(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    stalling = await upstream("stalling", chunk_delay_s=2.0)
    gw = await gateway(_config(deployment("chat", stalling, stream_timeout=0.3)))
    started = time.monotonic()
    body = {"model": "chat", "messages": HI, "stream": True}
    async with gw.http.stream("POST", "/v1/chat/completions", json=body) as response:
        raw = b"".join([chunk async for chunk in response.aiter_bytes()])
    assert time.monotonic() - started < 1.8
    assert raw.endswith(b"data: [DONE]\n\n")
    assert b'"type":"timeout"' in raw


async def test_stream_without_done_is_reported(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    truncated = await upstream("truncated", omit_done=True)
    gw = await gateway(_config(deployment("chat", truncated)))
    body = {"model": "chat", "messages": HI, "stream": True}
    async with gw.http.stream("POST", "/v1/chat/completions", json=body) as response:
        raw = b"".join([chunk async for chunk in response.aiter_bytes()])
    assert raw.endswith(b"data: [DONE]\n\n")
    assert b"ended the stream early" in raw


async def test_max_parallel_requests_queues_then_refuses(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    slow = await upstream("slow", delay_s=0.5)
    config = _config(deployment("chat", slow, max_parallel_requests=2))
    config["gateway_settings"]["queue_timeout"] = 0.1
    gw = await gateway(config)
    body = {"model": "chat", "messages": HI}
    responses = await asyncio.gather(*(gw.http.post("/v1/chat/completions", json=body) for _ in range(5)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 429, 429, 429]
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "model_busy"
    assert slow.max_in_flight == 2


async def test_queued_request_is_served_when_a_slot_frees(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    slow = await upstream("slow", delay_s=0.2)
    config = _config(deployment("chat", slow, max_parallel_requests=1))
    config["gateway_settings"]["queue_timeout"] = 5
    gw = await gateway(config)
    body = {"model": "chat", "messages": HI}
    responses = await asyncio.gather(*(gw.http.post("/v1/chat/completions", json=body) for _ in range(3)))
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert slow.max_in_flight == 1


async def test_upstream_429_retry_after_is_honoured(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    limited = await upstream("limited", fail_status=429, fail_times=1, retry_after="0.2")
    gw = await gateway(_config(deployment("chat", limited)))
    started = time.monotonic()
    answer = await gw.openai().chat.completions.create(model="chat", messages=HI)
    assert answer.choices[0].message.content
    assert time.monotonic() - started >= 0.2


async def test_a_redirecting_deployment_is_not_followed_and_is_reported(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    moved = await upstream("moved", fail_status=308)
    gw = await gateway(_config(deployment("chat", moved), num_retries=0))
    with pytest.raises(openai.APIStatusError) as caught:
        await gw.openai().chat.completions.create(model="chat", messages=HI)
    assert caught.value.status_code == 502
    assert "answered with HTTP 308; check its api_base" in caught.value.message
    assert len(moved.bodies) == 1


async def test_time_queued_for_a_slot_is_not_counted_as_overhead(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    slow = await upstream("slow", delay_s=0.5)
    config = _config(deployment("chat", slow, max_parallel_requests=1))
    config["gateway_settings"]["queue_timeout"] = 5
    gw = await gateway(config)
    client = gw.openai()
    await asyncio.gather(*(client.chat.completions.create(model="chat", messages=HI) for _ in range(2)))
    metrics = (await gw.http.get("/metrics")).text
    overhead = sample(metrics, "gateway_overhead_seconds_sum", model_group="chat")
    assert overhead is not None
    assert overhead < 0.25, f"{overhead:.2f} s of overhead: the second request's queueing was counted"
