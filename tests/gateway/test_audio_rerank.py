"""Audio (transcriptions, translations, speech), rerank and score through the gateway, against a
fake that answers in vLLM's wire format; the openai SDK where it has the endpoint."""

from __future__ import annotations

import io

import openai
import pytest

from tests.conftest import GatewayFactory, RunningGateway, UpstreamFactory, deployment
from tests.fakes import FakeUpstream
from tests.metrics_samples import sample

pytestmark = pytest.mark.service

AUDIO = b"RIFF" + bytes(range(256)) * 8  # what a recogniser gets is the fake's business: bytes only


async def _vllm(
    upstream: UpstreamFactory, gateway: GatewayFactory, **settings: object
) -> tuple[FakeUpstream, RunningGateway]:
    fake = await upstream("whisper")
    config = {
        "model_list": [
            deployment("speech", fake, model="hosted_vllm/openai/whisper-large-v3"),
            deployment("chat", fake, model="nebius/meta-llama/Llama-3.3-70B-Instruct", api_key="nb-key-123"),
        ],
        "gateway_settings": settings,
    }
    return fake, await gateway(config)


@pytest.mark.parametrize("response_format", ["json", "text", "srt", "vtt", "verbose_json"])
async def test_transcriptions_in_every_format(
    upstream: UpstreamFactory, gateway: GatewayFactory, response_format: str
) -> None:
    fake, gw = await _vllm(upstream, gateway)
    client = gw.openai()
    answer = await client.audio.transcriptions.create(
        model="speech",
        file=("talk.wav", AUDIO, "audio/wav"),
        response_format=response_format,  # type: ignore[arg-type]
        language="en",
    )
    expected = f"{len(AUDIO)} bytes heard by whisper"
    text = answer if isinstance(answer, str) else answer.text
    assert expected in text
    if response_format == "verbose_json":
        assert answer.segments[0].end == 1.5  # type: ignore[union-attr]
    if response_format == "vtt":
        assert text.startswith("WEBVTT")
    sent = fake.bodies[-1]
    assert sent["model"] == "openai/whisper-large-v3"
    assert (sent["file_bytes"], sent["filename"], sent["language"]) == (len(AUDIO), "talk.wav", "en")


async def test_large_uploads_are_relayed_whole_and_over_the_cap_refused(
    upstream: UpstreamFactory, gateway: GatewayFactory
) -> None:
    fake, gw = await _vllm(upstream, gateway, max_audio_bytes=4 * 1024 * 1024)
    client = gw.openai()
    big = bytes(range(256)) * (12 * 1024)  # 3 MiB: past the in-memory spool, sent from its file
    # (The SDK's translations are deprecated: plain multipart, as curl sends it.)
    answer = await gw.http.post("/v1/audio/translations", data={"model": "speech"}, files={"file": ("long.mp3", big)})
    assert answer.json()["text"].startswith(f"{len(big)} bytes heard")
    with pytest.raises(openai.APIStatusError) as refused:
        await client.audio.transcriptions.create(model="speech", file=("huge.wav", big * 2))
    assert refused.value.status_code == 413
    assert len(fake.bodies) == 1


