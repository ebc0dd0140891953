"""The video service through the real gateway to the real vLLM CPU server with the tiny model."""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import GatewayFactory
from tests.metrics_samples import sample
from tests.system.conftest import SERVED_NAME, VllmServer
from tests.video.conftest import ServiceFactory, Videos, video_service, videos

__all__ = ["video_service", "videos"]  # fixtures shared with the video tests

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]


async def test_upload_to_answer_through_gateway_and_vllm(
    gateway: GatewayFactory, vllm_server: VllmServer, video_service: ServiceFactory, videos: Videos
) -> None:
    local = {"model": f"hosted_vllm/{SERVED_NAME}", "api_base": f"{vllm_server.url}/v1", "timeout": 120}
    gw = await gateway(
        {
            "model_list": [
                {"model_name": "vision", "litellm_params": local, "model_info": {"supports_vision": True}},
                {"model_name": "chat", "litellm_params": local},
            ],
            "general_settings": {"master_key": "sk-system-test-key"},
        }
    )
    # The tiny model has a 512-token context: keep descriptions, summaries and answers short.
    service = await video_service(
        gateway_url=f"{gw.url}/v1",
        api_key="sk-system-test-key",
        description_max_tokens=12,
        answer_max_tokens=24,
        context_token_budget=150,
        summary_batch_size=3,
        clip_mode="images",  # one picture a request here; test_video_clips sends the same frames as clips
        look_frames=2,  # two pictures beside the question fit the tiny model's context
        look_max_tokens=16,
    )
    with videos.h264_mp4.open("rb") as handle:
        uploaded = await service.http.post("/upload", files={"file": ("h264.mp4", handle)}, data={"fps": "1"})
    session_id = uploaded.json()["session_id"]
    events = []
    async with service.http.stream("GET", f"/sessions/{session_id}/events") as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(orjson.loads(line[6:]))
    assert events[-1]["event"] == "completed", events[-1]
    frames = (await service.http.get(f"/sessions/{session_id}/frames")).json()["frames"]
    assert [f["timestamp_s"] for f in frames] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert all(isinstance(f["description"], str) and f["error"] is None for f in frames)
    chat = await service.http.post("/chat", json={"session_id": session_id, "question": "What happens?", "look": False})
    assert chat.status_code == 200, chat.text
    assert isinstance(chat.json()["answer"], str)
    # Looking again: vLLM is shown the frames around 00:02 as pictures with the question, and takes them.
    looked = await service.http.post("/chat", json={"session_id": session_id, "question": "What is at 00:02?"})
    assert looked.status_code == 200, looked.text
    assert looked.json()["looked"] is True, looked.json()["notes"]
    assert 2.0 in [m["timestamp_s"] for m in looked.json()["looked_at"]]
    assert len(looked.json()["looked_at"]) == 2
    metrics = (await gw.http.get("/metrics")).text
    assert (
        sample(metrics, "gateway_requests_total", deployment="vision/0", model_group="vision", status_class="2xx")
        == 6.0
    )
