"""Clients that leave early and upstreams that never end an event: no slot, gauge or memory is kept."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import GatewayFactory, RunningGateway, UpstreamFactory, deployment
from tests.metrics_samples import sample

pytestmark = [pytest.mark.service, pytest.mark.timeout(60)]

HI = [{"role": "user", "content": "hi"}]


def _config(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"model_list": list(entries), "gateway_settings": {"retry_backoff": 0.001, "queue_timeout": 0.5}}


async def _settled(gw: RunningGateway, timeout_s: float = 10.0) -> str:
    """The metrics once nothing is in flight any more (bounded wait: the upstream finishes on its own)."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = (await gw.http.get("/metrics")).text
        busy = sample(text, "gateway_in_flight_requests", model_group="chat")
        deployment_busy = sample(text, "gateway_deployment_in_flight", model_group="chat")
        if not busy and not deployment_busy:
            return text
        assert time.monotonic() < deadline, f"still in flight: {busy} requests, {deployment_busy} at the deployment"
        await asyncio.sleep(0.05)


async def test_client_gone_before_the_first_byte_frees_its_slot(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    slow = await upstream("slow", delay_s=0.5)
    gw = await gateway(_config(deployment("chat", slow, max_parallel_requests=1)))
    body = {"model": "chat", "messages": HI}
    with pytest.raises(httpx.ReadTimeout):
        await gw.http.post("/v1/chat/completions", json=body, timeout=0.1)
    metrics = await _settled(gw)
    assert sample(metrics, "gateway_requests_total", model_group="chat") is not None
    # The only slot is free again: the next request is served, not refused after the queue timeout.
    again = await gw.http.post("/v1/chat/completions", json=body)
    assert again.status_code == 200, again.text


async def test_client_gone_mid_stream_frees_its_slot_and_is_counted(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    talky = await upstream("talky", content=" ".join(["word"] * 200), chunk_delay_s=0.02)
    gw = await gateway(_config(deployment("chat", talky, max_parallel_requests=1)))
    body = {"model": "chat", "messages": HI, "stream": True}
    async with (
        httpx.AsyncClient(base_url=gw.url) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        async for _ in response.aiter_bytes():
            break  # one chunk, then hang up
    # The whole answer takes 4 s; the gateway stops relaying it as soon as the client is gone.
    metrics = await _settled(gw, timeout_s=2.0)
    assert sample(metrics, "gateway_requests_total", model_group="chat", status_class="4xx") == 1.0
    again = await gw.http.post("/v1/chat/completions", json={**body, "stream": False})
    assert again.status_code == 200, again.text


async def test_an_event_that_never_ends_is_cut_with_an_error_event(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    endless = await upstream("endless", unterminated_stream_bytes=10 * 1024 * 1024)
    gw = await gateway(_config(deployment("chat", endless)))
    body = {"model": "chat", "messages": HI, "stream": True}
    response = await gw.http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    events = [e for e in response.content.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    error = orjson.loads(events[-2].removeprefix(b"data: "))["error"]
    assert error["type"] == "upstream_error"
    assert "without ending" in error["message"]
    assert len(response.content) < 1024, "the unfinished event was not passed on"
    metrics = await _settled(gw)
    assert sample(metrics, "gateway_requests_total", model_group="chat", status_class="5xx") == 1.0


async def test_client_gone_while_a_long_answer_is_generated_cancels_it_at_once(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    slow = await upstream("slow", delay_s=5)
    gw = await gateway(_config(deployment("chat", slow, max_parallel_requests=1)))
    body = {"model": "chat", "messages": HI}
    with pytest.raises(httpx.ReadTimeout):
        await gw.http.post("/v1/chat/completions", json=body, timeout=0.2)
    # The answer would take 5 s; the slot and the deployment connection are given up at once.
    metrics = await _settled(gw, timeout_s=1.5)
    assert sample(metrics, "gateway_requests_total", model_group="chat", status_class="4xx") == 1.0
    assert sample(metrics, "gateway_requests_total", model_group="chat", status_class="5xx") is None


async def test_client_gone_while_its_body_is_read_is_no_server_error(
    upstream: UpstreamFactory, gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fake = await upstream("fake")
    gw = await gateway(_config(deployment("chat", fake)))
    host, port = gw.url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n" + b'{"model": "chat", "messages": [' + b" " * 40000
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    deadline = time.monotonic() + 5
    while True:
        metrics = (await gw.http.get("/metrics")).text
        if sample(metrics, "gateway_requests_total", model_group="unknown", status_class="4xx"):
            break
        assert time.monotonic() < deadline, "the abandoned request was not counted"
        await asyncio.sleep(0.05)
    assert sample(metrics, "gateway_requests_total", status_class="5xx") is None
    assert not [r for r in caplog.records if r.exc_info], "logged with a traceback"
    assert fake.bodies == []