async def test_streamed_transcription(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    _, gw = await _vllm(upstream, gateway)
    async with gw.http.stream(
        "POST",
        "/v1/audio/transcriptions",
        data={"model": "speech", "stream": "true"},
        files={"file": ("talk.wav", AUDIO, "audio/wav")},
    ) as response:
        assert response.status_code == 200
        body = (await response.aread()).decode()
    assert body.count("transcription.chunk") >= 4
    assert body.rstrip().endswith("data: [DONE]")
    assert '"model":"speech"' in body
    assert "whisper-large-v3" not in body


async def test_bad_audio_requests(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    fake, gw = await _vllm(upstream, gateway)
    no_file = await gw.http.post("/v1/audio/transcriptions", data={"model": "speech"}, files={"x": ("a", b"1")})
    assert no_file.status_code == 400
    assert no_file.json()["error"]["param"] == "file"
    not_multipart = await gw.http.post("/v1/audio/transcriptions", json={"model": "speech"})
    assert not_multipart.status_code == 400
    no_model = await gw.http.post("/v1/audio/transcriptions", files={"file": ("a.wav", AUDIO)})
    assert no_model.status_code == 400
    assert no_model.json()["error"]["param"] == "model"
    unsupported = await gw.http.post(
        "/v1/audio/transcriptions", data={"model": "chat"}, files={"file": ("a.wav", AUDIO)}
    )
    assert unsupported.status_code == 400
    assert unsupported.json()["error"]["code"] == "unsupported_endpoint"
    assert fake.bodies == []


async def test_speech_is_streamed_back(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    fake, gw = await _vllm(upstream, gateway)
    client = gw.openai()
    async with client.audio.speech.with_streaming_response.create(
        model="speech", voice="alloy", input="hello there"
    ) as response:
        assert response.headers["content-type"] == "audio/wav"
        audio = io.BytesIO()
        async for piece in response.iter_bytes():
            audio.write(piece)
    assert audio.getvalue().startswith(b"RIFF")
    assert len(audio.getvalue()) == 12 + 4 * 8192
    assert fake.bodies[-1] == {"model": "openai/whisper-large-v3", "voice": "alloy", "input": "hello there"}


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank", "/v2/rerank"])
async def test_rerank(upstream: UpstreamFactory, gateway: GatewayFactory, path: str) -> None:
    fake, gw = await _vllm(upstream, gateway)
    answer = await gw.http.post(
        path,
        json={"model": "speech", "query": "red bicycle", "documents": ["a cat", "a red bicycle", "red"], "top_n": 2},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [r["index"] for r in body["results"]] == [1, 2]
    assert body["model"] == "speech"
    assert fake.bodies[-1]["model"] == "openai/whisper-large-v3"
    missing = await gw.http.post(path, json={"model": "speech", "query": "red"})
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "documents"


async def test_score_and_what_it_refuses(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    fake, gw = await _vllm(upstream, gateway)
    answer = await gw.http.post("/v1/score", json={"model": "speech", "text_1": "a", "text_2": ["b", "c"]})
    assert answer.status_code == 200
    assert [d["score"] for d in answer.json()["data"]] == [0.5, 0.5]
    served = len(fake.bodies)
    one_side = await gw.http.post("/v1/score", json={"model": "speech", "text_1": "a"})
    assert one_side.status_code == 400
    streamed = await gw.http.post("/v1/score", json={"model": "speech", "text_1": "a", "text_2": "b", "stream": True})
    assert streamed.status_code == 400
    assert streamed.json()["error"]["param"] == "stream"
    on_chat = await gw.http.post("/v1/rerank", json={"model": "chat", "query": "a", "documents": ["b"]})
    assert on_chat.status_code == 400
    assert "does not serve /v1/rerank" in on_chat.json()["error"]["message"]
    assert len(fake.bodies) == served


async def test_each_endpoint_is_its_own_metric_label(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    _, gw = await _vllm(upstream, gateway)
    await gw.http.post("/v1/rerank", json={"model": "speech", "query": "a", "documents": ["b"]})
    await gw.http.post("/v1/score", json={"model": "speech", "text_1": "a", "text_2": "b"})
    text = (await gw.http.get("/metrics")).text
    for endpoint in ("rerank", "score"):
        assert (
            sample(text, "gateway_requests_total", deployment="speech/0", endpoint=endpoint, status_class="2xx") == 1.0
        )


async def test_sdk_providers_rerank_transcribe_and_speak(upstream: UpstreamFactory, gateway: GatewayFactory) -> None:
    """Providers LiteLLM serves these endpoints for reach them through the SDK (Jina's rerank,
    Groq's Whisper, Azure's speech, each in its own wire format); others get a clear 400."""
    fake = await upstream("cloud")
    origin = fake.url.removesuffix("/v1")
    entries = [
        {"model_name": "rerank", "litellm_params": {"model": "jina_ai/jina-reranker-v2", "api_base": origin}},
        {"model_name": "whisper", "litellm_params": {"model": "groq/whisper-large-v3", "api_base": fake.url}},
        {
            "model_name": "tts",
            "litellm_params": {"model": "azure/tts", "api_base": origin, "api_version": "2024-06-01"},
        },
        {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-test", "api_base": origin}},
    ]
    for entry in entries:
        entry["litellm_params"]["api_key"] = "sk-provider-1"
    gw = await gateway({"model_list": entries})
    client = gw.openai()
    ranked = await gw.http.post(
        "/v1/rerank", json={"model": "rerank", "query": "red bicycle", "documents": ["a cat", "a red bicycle"]}
    )
    assert ranked.status_code == 200, ranked.text
    assert ranked.json()["results"][0]["index"] == 1
    assert fake.bodies[-1]["model"] == "jina-reranker-v2"
    heard = await client.audio.transcriptions.create(model="whisper", file=("talk.wav", AUDIO), language="en")
    assert heard.text == f"{len(AUDIO)} bytes heard by cloud"
    assert (fake.bodies[-1]["model"], fake.bodies[-1]["language"]) == ("whisper-large-v3", "en")
    as_text = await client.audio.transcriptions.create(
        model="whisper", file=("talk.wav", AUDIO), response_format="text"
    )
    assert as_text.strip() == f"{len(AUDIO)} bytes heard by cloud"
    speech = await client.audio.speech.create(model="tts", voice="alloy", input="hello there")
    assert speech.content.startswith(b"RIFF")
    assert fake.bodies[-1] == {"model": "tts", "voice": "alloy", "input": "hello there"}
    served = len(fake.bodies)
    steering = await gw.http.post(
        "/v1/rerank", json={"model": "rerank", "query": "q", "documents": ["d"], "api_base": "http://evil"}
    )
    assert steering.status_code == 400
    assert steering.json()["error"]["code"] == "unsupported_parameter"
    unsupported = await gw.http.post("/v1/rerank", json={"model": "claude", "query": "q", "documents": ["d"]})
    assert unsupported.status_code == 400
    assert "(anthropic/) does not serve /v1/rerank" in unsupported.json()["error"]["message"]
    streamed = await gw.http.post(
        "/v1/audio/transcriptions", data={"model": "whisper", "stream": "true"}, files={"file": ("a.wav", AUDIO)}
    )
    assert streamed.status_code == 400
    assert streamed.json()["error"]["param"] == "stream"
    assert len(fake.bodies) == served
