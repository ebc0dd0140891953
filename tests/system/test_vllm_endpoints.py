"""The Responses API, Anthropic's Messages API, transcription, rerank and score through the gateway
to real vLLM servers (CPU, tiny random models), which serve them themselves: the gateway passes
them through. Clients are the openai and anthropic SDKs. Weights are random: structure, ids and
usage are checked, not text."""

from __future__ import annotations

import array
import io
import math
import wave

import anthropic
import openai
import pytest

from tests.conftest import GatewayFactory, RunningGateway
from tests.system.conftest import RERANKER_NAME, SERVED_NAME, WHISPER_NAME, VllmServer

pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]
KEY = "sk-endpoints-test-1"


async def _gateway(gateway: GatewayFactory, vllm: VllmServer) -> RunningGateway:
    entry = {
        "model_name": "vision",
        "litellm_params": {"model": f"hosted_vllm/{SERVED_NAME}", "api_base": f"{vllm.url}/v1", "timeout": 120},
        "model_info": {"supports_vision": True},
    }
    return await gateway({"model_list": [entry], "gateway_settings": {"api_keys": [{"key": KEY}]}})


async def test_responses_passed_through_with_follow_ups(gateway: GatewayFactory, vllm_server: VllmServer) -> None:
    gw = await _gateway(gateway, vllm_server)
    client = gw.openai(api_key=KEY)
    first = await client.responses.create(model="vision", input="Name a colour.", max_output_tokens=4)
    assert first.model == "vision"
    assert first.id.startswith("resp_d")  # wrapped: it leads back to this vLLM
    assert first.usage is not None
    assert first.usage.output_tokens == 4
    assert first.status == "incomplete"
    assert first.incomplete_details is not None
    assert first.output[0].type == "message"
    again = await client.responses.retrieve(first.id)
    assert (again.id, again.output_text) == (first.id, first.output_text)
    follow = await client.responses.create(
        model="vision", input="And another.", previous_response_id=first.id, max_output_tokens=3
    )
    assert follow.previous_response_id == first.id
    assert follow.usage is not None
    assert follow.usage.input_tokens > first.usage.input_tokens
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="vision", input="x", previous_response_id=first.id[:-2] + "00")


async def test_responses_stream_passed_through(gateway: GatewayFactory, vllm_server: VllmServer) -> None:
    gw = await _gateway(gateway, vllm_server)
    client = gw.openai(api_key=KEY)
    async with client.responses.stream(model="vision", input="Count to three.", max_output_tokens=5) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert kinds[0] == "response.created"
    assert kinds.count("response.output_text.delta") >= 1
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert final.id.startswith("resp_d")
    assert final.model == "vision"
    assert (await client.responses.retrieve(final.id)).id == final.id
    metrics = (await gw.http.get("/metrics")).text
    assert 'endpoint="responses",model_group="vision",status_class="2xx"' in metrics


