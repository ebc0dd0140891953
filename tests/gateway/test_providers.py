"""Providers that are not OpenAI-compatible, through the litellm SDK path, each against a fake
speaking its own wire format: Anthropic Messages, Gemini, Azure OpenAI. An OpenAI SDK client
sees the same shapes as from a vLLM deployment."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tests.conftest import GatewayFactory, RunningGateway, UpstreamFactory, deployment
from tests.fakes import Behaviour, FakeUpstream
from tests.metrics_samples import sample
from tests.provider_fakes import WEATHER_TOOL, ProviderFake

pytestmark = [pytest.mark.service, pytest.mark.timeout(120)]
HI = [{"role": "user", "content": "hi"}]
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
IMAGE = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
        ],
    }
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": WEATHER_TOOL,
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
PROVIDERS = ["anthropic", "gemini", "azure"]


class Provider:
    """One provider's fake and the ``model_list`` entry that serves it."""

    def __init__(self, kind: str, fake: ProviderFake | FakeUpstream) -> None:
        self.kind = kind
        self.fake = fake

    def entry(self, name: str = "cloud", **params: Any) -> dict[str, Any]:
        if self.kind == "azure":
            base = {"model": "azure/gpt-deployment", "api_base": self.fake.url.removesuffix("/v1")}
            base.update(api_key="azure-key", api_version="2024-06-01")
        elif self.kind == "anthropic":
            base = {"model": "anthropic/claude-test", "api_base": self.fake.url, "api_key": "anthropic-key"}
        else:
            base = {"model": "gemini/gemini-test", "api_base": self.fake.url, "api_key": "gemini-key"}
        return {"model_name": name, "litellm_params": {**base, **params}, "model_info": {"supports_vision": True}}

    def received(self) -> dict[str, Any]:
        body: dict[str, Any] = self.fake.bodies[-1]
        return body


@pytest.fixture(params=PROVIDERS)
async def provider(request: pytest.FixtureRequest) -> AsyncIterator[Provider]:
    kind = request.param
    fake: ProviderFake | FakeUpstream
    fake = await (FakeUpstream("azure") if kind == "azure" else ProviderFake(kind)).start()
    yield Provider(kind, fake)
    await fake.stop()


async def _gateway(gateway: GatewayFactory, *entries: dict[str, Any], **router: Any) -> RunningGateway:
    config = {
        "model_list": list(entries),
        "router_settings": {"num_retries": 0, **router},
        "gateway_settings": {"retry_backoff": 0.001},
    }
    return await gateway(config)


async def test_plain_and_streamed_answers_have_openai_shapes(provider: Provider, gateway: GatewayFactory) -> None:
    gw = await _gateway(gateway, provider.entry())
    client = gw.openai()
    answer = await client.chat.completions.create(model="cloud", messages=HI, max_tokens=20)
    assert answer.model == "cloud"
    assert answer.object == "chat.completion"
    assert (answer.choices[0].message.content or "").startswith("Hello from the fake")
    assert answer.usage is not None
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    raw = (await gw.http.post("/v1/chat/completions", json={"model": "cloud", "messages": HI})).text
    for leaked in ("provider_specific_fields", "vertex_ai", '"cost"', "_hidden_params"):
        assert leaked not in raw

    stream = await client.chat.completions.create(
        model="cloud", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    text, usage, models = "", None, set()
    async for chunk in stream:
        models.add(chunk.model)
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text.strip().startswith("Hello from the fake")
    assert models == {"cloud"}
    assert usage is not None
    assert usage.total_tokens > 0
    response = await gw.http.post("/v1/chat/completions", json={"model": "cloud", "messages": HI, "stream": True})
    assert response.text.rstrip().endswith("data: [DONE]")
    metrics = (await gw.http.get("/metrics")).text
    assert (
        sample(metrics, "gateway_requests_total", deployment="cloud/0", model_group="cloud", status_class="2xx") == 4.0
    )


async def test_images_reach_the_provider_in_its_own_format(provider: Provider, gateway: GatewayFactory) -> None:
    gw = await _gateway(gateway, provider.entry())
    answer = await gw.openai().chat.completions.create(model="cloud", messages=IMAGE)  # type: ignore[arg-type]
    assert answer.choices[0].message.content
    sent = json.dumps(provider.received())
    assert PIXEL in sent
    if provider.kind == "anthropic":
        part = provider.received()["messages"][0]["content"][1]
        assert part["type"] == "image"
        assert part["source"] == {"type": "base64", "media_type": "image/png", "data": PIXEL}
    elif provider.kind == "gemini":
        parts = provider.received()["contents"][0]["parts"]
        assert {"inline_data": {"mime_type": "image/png", "data": PIXEL}} in parts or any(
            p.get("inlineData", {}).get("data") == PIXEL for p in parts
        )


async def test_tool_calls_come_back_as_openai_tool_calls(provider: Provider, gateway: GatewayFactory) -> None:
    gw = await _gateway(gateway, provider.entry())
    answer = await gw.openai().chat.completions.create(
        model="cloud",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=TOOLS,  # type: ignore[arg-type]
    )
    if provider.kind == "azure":
        return  # the OpenAI-format fake answers text; Azure passes tools through unchanged
    calls = answer.choices[0].message.tool_calls
    assert calls is not None
    assert calls[0].function.name == WEATHER_TOOL
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}


