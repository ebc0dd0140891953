"""The Responses API through the gateway with the openai SDK: bridged to chat for chat-only
deployments (Nebius), passed through with wrapped ids for the ones that serve it (vLLM's
wire format is covered against a real vLLM in tests/system)."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import GatewayFactory, RunningGateway, UpstreamFactory, deployment
from tests.fakes import FakeUpstream
from tests.provider_fakes import ProviderFake
from tests.redis_server import RedisServer, redis_server

pytestmark = pytest.mark.service
__all__ = ["redis_server"]

NEBIUS_MODEL = "nebius/meta-llama/Llama-3.3-70B-Instruct"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


async def _bridged(
    upstream: UpstreamFactory, gateway: GatewayFactory, **behaviour: object
) -> tuple[FakeUpstream, RunningGateway]:
    nebius = await upstream("nebius", **behaviour)
    gw = await gateway({"model_list": [deployment("chat", nebius, model=NEBIUS_MODEL, api_key="nb-key-123")]})
    return nebius, gw


async def test_a_chat_only_deployment_answers_responses(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    nebius, gw = await _bridged(upstream, gateway)
    client = gw.openai()
    response = await client.responses.create(
        model="chat",
        instructions="Be brief.",
        input="Say hello",
        max_output_tokens=50,
        temperature=0.2,
        text={"format": {"type": "json_schema", "name": "hello", "schema": {"type": "object"}, "strict": True}},
    )
    assert response.output_text == "Hello from the fake (nebius)"
    assert response.status == "completed"
    assert response.model == "chat"
    assert response.id.startswith("resp_")
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (11, 7, 18)
    sent = nebius.bodies[-1]
    assert sent["model"] == "meta-llama/Llama-3.3-70B-Instruct"
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
    assert sent["max_tokens"] == 50
    assert sent["temperature"] == 0.2
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "hello", "schema": {"type": "object"}, "strict": True},
    }


async def test_bridged_stream_has_the_events_the_sdk_expects(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    _, gw = await _bridged(upstream, gateway)
    client = gw.openai()
    async with client.responses.stream(model="chat", input="Say hello") as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.output_text.delta" in kinds
    assert kinds[-1] == "response.completed"
    assert final.output_text == "Hello from the fake (nebius)"
    assert final.usage is not None
    assert final.usage.input_tokens == 11
    again = await client.responses.retrieve(final.id)
    assert again.output_text == final.output_text


async def test_bridged_function_calls_and_their_outputs(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    nebius, gw = await _bridged(upstream, gateway, tool_call=("get_weather", '{"city": "Paris"}'))
    client = gw.openai()
    first = await client.responses.create(model="chat", input="Weather in Paris?", tools=[WEATHER])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    assert calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    assert nebius.bodies[-1]["tools"][0]["function"]["name"] == "get_weather"
    # The next turn: the tool's output, continuing from the first response.
    nebius.behaviour.tool_call = None
    second = await client.responses.create(
        model="chat",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}],
        tools=[WEATHER],
    )
    assert second.output_text
    messages = nebius.bodies[-1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert messages[2] == {"role": "tool", "tool_call_id": calls[0].call_id, "content": "sunny"}
    # Streamed, the call arrives as argument deltas and a finished item.
    nebius.behaviour.tool_call = ("get_weather", '{"city": "Rome"}')
    async with client.responses.stream(model="chat", input="Weather in Rome?", tools=[WEATHER]) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    streamed = [item for item in final.output if item.type == "function_call"]
    assert json.loads(streamed[0].arguments) == {"city": "Rome"}


async def test_images_reach_the_chat_deployment(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    nebius, gw = await _bridged(upstream, gateway)
    image = "data:image/png;base64,iVBORw0KGgo="
    await gw.openai().responses.create(
        model="chat",
        input=[
            {
                "role": "user",
                "content": [{"type": "input_text", "text": "What is it?"}, {"type": "input_image", "image_url": image}],
            }
        ],
    )
    content = nebius.bodies[-1]["messages"][0]["content"]
    assert content == [{"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": image}}]


async def test_stored_responses_can_be_read_listed_and_deleted(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    _, gw = await _bridged(upstream, gateway)
    client = gw.openai()
    response = await client.responses.create(model="chat", input="Say hello")
    assert (await client.responses.retrieve(response.id)).id == response.id
    items = await client.responses.input_items.list(response.id)
    assert [item.type for item in items.data] == ["message"]
    await client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)
    unstored = await client.responses.create(model="chat", input="Say hello", store=False)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(unstored.id)


async def test_bad_responses_requests_never_reach_a_deployment(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    nebius, gw = await _bridged(upstream, gateway)
    client = gw.openai()
    missing_input = await gw.http.post("/v1/responses", json={"model": "chat"})
    assert missing_input.status_code == 400
    assert missing_input.json()["error"]["param"] == "input"
    with pytest.raises(openai.NotFoundError) as unknown:
        await client.responses.create(model="chat", input="hi", previous_response_id="resp_gdeadbeef")
    assert "was not found" in unknown.value.message
    forged = "resp_d0123456789ab_resp_1"
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="chat", input="hi", previous_response_id=forged)
    with pytest.raises(openai.BadRequestError) as tool:
        await client.responses.create(model="chat", input="hi", tools=[{"type": "web_search"}])
    assert "web_search" in tool.value.message
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(model="chat", input=[{"type": "computer_call"}])
    assert nebius.bodies == []


async def test_wrapped_ids_lead_back_to_the_deployment_that_made_them(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    """A passed-through id names its deployment by a keyed tag, never by its address; a GET
    and a follow-up go back to that deployment, with its own id."""
    fakes = [await upstream(f"vllm-{i}") for i in range(2)]
    config = {
        "model_list": [deployment("vision", fake, id=f"vllm-{i}") for i, fake in enumerate(fakes)],
        "general_settings": {"master_key": "sk-master-123456"},
        "router_settings": {"routing_strategy": "simple-shuffle"},
    }
    gw = await gateway(config)
    client = gw.openai(api_key="sk-master-123456")
    # The shuffle is random: create until both deployments have made some (at least six in all),
    # so that the checks below cover both and cannot pass by every id naming one deployment.
    made = []
    for n in range(64):
        made.append(await client.responses.create(model="vision", input=f"turn {n}"))
        if len(made) >= 6 and all(fake.responses for fake in fakes):
            break
    for response in made:
        upstream_id = response.id.split("_", 2)[2]  # resp_d<tag>_<the deployment's own id>
        owner = next(fake for fake in fakes if upstream_id in fake.responses)
        assert response.id.startswith("resp_d")
        assert "127.0.0.1" not in response.id
        assert response.model == "vision"
        others = [fake for fake in fakes if fake is not owner]
        before = [len(fake.paths) for fake in others]
        again = await client.responses.retrieve(response.id)
        assert again.id == response.id
        assert again.output_text == response.output_text
        follow = await client.responses.create(model="vision", input="more", previous_response_id=response.id)
        assert owner.bodies[-1]["previous_response_id"] == upstream_id
        assert follow.previous_response_id == response.id  # the id the client knows, not the deployment's
        assert follow.id != response.id
        assert [len(fake.paths) for fake in others] == before
    # An id with a tag no deployment has leads nowhere, whatever its own part says.
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve("resp_dffffffffffff_resp_vllm00")
    assert all(fake.responses for fake in fakes)  # both deployments served some


async def test_models_retrieve(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    _nebius, gw = await _bridged(upstream, gateway)
    client = gw.openai()
    card = await client.models.retrieve("chat")
    assert (card.id, card.owned_by) == ("chat", "nebius")
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("missing")


async def test_sdk_providers_answer_responses_and_messages_through_the_bridge(gateway: GatewayFactory) -> None:
    """An ``anthropic/`` deployment (litellm SDK) answers the Responses API, and a ``gemini/`` one
    Anthropic's Messages API: both translated to chat and sent through the SDK."""
    claude, gemini = await ProviderFake("anthropic").start(), await ProviderFake("gemini").start()
    try:
        entries = [
            {
                "model_name": "claude",
                "litellm_params": {"model": "anthropic/claude-test", "api_base": claude.url, "api_key": "sk-ant-1"},
            },
            {
                "model_name": "gemini",
                "litellm_params": {"model": "gemini/gemini-test", "api_base": gemini.url, "api_key": "g-key-1"},
            },
        ]
        gw = await gateway({"model_list": entries})
        client = gw.openai()
        response = await client.responses.create(model="claude", input="Say hello", max_output_tokens=16)
        assert response.output_text == "Hello from the fake"
        assert response.model == "claude"
        assert claude.bodies[-1]["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}]
        async with client.responses.stream(model="claude", input="Say hello") as stream:
            final = await stream.get_final_response()
        assert final.output_text.strip() == "Hello from the fake"
        messages = await gw.http.post(
            "/v1/messages",
            json={"model": "gemini", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert messages.status_code == 200, messages.text
        body = messages.json()
        assert body["type"] == "message"
        assert body["content"][0]["text"] == "Hello from the fake"
        assert body["usage"] == {"input_tokens": 11, "output_tokens": 7, "cache_read_input_tokens": 0}
    finally:
        await claude.stop()
        await gemini.stop()


async def test_bridged_responses_are_shared_through_redis(
    upstream: UpstreamFactory, gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    """Two replicas with Redis configured: a response made on one is read, continued and
    deleted on the other."""
    nebius = await upstream("nebius")
    config = {
        "model_list": [deployment("chat", nebius, model=NEBIUS_MODEL, api_key="nb-key-123")],
        "router_settings": {"redis_host": "127.0.0.1", "redis_port": redis_server.port},
    }
    one, two = await gateway(config), await gateway(config)
    made = await one.openai().responses.create(model="chat", input="Say hello")
    other = two.openai()
    assert (await other.responses.retrieve(made.id)).output_text == made.output_text
    await other.responses.create(model="chat", input="Again", previous_response_id=made.id)
    assert [m["role"] for m in nebius.bodies[-1]["messages"]] == ["user", "assistant", "user"]
    await other.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        await one.openai().responses.retrieve(made.id)