async def test_anthropic_messages_passed_through(gateway: GatewayFactory, vllm_server: VllmServer) -> None:
    gw = await _gateway(gateway, vllm_server)
    client = anthropic.AsyncAnthropic(base_url=gw.url, api_key=KEY, max_retries=0, timeout=120)
    try:
        message = await client.messages.create(
            model="vision", max_tokens=4, system="Be brief.", messages=[{"role": "user", "content": "Hello"}]
        )
        assert message.type == "message"
        assert message.role == "assistant"
        assert message.model == "vision"
        assert message.stop_reason == "max_tokens"
        assert message.usage.output_tokens == 4
        async with client.messages.stream(
            model="vision", max_tokens=3, messages=[{"role": "user", "content": "Hi"}]
        ) as stream:
            final = await stream.get_final_message()
        assert final.usage.output_tokens == 3
        assert final.content[0].type == "text"
        counted = await client.messages.count_tokens(
            model="vision", system="Be brief.", messages=[{"role": "user", "content": "Hello"}]
        )
        assert counted.input_tokens == message.usage.input_tokens
        with pytest.raises(anthropic.BadRequestError) as refused:
            await client.messages.create(
                model="vision", max_tokens=4, messages=[{"role": "user", "content": "x" * 5000}]
            )
        assert refused.value.body["type"] == "error"  # vLLM's 400, in Anthropic's envelope
    finally:
        await client.close()


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank", "/v2/rerank"])
async def test_rerank_and_score_on_a_real_cross_encoder(
    gateway: GatewayFactory, reranker_server: VllmServer, path: str
) -> None:
    entry = {
        "model_name": "rerank",
        "litellm_params": {"model": f"hosted_vllm/{RERANKER_NAME}", "api_base": f"{reranker_server.url}/v1"},
    }
    gw = await gateway({"model_list": [entry], "gateway_settings": {"api_keys": [{"key": KEY}]}})
    headers = {"Authorization": f"Bearer {KEY}"}
    documents = ["a red car", "a dog on the road", "the sky"]
    ranked = await gw.http.post(
        path, headers=headers, json={"model": "rerank", "query": "red car", "documents": documents, "top_n": 2}
    )
    assert ranked.status_code == 200, ranked.text
    body = ranked.json()
    assert body["model"] == "rerank"
    assert len(body["results"]) == 2
    assert {r["document"]["text"] for r in body["results"]} <= set(documents)
    scores = [r["relevance_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    scored = await gw.http.post(
        "/v1/score", headers=headers, json={"model": "rerank", "text_1": "red car", "text_2": documents}
    )
    assert scored.status_code == 200, scored.text
    assert [d["index"] for d in scored.json()["data"]] == [0, 1, 2]
    assert scored.json()["usage"]["prompt_tokens"] > 0
    metrics = (await gw.http.get("/metrics")).text
    assert 'endpoint="score",model_group="rerank",status_class="2xx"' in metrics


def _tone_wav(seconds: float = 2.0, rate: int = 16000) -> bytes:
    """A 440 Hz tone as 16-bit mono WAV (the weights are random: any sound will do)."""
    samples = array.array("h", (int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(int(seconds * rate))))
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())
    return out.getvalue()


async def test_transcriptions_on_a_real_whisper(gateway: GatewayFactory, whisper_server: VllmServer) -> None:
    entry = {
        "model_name": "speech",
        "litellm_params": {"model": f"hosted_vllm/{WHISPER_NAME}", "api_base": f"{whisper_server.url}/v1"},
    }
    gw = await gateway({"model_list": [entry], "gateway_settings": {"api_keys": [{"key": KEY}]}})
    client = gw.openai(api_key=KEY)
    audio = _tone_wav()
    heard = await client.audio.transcriptions.create(model="speech", file=("tone.wav", audio), language="en")
    assert isinstance(heard.text, str)
    verbose = await client.audio.transcriptions.create(
        model="speech", file=("tone.wav", audio), response_format="verbose_json", language="en"
    )
    assert verbose.duration == pytest.approx(2.0)
    assert verbose.language == "en"
    headers = {"Authorization": f"Bearer {KEY}"}
    async with gw.http.stream(
        "POST",
        "/v1/audio/transcriptions",
        headers=headers,
        data={"model": "speech", "stream": "true"},
        files={"file": ("tone.wav", audio, "audio/wav")},
    ) as response:
        assert response.status_code == 200
        body = (await response.aread()).decode()
    assert "transcription.chunk" in body
    assert body.rstrip().endswith("data: [DONE]")
    assert WHISPER_NAME not in body  # the model is named as the gateway's group
    translated = await gw.http.post(
        "/v1/audio/translations", headers=headers, data={"model": "speech"}, files={"file": ("tone.wav", audio)}
    )
    assert translated.status_code == 200
    assert "text" in translated.json()
    unsupported = await gw.http.post(
        "/v1/audio/transcriptions",
        headers=headers,
        data={"model": "speech", "response_format": "srt"},
        files={"file": ("tone.wav", audio)},
    )
    assert unsupported.status_code == 400  # vLLM's own refusal, passed on
    metrics = (await gw.http.get("/metrics")).text
    assert 'endpoint="audio/transcriptions",model_group="speech",status_class="2xx"' in metrics