async def test_a_429_keeps_retry_after(provider: Provider, gateway: GatewayFactory) -> None:
    provider.fake.behaviour = Behaviour(
        fail_status=429, retry_after="7", fail_body=b'{"error": {"message": "slow down"}}'
    )
    gw = await _gateway(gateway, provider.entry())
    response = await gw.http.post("/v1/chat/completions", json={"model": "cloud", "messages": HI})
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json()["error"]["type"] == "rate_limit_error"


async def test_a_server_error_falls_back_to_another_group(
    provider: Provider, gateway: GatewayFactory, upstream: UpstreamFactory
) -> None:
    # Anthropic's own overload status is 529; the others answer 500.
    provider.fake.behaviour = Behaviour(fail_status=529 if provider.kind == "anthropic" else 500)
    backup = await upstream("backup")
    gw = await _gateway(
        gateway, provider.entry(), deployment("local", backup, supports_vision=True), fallbacks=[{"cloud": ["local"]}]
    )
    answer = await gw.openai().chat.completions.create(model="cloud", messages=HI)
    assert answer.choices[0].message.content == "Hello from the fake (backup)"
    assert answer.model == "cloud"
    assert len(provider.fake.bodies) == 1


async def test_a_client_error_passes_its_message_without_internals(provider: Provider, gateway: GatewayFactory) -> None:
    body = b'{"error": {"message": "max_tokens is too large", "type": "invalid_request_error"}}'
    provider.fake.behaviour = Behaviour(fail_status=400, fail_body=body)
    gw = await _gateway(gateway, provider.entry())
    response = await gw.http.post("/v1/chat/completions", json={"model": "cloud", "messages": HI})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "litellm" not in message.lower()
    assert "Traceback" not in message


async def test_a_provider_that_never_answers_times_out(provider: Provider, gateway: GatewayFactory) -> None:
    provider.fake.behaviour = Behaviour(hang=True)
    gw = await _gateway(gateway, provider.entry(timeout=1))
    response = await gw.http.post("/v1/chat/completions", json={"model": "cloud", "messages": HI})
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout"


