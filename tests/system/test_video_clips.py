"""Native clip mode against the real vLLM CPU server with the tiny model: a job's clips go to
vLLM as video items through the gateway, and cost fewer prompt tokens than the same frames as images."""

from __future__ import annotations

import base64

import orjson
import pytest

from tests.conftest import GatewayFactory
from tests.metrics_samples import sample as metric
from tests.system.conftest import SERVED_NAME, VllmServer
from tests.video.conftest import ServiceFactory, Videos, video_service, videos
from video.probe import probe
from video.sampling import SamplingOptions, sample

__all__ = ["video_service", "videos"]  # fixtures shared with the video tests

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]
KEY = "sk-system-test-key"


async def _gateway(gateway: GatewayFactory, vllm_server: VllmServer):  # type: ignore[no-untyped-def]
    local = {"model": f"hosted_vllm/{SERVED_NAME}", "api_base": f"{vllm_server.url}/v1", "timeout": 120}
    return await gateway(
        {
            # supports_video is not set: the gateway knows vLLM's Qwen2.5-VL takes video.
            "model_list": [
                {"model_name": "vision", "litellm_params": local, "model_info": {"supports_vision": True}},
                {"model_name": "chat", "litellm_params": local},
            ],
            "general_settings": {"master_key": KEY},
        }
    )


async def test_a_job_in_native_clip_mode_describes_every_clip_through_gateway_and_vllm(
    gateway: GatewayFactory, vllm_server: VllmServer, video_service: ServiceFactory, videos: Videos
) -> None:
    gw = await _gateway(gateway, vllm_server)
    card = (await gw.http.get("/v1/models/vision", headers={"Authorization": f"Bearer {KEY}"})).json()
    assert card["supports_video"] is True
    service = await video_service(
        gateway_url=f"{gw.url}/v1",
        api_key=KEY,
        description_max_tokens=12,
        answer_max_tokens=24,
        context_token_budget=150,
        summary_batch_size=3,
        look_frames=2,
        look_max_tokens=16,
    )
    with videos.h264_mp4.open("rb") as handle:
        uploaded = await service.http.post(
            "/upload", files={"file": ("h264.mp4", handle)}, data={"fps": "1", "chunk_seconds": "4"}
        )
    assert uploaded.status_code == 200, uploaded.text
    assert "clips of 4s" in uploaded.json()["message"]
    session_id = uploaded.json()["session_id"]
    events = []
    async with service.http.stream("GET", f"/sessions/{session_id}/events") as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(orjson.loads(line[6:]))
    assert events[-1]["event"] == "completed", events[-1]
    frames = (await service.http.get(f"/sessions/{session_id}/frames")).json()["frames"]
    assert [f["timestamp_s"] for f in frames] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [(f["clip_start_s"], f["clip_end_s"]) for f in frames] == [(0.0, 4.0)] * 4 + [(4.0, 5.0)]
    assert all(isinstance(f["description"], str) and f["error"] is None for f in frames)
    assert len({f["description"] for f in frames[:4]}) == 1  # one description for the clip
    metrics = (await gw.http.get("/metrics")).text
    # Two clips, two requests: vLLM accepted the video items (a 400 would have failed the frames).
    served = metric(metrics, "gateway_requests_total", deployment="vision/0", model_group="vision", status_class="2xx")
    assert served == 2.0
    # Looking again in clip mode: the frames around 00:02 go to vLLM as one video item, and it takes them.
    chat = await service.http.post("/chat", json={"session_id": session_id, "question": "What is at 00:02?"})
    assert chat.status_code == 200, chat.text
    assert chat.json()["looked"] is True, chat.json()["notes"]
    metrics = (await gw.http.get("/metrics")).text
    served = metric(metrics, "gateway_requests_total", deployment="vision/0", model_group="vision", status_class="2xx")
    assert served == 3.0


async def test_a_clip_costs_fewer_prompt_tokens_than_its_frames_as_images(
    gateway: GatewayFactory, vllm_server: VllmServer, videos: Videos
) -> None:
    gw = await _gateway(gateway, vllm_server)
    info = probe(videos.h264_mp4)
    frames = [base64.b64encode(f.jpeg).decode() for f in sample(videos.h264_mp4, info, SamplingOptions(fps=1))][:2]
    text = {"type": "text", "text": "Describe what happens."}
    as_images = [text] + [{"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{f}"}} for f in frames]
    as_clip = [text, {"type": "video_url", "video_url": {"url": "data:video/jpeg;base64," + ",".join(frames)}}]
    usage = {}
    for name, content in (("images", as_images), ("clip", as_clip), ("text", [text])):
        answer = await gw.http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {KEY}"},
            json={"model": "vision", "messages": [{"role": "user", "content": content}], "max_tokens": 2},
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        usage[name] = answer.json()["usage"]["prompt_tokens"]
    visual_images, visual_clip = usage["images"] - usage["text"], usage["clip"] - usage["text"]
    assert 0 < visual_clip <= 0.55 * visual_images, usage
