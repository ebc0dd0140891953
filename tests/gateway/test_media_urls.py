"""Media URLs a client names are never fetched from inside the cluster unless allowed: a vLLM
deployment (and the SDK path, which downloads them itself) is sent data: URLs only by default."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.media import remote_media_hosts
from tests.conftest import GatewayFactory, UpstreamFactory, deployment

pytestmark = pytest.mark.service

PIXEL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def _body(url: str, part: str = "image_url") -> dict[str, Any]:
    content = [{"type": "text", "text": "what is this?"}, {"type": part, part: {"url": url}}]
    return {"model": "vision", "messages": [{"role": "user", "content": content}]}


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://redis:6379/",
        "file:///etc/passwd",
        "HTTP://Metadata.Google.Internal/computeMetadata/v1/",
        "http:\\/\\/127.0.0.1:7233/",
    ],
)
async def test_a_vllm_deployment_is_sent_data_urls_only(
    url: str, upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    vllm = await upstream("vllm")
    gw = await gateway({"model_list": [deployment("vision", vllm, supports_vision=True)]})
    for part in ("image_url", "video_url"):
        response = await gw.http.post("/v1/chat/completions", json=_body(url, part))
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "media_url_not_allowed"
    assert vllm.bodies == []
    assert (await gw.http.post("/v1/chat/completions", json=_body(PIXEL))).status_code == 200


async def test_allowed_domains_and_cloud_providers_take_urls(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    vllm = await upstream("vllm")
    cloud = await upstream("cloud")
    allowed = deployment("vision", vllm, supports_vision=True)
    allowed["model_info"]["allowed_media_domains"] = ["images.example.com"]
    nebius = {
        "model_name": "cloud",
        "litellm_params": {"model": "nebius/Qwen/Qwen2.5-VL-72B-Instruct", "api_base": cloud.url, "api_key": "k"},
        "model_info": {"supports_vision": True},
    }
    gw = await gateway({"model_list": [allowed, nebius]})
    ok = await gw.http.post("/v1/chat/completions", json=_body("https://cdn.images.example.com/cat.png"))
    assert ok.status_code == 200, ok.text
    refused = await gw.http.post("/v1/chat/completions", json=_body("https://images.example.com.evil.net/cat.png"))
    assert refused.status_code == 400
    assert len(vllm.bodies) == 1
    body = {**_body("http://169.254.169.254/latest/"), "model": "cloud"}
    assert (await gw.http.post("/v1/chat/completions", json=body)).status_code == 200  # Nebius fetches it


@pytest.mark.unit
def test_media_hosts_are_found_whatever_the_spelling() -> None:
    body = (
        b'{"messages":[{"content":[{"type":"image_url","image_url":{"url" : "HTTP://Evil.COM:80/x"}},'
        b'{"type":"input_image","image_url":"https://a.example/b.png"},'
        b'{"type":"text","text":"{\\"url\\": \\"http://quoted.example\\"}"},'
        b'{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}'
    )
    assert remote_media_hosts(body) == ["evil.com", "a.example"]


async def test_responses_and_messages_images_are_held_to_the_same_rule(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    """An ``input_image`` (Responses) or an image ``source.url`` (Anthropic Messages) naming an
    internal address is refused before vLLM sees it; ``data:`` URLs go through."""
    vllm = await upstream("vllm")
    gw = await gateway({"model_list": [deployment("vision", vllm, supports_vision=True)]})
    metadata = "http://169.254.169.254/latest/meta-data/"
    responses = {
        "model": "vision",
        "input": [{"role": "user", "content": [{"type": "input_image", "image_url": metadata}]}],
    }
    refused = await gw.http.post("/v1/responses", json=responses)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "media_url_not_allowed"
    image = {"type": "image", "source": {"type": "url", "url": metadata}}
    messages = {"model": "vision", "max_tokens": 8, "messages": [{"role": "user", "content": [image]}]}
    refused_messages = await gw.http.post("/v1/messages", json=messages)
    assert refused_messages.status_code == 400
    assert refused_messages.json()["error"]["type"] == "invalid_request_error"
    assert vllm.bodies == []
    responses["input"][0]["content"][0]["image_url"] = PIXEL
    assert (await gw.http.post("/v1/responses", json=responses)).status_code == 200
