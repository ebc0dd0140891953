"""The video service against a fake gateway over loopback: upload, progress, frames, summaries, chat."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import UpstreamFactory
from tests.video.conftest import RunningService, ServiceFactory, Videos

pytestmark = [pytest.mark.service, pytest.mark.timeout(120)]


async def _upload(service: RunningService, path: Path, headers: dict[str, str] | None = None, **fields: str) -> Any:
    with path.open("rb") as handle:
        return await service.http.post(
            "/upload", files={"file": (path.name, handle, "video/mp4")}, data=fields, headers=headers or {}
        )


async def _events_until_done(service: RunningService, session_id: str, headers: dict[str, str] | None = None) -> list:
    events = []
    async with service.http.stream("GET", f"/sessions/{session_id}/events", headers=headers or {}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(orjson.loads(line[6:]))
    return events


async def test_upload_status_frames_summaries_chat(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    gateway = await upstream("gateway", echo_prompt=True)
    service = await video_service(gateway_url=gateway.url)

    uploaded = await _upload(service, videos.h264_mp4, fps="1")
    assert uploaded.status_code == 200, uploaded.text
    body = uploaded.json()
    assert set(body) >= {"session_id", "message", "total_frames", "workflow_id"}
    assert body["total_frames"] == 5
    session_id = body["session_id"]

    events = await _events_until_done(service, session_id)
    assert events[-1]["event"] == "completed"
    percentages = [e["progress_percentage"] for e in events]
    assert percentages == sorted(percentages)

    status = (await service.http.get(f"/status/{session_id}")).json()
    assert status == {
        "session_id": session_id,
        "status": "completed",
        "progress_percentage": 100.0,
        "processed_frames": 5,
        "failed_frames": 0,
        "total_frames": 5,
        "prompt": None,
        "warnings": [],
        "error": None,
        "queue_position": None,
        "clip_mode": "images",  # the fake does not say it takes video
        "audio": "none",
        "transcribed_windows": None,
        "failed_windows": None,
        "speech_percentage": None,
    }

    frames = (await service.http.get(f"/sessions/{session_id}/frames")).json()["frames"]
    assert [f["timestamp_s"] for f in frames] == [0.0, 1.0, 2.0, 3.0, 4.0]
    for frame in frames:
        assert frame["timestamp"] in frame["description"], "each description belongs to its own frame"
    thumb = await service.http.get(frames[2]["thumbnail_url"])
    assert thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content.startswith(b"\xff\xd8")

    summaries = (await service.http.get(f"/summaries/{session_id}")).json()["summaries"]
    assert [(s["start_s"], s["end_s"], s["frame_count"]) for s in summaries] == [(0.0, 3.0, 4), (4.0, 4.0, 1)]

    chat = await service.http.post("/chat", json={"session_id": session_id, "question": "What happens at 00:02?"})
    assert chat.status_code == 200, chat.text
    answer = chat.json()
    assert set(answer) >= {
        "session_id",
        "question",
        "answer",
        "context_batches_used",
        "total_frames_in_context",
        "progress_percentage",
    }
    assert answer["total_frames_in_context"] == 5
    assert "[00:02.0]" in answer["answer"], "the chat model received the timestamped descriptions"
    assert "Question: What happens at 00:02?" in answer["answer"]
    request = gateway.bodies[-1]
    assert request["model"] == "chat"
    # The answer names its session, so engine-aware routing keeps the session's context on one pod.
    assert gateway.headers[-1].get("x-session-id") == session_id
    vision = [b for b in gateway.bodies if b["model"] == "vision"]
    *described, looked = vision
    assert len(described) == 5
    assert [b["model"] for b in gateway.bodies].count("chat") == 3  # two batch summaries and the answer
    for sent in described:
        assert sent["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    # Looking again: the vision group was shown the frames around 00:02, decoded again from the video,
    # with their descriptions and the question; what it saw reached the chat model with its times.
    parts = looked["messages"][0]["content"]
    assert "Question: What happens at 00:02?" in parts[0]["text"]
    labels = [p["text"] for p in parts[1:] if p["type"] == "text"]
    assert "Frame at [00:02.0]:" in labels
    assert len(labels) <= 16
    assert all(p["image_url"]["url"].startswith("data:image/jpeg;base64,") for p in parts if p["type"] == "image_url")
    assert answer["looked"] is True
    assert 2.0 in [m["timestamp_s"] for m in answer["looked_at"]]
    looked_section = answer["answer"].split("Looked at again for this question, the frames at ")[1]
    assert "[00:02.0]" in looked_section.split(" show:")[0]
    assert "show:\ngateway saw: " in looked_section, "the vision group's observation is in the chat model's context"
    assert 2.0 in [c["timestamp_s"] for c in answer["cited"]]
    assert answer["usage"] == {"prompt_tokens": 22, "completion_tokens": 14, "total_tokens": 36}

    metrics = (await service.http.get("/metrics")).text
    assert 'video_jobs_total{status="completed"} 1.0' in metrics
    assert 'video_frames_total{outcome="described"} 5.0' in metrics
    assert "video_jobs_in_progress 0.0" in metrics
    sessions = (await service.http.get("/sessions")).json()
    assert [s["session_id"] for s in sessions] == [session_id]
    deleted = await service.http.delete(f"/sessions/{session_id}")
    assert deleted.json() == {"session_id": session_id, "deleted": True}
    assert (await service.http.get(f"/status/{session_id}")).status_code == 404
    assert not (service.settings.data_dir / "videos" / session_id).exists()


async def test_failed_frames_are_reported_and_the_job_fails_when_none_succeed(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    broken = await upstream("broken", fail_status=500)
    service = await video_service(gateway_url=broken.url)
    session_id = (await _upload(service, videos.short_mp4)).json()["session_id"]
    events = await _events_until_done(service, session_id)
    assert events[-1]["event"] == "failed"
    status = (await service.http.get(f"/status/{session_id}")).json()
    assert status["status"] == "failed"
    assert "no frame could be described" in status["error"]
    frames = (await service.http.get(f"/sessions/{session_id}/frames")).json()["frames"]
    assert frames[0]["description"] is None
    assert frames[0]["error"].startswith("the gateway answered 500")
    assert len(broken.bodies) == 2  # the first try and one retry (max_retries=1 in tests)


async def test_transient_gateway_errors_are_retried(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    flaky = await upstream("flaky", fail_status=429, fail_times=2, retry_after="0")
    service = await video_service(gateway_url=flaky.url, max_retries=3)
    session_id = (await _upload(service, videos.short_mp4)).json()["session_id"]
    assert (await _events_until_done(service, session_id))[-1]["event"] == "completed"
    assert (await service.http.get(f"/status/{session_id}")).json()["processed_frames"] == 1


async def test_damaged_video_completes_with_a_warning(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    gateway = await upstream("gateway")
    service = await video_service(gateway_url=gateway.url)
    session_id = (await _upload(service, videos.damaged_mp4)).json()["session_id"]
    await _events_until_done(service, session_id)
    status = (await service.http.get(f"/status/{session_id}")).json()
    assert status["status"] == "completed"
    assert status["progress_percentage"] == 100.0
    assert any("damaged" in w for w in status["warnings"])


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("not_a_video", "cannot be opened as a video"), ("empty", "the file is empty"), ("truncated_mp4", "truncated")],
)
async def test_bad_uploads_get_clear_errors_and_leave_nothing(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos, name: str, fragment: str
) -> None:
    gateway = await upstream("gateway")
    service = await video_service(gateway_url=gateway.url)
    response = await _upload(service, getattr(videos, name))
    assert response.status_code == 400
    error = response.json()["error"]
    assert fragment in error["message"]
    assert error["param"] == "file"
    assert list((service.settings.data_dir / "videos").iterdir()) == []
    assert gateway.bodies == []


async def test_upload_limits_and_form_errors(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    gateway = await upstream("gateway")
    service = await video_service(gateway_url=gateway.url, max_upload_bytes=10_000)
    too_big = await _upload(service, videos.h264_mp4)
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "request_too_large"
    no_file = await service.http.post("/upload", data={"fps": "1"}, files={"other": ("x.txt", b"x")})
    assert no_file.json()["error"]["message"] == "the upload has no 'file' part"
    not_multipart = await service.http.post("/upload", content=b"raw")
    assert not_multipart.status_code == 400
    bad_fps = await _upload(await video_service(gateway_url=gateway.url), videos.short_mp4, fps="fast")
    assert bad_fps.json()["error"] == {
        "message": "'fps' must be a number",
        "type": "invalid_request_error",
        "param": "fps",
        "code": None,
    }
    assert (await service.http.get("/status/00000000-0000-0000-0000-000000000000")).status_code == 404
    chat = await service.http.post("/chat", json={"session_id": "nope"})
    assert chat.status_code == 400
    assert chat.json()["error"]["param"] == "question"


async def test_sessions_belong_to_the_key_that_created_them(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    gateway = await upstream("gateway")
    service = await video_service(gateway_url=gateway.url, client_keys=["key-alice-123", "key-bob-456"])
    alice = {"Authorization": "Bearer key-alice-123"}
    bob = {"Authorization": "Bearer key-bob-456"}
    assert (await _upload(service, videos.short_mp4)).status_code == 401
    assert (await _upload(service, videos.short_mp4, {"Authorization": "Bearer wrong"})).status_code == 401
    session_id = (await _upload(service, videos.short_mp4, alice)).json()["session_id"]
    await _events_until_done(service, session_id, alice)
    assert (await service.http.get(f"/status/{session_id}", headers=alice)).status_code == 200
    assert (await service.http.get(f"/status/{session_id}", headers=bob)).status_code == 404
    assert (await service.http.get("/sessions", headers=bob)).json() == []
    assert (await service.http.get("/health")).status_code == 200


async def test_single_image_description_and_insights(upstream: UpstreamFactory, video_service: ServiceFactory) -> None:
    import cv2
    import numpy as np

    gateway = await upstream("gateway", echo_prompt=True)
    service = await video_service(gateway_url=gateway.url)
    _, png = cv2.imencode(".png", np.full((50, 80, 3), 200, np.uint8))
    response = await service.http.post("/image", files={"file": ("photo.png", png.tobytes(), "image/png")})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["width"] == 80
    assert result["description"].startswith("gateway saw: Describe this video frame")
    assert [b["model"] for b in gateway.bodies] == ["vision", "chat"]
    bad = await service.http.post("/image", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert bad.status_code == 400
