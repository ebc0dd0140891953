"""Anthropic's Messages API through the gateway with the anthropic SDK: translated to chat for
chat-only deployments, passed on as it is to ``anthropic/`` deployments (vLLM, which serves it
itself, is covered in tests/system)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import pytest

from tests.conftest import GatewayFactory, RunningGateway, UpstreamFactory, deployment
from tests.fakes import FakeUpstream
from tests.provider_fakes import ProviderFake

pytestmark = pytest.mark.service

NEBIUS_MODEL = "nebius/meta-llama/Llama-3.3-70B-Instruct"
KEY = "sk-client-key-1234"
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
async def clients() -> AsyncIterator[list[anthropic.AsyncAnthropic]]:
    made: list[anthropic.AsyncAnthropic] = []
    yield made
    for client in made:
        await client.close()


def _client(gw: RunningGateway, made: list[anthropic.AsyncAnthropic], key: str = KEY) -> anthropic.AsyncAnthropic:
    client = anthropic.AsyncAnthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=30)
    made.append(client)
    return client


async def _bridged(
    upstream: UpstreamFactory, gateway: GatewayFactory, **behaviour: object
) -> tuple[FakeUpstream, RunningGateway]:
    nebius = await upstream("nebius", **behaviour)
    config = {
        "model_list": [deployment("chat", nebius, model=NEBIUS_MODEL, api_key="nb-key-123")],
        "gateway_settings": {"api_keys": [{"key": KEY, "name": "claude-tools"}]},
    }
    return nebius, await gateway(config)


async def test_a_chat_only_deployment_answers_messages(
    upstream: UpstreamFactory, gateway: GatewayFactory, clients: list[anthropic.AsyncAnthropic]
) -> None:
    nebius, gw = await _bridged(upstream, gateway)
    message = await _client(gw, clients).messages.create(
        model="chat",
        max_tokens=64,
        system="Be brief.",
        stop_sequences=["END"],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                ],
            }
        ],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello from the fake (nebius)"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 7)
    assert message.model == "chat"
    sent = nebius.bodies[-1]
    assert sent["max_tokens"] == 64
    assert sent["stop"] == ["END"]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
    }


async def test_bridged_stream_has_anthropics_events(
    upstream: UpstreamFactory, gateway: GatewayFactory, clients: list[anthropic.AsyncAnthropic]
) -> None:
    _, gw = await _bridged(upstream, gateway)
    client = _client(gw, clients)
    async with client.messages.stream(
        model="chat", max_tokens=64, messages=[{"role": "user", "content": "Say hello"}]
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds
    assert "message_delta" in kinds
    assert final.content[0].type == "text"
    assert final.content[0].text == "Hello from the fake (nebius)"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 5)
    assert final.stop_reason == "end_turn"


async def test_bridged_tool_use_and_results(
    upstream: UpstreamFactory, gateway: GatewayFactory, clients: list[anthropic.AsyncAnthropic]
) -> None:
    nebius, gw = await _bridged(upstream, gateway, tool_call=("get_weather", '{"city": "Paris"}'))
    client = _client(gw, clients)
    asked = [{"role": "user", "content": "Weather in Paris?"}]
    message = await client.messages.create(model="chat", max_tokens=64, tools=[WEATHER], messages=asked)
    use = message.content[0]
    assert use.type == "tool_use"
    assert use.name == "get_weather"
    assert use.input == {"city": "Paris"}
    assert message.stop_reason == "tool_use"
    async with client.messages.stream(model="chat", max_tokens=64, tools=[WEATHER], messages=asked) as stream:
        streamed = await stream.get_final_message()
    assert streamed.content[0].type == "tool_use"
    assert streamed.content[0].input == {"city": "Paris"}
    nebius.behaviour.tool_call = None
    await client.messages.create(
        model="chat",
        max_tokens=64,
        tools=[WEATHER],
        tool_choice={"type": "any"},
        messages=[
            *asked,
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
        ],
    )
    sent = nebius.bodies[-1]
    assert sent["tool_choice"] == "required"
    assert sent["messages"][1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": use.id, "content": "sunny"}


async def test_errors_leave_in_anthropics_envelope(
    upstream: UpstreamFactory, gateway: GatewayFactory, clients: list[anthropic.AsyncAnthropic]
) -> None:
    nebius, gw = await _bridged(upstream, gateway)
    with pytest.raises(anthropic.AuthenticationError) as denied:
        await _client(gw, clients, key="sk-wrong-key-000").messages.create(
            model="chat", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert denied.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid API key"},
    }
    no_max = await gw.http.post(
        "/v1/messages",
        headers={"x-api-key": KEY},
        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert no_max.status_code == 400
    assert no_max.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "'max_tokens' is required"},
    }
    with pytest.raises(anthropic.NotFoundError):
        await _client(gw, clients).messages.create(
            model="missing", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(anthropic.BadRequestError) as unsupported:
        await _client(gw, clients).messages.count_tokens(model="chat", messages=[{"role": "user", "content": "hi"}])
    assert "does not serve /v1/messages/count_tokens" in unsupported.value.message
    assert nebius.bodies == []
    nebius.behaviour.fail_status = 503
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        await _client(gw, clients).messages.create(
            model="chat", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["error"]["type"] == "overloaded_error"


async def test_anthropic_deployments_get_the_request_as_it_is(
    gateway: GatewayFactory, clients: list[anthropic.AsyncAnthropic]
) -> None:
    fake = await ProviderFake("anthropic").start()
    try:
        entry = {
            "model_name": "claude",
            "litellm_params": {"model": "anthropic/claude-test", "api_base": fake.url, "api_key": "sk-ant-operator"},
        }
        gw = await gateway({"model_list": [entry], "gateway_settings": {"api_keys": [{"key": KEY}]}})
        client = _client(gw, clients)
        message = await client.messages.create(
            model="claude",
            max_tokens=32,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"anthropic-beta": "tools-2024-04-04"},
        )
        assert message.content[0].type == "text"
        assert message.model == "claude"
        assert fake.bodies[-1] == {
            "model": "claude-test",
            "max_tokens": 32,
            "messages": [{"role": "user", "content": "hi"}],
        }
        headers = {k.lower(): v for k, v in fake.headers[-1].items()}
        assert headers["x-api-key"] == "sk-ant-operator"
        assert headers["anthropic-version"] == "2023-06-01"
        assert headers["anthropic-beta"] == "tools-2024-04-04"
        assert "authorization" not in headers
        async with client.messages.stream(
            model="claude", max_tokens=32, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            final = await stream.get_final_message()
        assert final.stop_reason == "end_turn"
        assert final.usage.output_tokens == 7
    finally:
        await fake.stop()
