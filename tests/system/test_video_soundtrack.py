"""The soundtrack through the real gateway to a real vLLM serving a tiny random Whisper (built
locally): every window is accepted and transcribed, and the segments land at absolute times."""

from __future__ import annotations

import pytest

from tests.conftest import GatewayFactory
from tests.metrics_samples import sample
from tests.system.conftest import SERVED_NAME, WHISPER_NAME, VllmServer
from tests.video.conftest import ServiceFactory, Soundtracks, soundtracks, video_service
from tests.video.test_api import _events_until_done, _upload

__all__ = ["soundtracks", "video_service"]  # fixtures shared with the video tests

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]
KEY = "sk-system-test-key"


async def test_a_video_s_soundtrack_is_transcribed_by_whisper_on_vllm_through_the_gateway(
    gateway: GatewayFactory,
    vllm_server: VllmServer,
    whisper_server: VllmServer,
    video_service: ServiceFactory,
    soundtracks: Soundtracks,
) -> None:
    local = {"model": f"hosted_vllm/{SERVED_NAME}", "api_base": f"{vllm_server.url}/v1", "timeout": 120}
    whisper = {"model": f"hosted_vllm/{WHISPER_NAME}", "api_base": f"{whisper_server.url}/v1", "timeout": 120}
    gw = await gateway(
        {
            "model_list": [
                {"model_name": "vision", "litellm_params": local, "model_info": {"supports_vision": True}},
                {"model_name": "chat", "litellm_params": local},
                {"model_name": "speech", "litellm_params": whisper},
            ],
            "general_settings": {"master_key": KEY},
        }
    )
    service = await video_service(
        gateway_url=f"{gw.url}/v1",
        api_key=KEY,
        description_max_tokens=12,
        answer_max_tokens=24,
        context_token_budget=150,
        summary_batch_size=3,
        chunk_seconds=4,
        transcription_model="speech",
        transcription_window_s=8,  # two windows, cut at the pause between the sentences
    )
    uploaded = await _upload(service, soundtracks.speech_mp4, fps="1")
    assert uploaded.status_code == 200, uploaded.text
    session_id = uploaded.json()["session_id"]
    assert (await _events_until_done(service, session_id))[-1]["event"] == "completed"
    status = (await service.http.get(f"/status/{session_id}")).json()
    assert status["audio"] == "done", status
    assert status["failed_windows"] == 0, status
    assert status["transcribed_windows"] >= 2
    assert status["speech_percentage"] == 100.0
    transcript = (await service.http.get(f"/sessions/{session_id}/transcript")).json()
    assert transcript["failed"] == []
    for segment in transcript["segments"]:  # random weights say anything, but at absolute times
        assert 0.0 <= segment["start_s"] <= segment["end_s"] <= 12.0
    metrics = (await gw.http.get("/metrics")).text
    served = sample(metrics, "gateway_requests_total", endpoint="audio/transcriptions", status_class="2xx")
    assert served == status["transcribed_windows"]
