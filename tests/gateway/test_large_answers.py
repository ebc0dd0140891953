"""Answers read whole (non-streamed bodies, error bodies of streams) arrive whatever their size up
to ``gateway_settings.max_answer_bytes``, and past it fail at once with a clear 502."""

from __future__ import annotations

import time

import pytest

from tests.conftest import GatewayFactory, UpstreamFactory, deployment

pytestmark = [pytest.mark.service, pytest.mark.timeout(60)]

HI = [{"role": "user", "content": "hi"}]


async def test_a_large_embeddings_answer_arrives(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    fake = await upstream("embed", embedding_dimensions=4096)
    gw = await gateway({"model_list": [deployment("embed", fake, timeout=10)], "router_settings": {"num_retries": 0}})
    started = time.monotonic()
    answer = await gw.openai().embeddings.create(model="embed", input=[f"text {i}" for i in range(64)])
    assert time.monotonic() - started < 8  # it used to wait for the deployment's whole timeout
    assert len(answer.data) == 64
    assert all(len(item.embedding) == 4096 for item in answer.data)


async def test_a_large_error_body_of_a_stream_arrives(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    body = b'{"error": {"message": "too long", "padding": "' + b"x" * (3 * 1024 * 1024) + b'"}}'
    fake = await upstream("chat", fail_status=400, fail_body=body)
    gw = await gateway({"model_list": [deployment("chat", fake, stream_timeout=10)]})
    response = await gw.http.post("/v1/chat/completions", json={"model": "chat", "messages": HI, "stream": True})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "too long"


async def test_an_answer_past_the_cap_is_a_502_without_retries(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    fake = await upstream("embed", embedding_dimensions=4096)
    config = {
        "model_list": [deployment("embed", fake, timeout=10)],
        "router_settings": {"num_retries": 2, "allowed_fails": 0},
        "gateway_settings": {"max_answer_bytes": 1024 * 1024},
    }
    gw = await gateway(config)
    response = await gw.http.post("/v1/embeddings", json={"model": "embed", "input": ["a"] * 64})
    assert response.status_code == 502
    assert "more than the gateway accepts" in response.json()["error"]["message"]
    assert len(fake.bodies) == 1
    again = await gw.http.post("/v1/embeddings", json={"model": "embed", "input": ["a"]})
    assert again.status_code == 200  # the deployment did not cool down for it
