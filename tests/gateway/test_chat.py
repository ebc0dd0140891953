"""Chat, completions, embeddings and models through the gateway, with the openai SDK and raw HTTP."""

from __future__ import annotations

import base64

import orjson
import pytest

from tests.conftest import GatewayFactory, UpstreamFactory, deployment

pytestmark = pytest.mark.service

PNG_1PX = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360f8cf00000301010018dd8db00000000049454e44ae426082"
    )
).decode()


async def _two_groups(upstream: UpstreamFactory, gateway: GatewayFactory):
    vllm = await upstream("vllm")
    nebius = await upstream("nebius")
    vision = deployment("vision", vllm, supports_vision=True)
    vision["model_info"]["allowed_media_domains"] = ["example.com"]  # remote image URLs pass (gateway.media)
    config = {
        "model_list": [
            vision,
            deployment("chat", nebius, model="nebius/meta-llama/Llama-3.3-70B-Instruct", api_key="nb-key-123"),
            deployment("nebius/*", nebius, model="nebius/*", api_key="nb-key-123"),
        ]
    }
    return vllm, nebius, await gateway(config)


async def test_sdk_chat_routes_by_model_name(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    vllm, nebius, gw = await _two_groups(upstream, gateway)
    client = gw.openai()

    local = await client.chat.completions.create(model="vision", messages=[{"role": "user", "content": "hi"}])
    cloud = await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])

    assert local.choices[0].message.content == "Hello from the fake (vllm)"
    assert cloud.choices[0].message.content == "Hello from the fake (nebius)"
    assert local.model == "vision"
    assert cloud.model == "chat"
    assert vllm.bodies[0]["model"] == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert nebius.bodies[0]["model"] == "meta-llama/Llama-3.3-70B-Instruct"
    assert nebius.headers[0]["Authorization"] == "Bearer nb-key-123"
    assert "Authorization" not in vllm.headers[0]
    assert local.usage is not None
    assert local.usage.total_tokens == 18


async def test_sdk_stream_with_usage(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    _, _, gw = await _two_groups(upstream, gateway)
    stream = await gw.openai().chat.completions.create(
        model="vision",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, models, usage = "", set(), None
    async for chunk in stream:
        models.add(chunk.model)
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text == "Hello from the fake (vllm)"
    assert models == {"vision"}
    assert usage is not None
    assert usage.prompt_tokens == 11


async def test_wildcard_group_fills_upstream_model(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    _, nebius, gw = await _two_groups(upstream, gateway)
    answer = await gw.openai().chat.completions.create(
        model="nebius/Qwen/Qwen3-235B", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.model == "nebius/Qwen/Qwen3-235B"
    assert nebius.bodies[-1]["model"] == "Qwen/Qwen3-235B"


async def test_everything_else_passes_through_untouched(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    vllm, _, gw = await _two_groups(upstream, gateway)
    image = f"data:image/png;base64,{PNG_1PX}"
    body = {
        "model": "vision",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": image}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            }
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        "n": 2,
        "logprobs": True,
        "top_k": 20,
        "mm_processor_kwargs": {"max_pixels": 1003520},
        "some_future_field": {"nested": [1, 2]},
    }
    response = await gw.http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    forwarded = vllm.bodies[-1]
    assert forwarded == {**body, "model": "Qwen/Qwen2.5-VL-3B-Instruct"}


async def test_large_image_body_is_forwarded(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    vllm, _, gw = await _two_groups(upstream, gateway)
    image = "data:image/jpeg;base64," + base64.b64encode(bytes(3 * 1024 * 1024)).decode()
    content = [{"type": "image_url", "image_url": {"url": image}}]
    answer = await gw.openai().chat.completions.create(model="vision", messages=[{"role": "user", "content": content}])
    assert answer.choices[0].message.content
    assert vllm.bodies[-1]["messages"][0]["content"][0]["image_url"]["url"] == image


async def test_models_list(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    _, _, gw = await _two_groups(upstream, gateway)
    models = await gw.openai().models.list()
    assert [m.id for m in models.data] == ["vision", "chat", "nebius/*"]
    # vLLM's Qwen2.5-VL takes video items; a cloud chat model is not assumed to.
    assert [(m.model_extra or {}).get("supports_video") for m in models.data] == [True, False, False]


async def test_video_support_is_the_configs_when_it_says(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    vllm = await upstream("vllm")
    plain = deployment("plain", vllm, model="hosted_vllm/llava-onevision")
    told = deployment("told", vllm, model="hosted_vllm/llava-onevision")
    told["model_info"]["supports_video"] = True
    refused = deployment("refused", vllm)  # a Qwen2.5-VL whose vLLM admits no video
    refused["model_info"]["supports_video"] = False
    mixed = [deployment("mixed", vllm), deployment("mixed", vllm, model="hosted_vllm/llava-onevision")]
    gw = await gateway({"model_list": [plain, told, refused, *mixed]})
    client = gw.openai()
    found = {m.id: (m.model_extra or {}).get("supports_video") for m in (await client.models.list()).data}
    assert found == {"plain": False, "told": True, "refused": False, "mixed": False}  # a clip may go to any of them
    assert ((await client.models.retrieve("told")).model_extra or {}).get("supports_video") is True


async def test_completions_and_embeddings(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    vllm, _, gw = await _two_groups(upstream, gateway)
    client = gw.openai()
    completion = await client.completions.create(model="vision", prompt="Once")
    embedding = await client.embeddings.create(model="vision", input=["a", "b"])
    assert completion.model == "vision"
    assert completion.choices[0].text == "fake"
    assert len(embedding.data) == 2
    assert [b["model"] for b in vllm.bodies] == ["Qwen/Qwen2.5-VL-3B-Instruct"] * 2


async def test_request_id_is_honoured_and_forwarded(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    vllm, _, gw = await _two_groups(upstream, gateway)
    body = {"model": "vision", "messages": [{"role": "user", "content": "hi"}]}
    response = await gw.http.post("/v1/chat/completions", json=body, headers={"X-Request-ID": "req-42"})
    assert response.headers["x-request-id"] == "req-42"
    assert vllm.headers[-1]["X-Request-ID"] == "req-42"
    generated = await gw.http.post(
        "/v1/chat/completions", json=body, headers={"X-Request-ID": "has spaces and {braces}"}
    )
    assert len(generated.headers["x-request-id"]) == 32


async def test_raw_stream_is_sse_and_ends_with_done(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    _, _, gw = await _two_groups(upstream, gateway)
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with gw.http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = b"".join([chunk async for chunk in response.aiter_bytes()])
    events = [e for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    for event in events[:-1]:
        assert orjson.loads(event.removeprefix(b"data: "))["model"] == "chat"


async def test_duplicate_model_keys_cannot_smuggle_another_model(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    _, nebius, gw = await _two_groups(upstream, gateway)
    raw = (
        b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "model": "chat", "model": "secret-model"}'
    )
    response = await gw.http.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert nebius.bodies[-1]["model"] == "meta-llama/Llama-3.3-70B-Instruct"