async def test_one_config_mixes_every_kind_of_provider(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    vllm = await upstream("vllm")
    nebius = await upstream("nebius")
    fakes = {kind: await (FakeUpstream(kind) if kind == "azure" else ProviderFake(kind)).start() for kind in PROVIDERS}
    try:
        entries = [
            deployment("vision", vllm),
            {
                "model_name": "chat",
                "litellm_params": {"model": "nebius/meta/llama", "api_base": nebius.url, "api_key": "nb-1"},
            },
            *(Provider(kind, fake).entry(kind) for kind, fake in fakes.items()),
        ]
        gw = await _gateway(gateway, *entries)
        client = gw.openai()
        for model in ("vision", "chat", *PROVIDERS):
            answer = await client.chat.completions.create(model=model, messages=HI)
            assert answer.model == model
            assert answer.choices[0].message.content
    finally:
        for fake in fakes.values():
            await fake.stop()


async def test_embeddings_and_the_routing_table_for_sdk_providers(gateway: GatewayFactory) -> None:
    from gateway.cli import routing_table
    from gateway.config import parse_config

    azure = await FakeUpstream("azure").start()
    try:
        entry = Provider("azure", azure).entry("embed")
        gw = await _gateway(gateway, entry)
        result = await gw.openai().embeddings.create(model="embed", input=["a red bicycle", "a cat"])
        assert [len(d.embedding) for d in result.data] == [64, 64]
        assert result.model == "embed"
        assert azure.bodies[-1]["input"] == ["a red bicycle", "a cat"]
        loaded = parse_config({"model_list": [entry, {"model_name": "v", "litellm_params": {
            "model": "hosted_vllm/q", "api_base": "http://127.0.0.1:9/v1"}}]}, {})  # fmt: skip
        table = routing_table(loaded, {})
        assert "litellm-sdk" in next(line for line in table.splitlines() if line.startswith("embed "))
        assert " fast " in next(line for line in table.splitlines() if line.startswith("v "))
    finally:
        await azure.stop()


STEERING_FIELDS = {
    "api_base": "DECOY",
    "base_url": "DECOY",
    "api_key": "sk-attacker",
    "custom_llm_provider": "openai",
    "aws_secret_access_key": "x",
    "vertex_credentials": "{}",
    "callbacks": ["langfuse"],
    "extra_headers": {"x-api-key": "x"},
}


@pytest.mark.parametrize("field", sorted(STEERING_FIELDS))
async def test_a_client_cannot_steer_the_sdk_or_see_the_provider_key(field: str, gateway: GatewayFactory) -> None:
    decoy = await ProviderFake("anthropic").start()
    try:
        # No api_base configured: the SDK's own default, which a client must not replace.
        entry = {"model_name": "cloud", "litellm_params": {"model": "anthropic/claude-test", "api_key": "sk-operator"}}
        gw = await _gateway(gateway, entry)
        value = decoy.url if STEERING_FIELDS[field] == "DECOY" else STEERING_FIELDS[field]
        body = {"model": "cloud", "messages": HI, field: value}
        response = await gw.http.post("/v1/chat/completions", json=body)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == field
        assert error["code"] == "unsupported_parameter"
        assert decoy.bodies == []
        assert "sk-operator" not in response.text
    finally:
        await decoy.stop()


async def test_drop_params_drops_unknown_fields_instead(gateway: GatewayFactory) -> None:
    real = await ProviderFake("anthropic").start()
    decoy = await ProviderFake("anthropic").start()
    try:
        entry = Provider("anthropic", real).entry()
        config = {
            "model_list": [entry],
            "router_settings": {"num_retries": 0},
            "litellm_settings": {"drop_params": True},
        }
        gw = await gateway(config)
        body = {"model": "cloud", "messages": HI, "api_base": decoy.url, "api_key": "sk-attacker", "metadata": {}}
        response = await gw.http.post("/v1/chat/completions", json=body)
        assert response.status_code == 200
        assert decoy.bodies == []
        assert real.headers[-1]["x-api-key"] == "anthropic-key"
    finally:
        await real.stop()
        await decoy.stop()


async def test_openai_fields_reach_the_provider(gateway: GatewayFactory) -> None:
    azure = await FakeUpstream("azure").start()
    try:
        gw = await _gateway(gateway, Provider("azure", azure).entry())
        answer = await gw.openai().chat.completions.create(
            model="cloud", messages=HI, temperature=0.5, seed=3, user="u1", metadata={"a": "b"}, store=False
        )
        assert answer.choices[0].message.content
        sent = azure.bodies[-1]
        assert sent["temperature"] == 0.5
        assert sent["seed"] == 3
        assert "metadata" not in sent
    finally:
        await azure.stop()


async def test_a_client_gone_mid_stream_closes_the_provider_stream(
    gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stream object may outlive the request (LiteLLM's logging keeps references): whatever
    # holds it, the provider's response is closed when the client leaves, not when it is freed.
    from gateway.sdk import SdkClient

    kept: list[Any] = []
    call = SdkClient.call

    async def keeping(self: SdkClient, *args: Any) -> Any:
        kept.append(await call(self, *args))
        return kept[-1]

    monkeypatch.setattr(SdkClient, "call", keeping)
    # 20 MB of text: a client that stops reading makes the gateway wait on its socket, not on the
    # provider, when it hangs up; the provider's stream must be closed all the same.
    fake = await ProviderFake(
        "anthropic", Behaviour(content=" ".join(f"{i:04d}" + "w" * 100_000 for i in range(200)))
    ).start()
    try:
        gw = await _gateway(gateway, Provider("anthropic", fake).entry())
        body = orjson.dumps({"model": "cloud", "messages": HI, "stream": True})
        host, port = gw.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(body), body)
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        await reader.read(1000)
        await asyncio.sleep(0.5)  # a client that stops reading, then hangs up
        writer.close()
        deadline = asyncio.get_running_loop().time() + 5
        while fake.streams_cut == 0:
            assert asyncio.get_running_loop().time() < deadline, "the provider stream was left running"
            await asyncio.sleep(0.02)
    finally:
        await fake.stop()


@pytest.mark.parametrize("status", [400, 401, 500])
async def test_provider_failures_reach_clients_and_logs_without_addresses_or_bodies(
    status: int, gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-ant-api03-secret0123456789"
    detail = f"bad request; see http://10.1.2.3:8080/internal/trace, host 10.1.2.3:8080, key {secret}"
    fake = await ProviderFake("anthropic", Behaviour(fail_status=status), error_message=detail).start()
    try:
        gw = await _gateway(gateway, Provider("anthropic", fake).entry())
        response = await gw.http.post("/v1/chat/completions", json={"model": "cloud", "messages": HI})
        assert response.status_code == (400 if status == 400 else 502)
        logged = " ".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
        for text in (response.text, logged):
            assert "10.1.2.3" not in text
            assert secret not in text
            assert "/internal/trace" not in text
            assert fake.url.removeprefix("http://") not in text
        if status == 400:
            assert response.json()["error"]["message"].startswith("bad request; see [redacted]")
        if status == 401:
            assert "credentials" in response.json()["error"]["message"]
    finally:
        await fake.stop()
