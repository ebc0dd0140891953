"""The video service under load and bad input: job admission, ownership of a job's work,
prompts, pixel and form limits, odd file names, and chat that fits the chat model."""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import UpstreamFactory
from tests.fakes import FakeUpstream
from tests.video.conftest import RunningService, ServiceFactory, Soundtracks, Videos, make_video
from tests.video.test_api import _events_until_done, _upload
from video.jobs import EventHub, JobSettings, LocalEngine
from video.store import Session, SQLiteStore

pytestmark = [pytest.mark.service, pytest.mark.timeout(120)]


def _vision_prompts(gateway: FakeUpstream) -> list[str]:
    return [b["messages"][0]["content"][0]["text"] for b in gateway.bodies if b["model"] == "vision"]


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Errors of the service and of asyncio ("Task exception was never retrieved"), not of the fake gateway."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and not r.name.startswith("aiohttp")]


async def test_the_upload_prompt_is_sent_and_shown(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    gateway = await upstream("gateway", echo_prompt=True)
    service = await video_service(gateway_url=gateway.url)
    upload = await _upload(service, videos.short_mp4, prompt="Count the red squares.")
    session_id = upload.json()["session_id"]
    await _events_until_done(service, session_id)
    assert all(p.startswith("Count the red squares.") for p in _vision_prompts(gateway))
    status = (await service.http.get(f"/status/{session_id}")).json()
    assert status["prompt"] == "Count the red squares."
    frames = (await service.http.get(f"/sessions/{session_id}/frames")).json()["frames"]
    assert "Count the red squares." in frames[0]["description"]


async def test_jobs_beyond_the_limit_queue_in_order_and_share_the_frame_bound(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    gateway = await upstream("gateway", delay_s=0.05)
    service = await video_service(gateway_url=gateway.url, max_jobs=1, max_concurrency=3)
    sessions = []
    for name in ("first", "second", "third"):
        response = await _upload(service, videos.h264_mp4, prompt=f"job {name}")
        sessions.append(response.json()["session_id"])
    queued = [(await service.http.get(f"/status/{s}")).json() for s in sessions[1:]]
    assert [(q["status"], q["queue_position"]) for q in queued] == [("queued", 1), ("queued", 2)]
    metrics = (await service.http.get("/metrics")).text
    assert "video_jobs_queued 2.0" in metrics
    for session_id in sessions:
        assert (await _events_until_done(service, session_id))[-1]["event"] == "completed"
    order = [p.split()[1] for p in _vision_prompts(gateway)]
    assert order == ["first"] * 5 + ["second"] * 5 + ["third"] * 5, "one job at a time, oldest first"
    assert gateway.max_in_flight <= 3


async def test_after_a_restart_running_jobs_resume_first_then_the_queue_in_order(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "video.db")
    for index, (name, status) in enumerate([("a", "queued"), ("b", "queued"), ("c", "processing"), ("d", "queued")]):
        store.create_session(Session(name, None, f"{name}.mp4", str(tmp_path / "missing.mp4"), status, {}, None, 1, 1))
        store._db.execute("UPDATE sessions SET created_at = ? WHERE id = ?", (1000 + index, name))
    runner = LocalEngine(store, None, None, EventHub(), JobSettings(max_jobs=1))  # type: ignore[arg-type]
    assert await runner.resume_all() == 4
    assert runner.running() == 1
    assert "queue_position" not in runner.progress("c")
    assert [runner.progress(s)["queue_position"] for s in ("a", "b", "d")] == [1, 2, 3]
    await runner.shutdown()
    store.close()


async def test_delete_while_running_stops_its_requests_and_summaries(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await upstream("gateway", delay_s=0.3, echo_prompt=True)
    service = await video_service(gateway_url=gateway.url, max_concurrency=2, summary_batch_size=2)
    doomed = (await _upload(service, videos.h264_mp4, fps="4", prompt="doomed")).json()["session_id"]
    async with service.http.stream("GET", f"/sessions/{doomed}/events") as events:
        async for line in events.aiter_lines():
            if '"event":"frame"' in line.replace(" ", ""):
                break
    deleted = await service.http.delete(f"/sessions/{doomed}")
    assert deleted.status_code == 200
    sent_for_doomed = sum("doomed" in str(b["messages"]) for b in gateway.bodies)
    # A whole job afterwards: anything the deleted job still had running would have shown by its end.
    survivor = (await _upload(service, videos.short_mp4, prompt="survivor")).json()["session_id"]
    assert (await _events_until_done(service, survivor))[-1]["event"] == "completed"
    assert sum("doomed" in str(b["messages"]) for b in gateway.bodies) == sent_for_doomed
    assert sent_for_doomed < 20, "the deleted job stopped early"
    assert _errors(caplog) == []
    assert (await service.http.get(f"/status/{doomed}")).status_code == 404


async def test_delete_while_transcribing_stops_the_soundtrack_too(
    upstream: UpstreamFactory,
    video_service: ServiceFactory,
    videos: Videos,
    soundtracks: Soundtracks,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = await upstream("gateway", delay_s=0.3, heard="The deadline is on Friday.")
    service = await video_service(
        gateway_url=gateway.url, transcription_model="speech", transcription_window_s=5, transcription_concurrency=1
    )
    doomed = (await _upload(service, soundtracks.speech_mp4, fps="4")).json()["session_id"]
    async with service.http.stream("GET", f"/sessions/{doomed}/events") as events:
        async for line in events.aiter_lines():
            if '"event":"speech"' in line.replace(" ", ""):
                break
    assert (await service.http.delete(f"/sessions/{doomed}")).status_code == 200
    heard = sum(1 for b in gateway.bodies if b.get("model") == "speech")
    survivor = (await _upload(service, videos.short_mp4)).json()["session_id"]  # no soundtrack of its own
    assert (await _events_until_done(service, survivor))[-1]["event"] == "completed"
    assert sum(1 for b in gateway.bodies if b.get("model") == "speech") == heard
    assert heard < 3, "the deleted job's soundtrack stopped early"
    assert _errors(caplog) == []


async def test_shutdown_mid_job_leaves_no_stray_task(
    upstream: UpstreamFactory, tmp_path: Path, videos: Videos, caplog: pytest.LogCaptureFixture
) -> None:
    import httpx

    from tests.fakes import serve
    from video.api import create_app
    from video.settings import VideoSettings

    gateway = await upstream("gateway", delay_s=0.3)
    settings = VideoSettings(_env_file=None, data_dir=tmp_path / "data", gateway_url=gateway.url, summary_batch_size=2)  # type: ignore[call-arg]
    served = serve(create_app(settings))
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
        service = RunningService(served.url, http, settings)
        session_id = (await _upload(service, videos.h264_mp4, fps="4")).json()["session_id"]
        async with http.stream("GET", f"/sessions/{session_id}/events") as events:
            async for line in events.aiter_lines():
                if '"event":"frame"' in line.replace(" ", ""):
                    break
    await served.stop()
    assert _errors(caplog) == []
    store = SQLiteStore(tmp_path / "data" / "video.db")
    assert store.get_session(session_id).status == "processing"  # type: ignore[union-attr]  # resumes at next start
    store.close()


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height``: what a decompression bomb looks like to a parser."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


async def test_images_and_videos_over_the_pixel_limits_are_refused(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    gateway = await upstream("gateway")
    service = await video_service(gateway_url=gateway.url, max_image_pixels=1_000_000, max_video_pixels=10_000)
    bomb = await service.http.post("/image", files={"file": ("bomb.png", _png_header(100_000, 100_000), "image/png")})
    assert bomb.status_code == 413
    assert "100000x100000" in bomb.json()["error"]["message"]
    big = await _upload(service, videos.h264_mp4)  # 160x120 = 19200 pixels a frame
    assert big.status_code == 400
    assert "160x120" in big.json()["error"]["message"]
    assert gateway.bodies == []


async def _chunked(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _multipart(boundary: str, fields: list[tuple[str, str]], file: bytes | None) -> list[bytes]:
    pieces = [f'--{boundary}\r\nContent-Disposition: form-data; name="{n}"\r\n\r\n{v}\r\n'.encode() for n, v in fields]
    if file is not None:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="v.mp4"\r\n\r\n'.encode()
        pieces += [head, *(file[i : i + 4096] for i in range(0, len(file), 4096)), b"\r\n"]
    return [*pieces, f"--{boundary}--\r\n".encode()]


async def test_form_part_count_and_chunked_uploads_are_capped(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    gateway = await upstream("gateway")
    service = await video_service(gateway_url=gateway.url, max_upload_bytes=1_000_000)
    headers = {"Content-Type": "multipart/form-data; boundary=XyZ"}
    many = _multipart("XyZ", [(f"f{i}", "1") for i in range(100)], videos.short_mp4.read_bytes())
    response = await service.http.post("/upload", content=_chunked(many), headers=headers)
    assert response.status_code == 400
    assert "more than 32 parts" in response.json()["error"]["message"]
    # No Content-Length (chunked): the total is counted as it arrives.
    flood = _multipart("XyZ", [], b"\0" * 5_000_000)
    response = await service.http.post("/upload", content=_chunked(flood), headers=headers)
    assert response.status_code == 413
    assert list((service.settings.data_dir / "videos").iterdir()) == []


@pytest.mark.parametrize("filename", ["..", ".", "...", "../../etc/passwd", "/", "", "a\x00b.mp4", "\u00e9t\u00e9.mp4"])
async def test_any_file_name_gets_an_answer_not_a_server_error(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos, filename: str
) -> None:
    gateway = await upstream("gateway")
    service = await video_service(gateway_url=gateway.url)
    response = await service.http.post(
        "/upload", files={"file": (filename, videos.short_mp4.read_bytes(), "video/mp4")}
    )
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        session_id = response.json()["session_id"]
        assert (await _events_until_done(service, session_id))[-1]["event"] == "completed"
        assert list((service.settings.data_dir / "videos" / session_id).iterdir())


async def _long_described_session(service: RunningService, tmp_path: Path) -> str:
    video = make_video(tmp_path / "long.mp4", seconds=30)
    session_id = (await _upload(service, video)).json()["session_id"]
    assert (await _events_until_done(service, session_id))[-1]["event"] == "completed"
    return session_id


def _chat_bodies(gateway: FakeUpstream) -> list[dict[str, Any]]:
    return [b for b in gateway.bodies if b["model"] == "chat"]


@pytest.mark.parametrize("reported", [True, False], ids=["window-from-models", "window-from-overflow"])
async def test_chat_fits_the_chat_model_context(
    upstream: UpstreamFactory, video_service: ServiceFactory, tmp_path: Path, reported: bool
) -> None:
    # Long descriptions, a 512-token model that counts two characters a token, a generous budget.
    gateway = await upstream(
        "chat", content="a person walks past the red door " * 12, context_tokens=512, report_context=reported
    )
    service = await video_service(gateway_url=gateway.url, context_token_budget=6000, answer_max_tokens=48)
    session_id = await _long_described_session(service, tmp_path)
    summaries = (await service.http.get(f"/summaries/{session_id}")).json()["summaries"]
    assert len(summaries) == 8, "every batch got its summary"
    answer = await service.http.post("/chat", json={"session_id": session_id, "question": "Who walks past?"})
    assert answer.status_code == 200, answer.text
    used = answer.json()
    assert used["total_frames_in_context"] < 30, "not every description fits 512 tokens"
    assert used["context_batches_used"] + used["total_frames_in_context"] > 0
    refused = [b for b in _chat_bodies(gateway) if gateway._overflow(b) is not None]
    # One overflow teaches the tokens-per-character ratio (and the window when /v1/models did not say).
    assert len(refused) <= (1 if reported else 2), "the context was learned once, not rediscovered each time"
    too_long = await service.http.post("/chat", json={"session_id": session_id, "question": "why? " * 700})
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "context_length_exceeded"
    assert "question is too long" in too_long.json()["error"]["message"]


async def test_the_frame_latency_histogram_is_observed(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    gateway = await upstream("gateway")
    service = await video_service(gateway_url=gateway.url)
    session_id = (await _upload(service, videos.short_mp4)).json()["session_id"]
    await _events_until_done(service, session_id)
    metrics = (await service.http.get("/metrics")).text
    assert "video_frame_description_seconds_count 1.0" in metrics


async def test_another_keys_session_is_invisible_everywhere(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    gateway = await upstream("gateway")
    service = await video_service(gateway_url=gateway.url, client_keys=["key-alice-123", "key-bob-456"])
    alice = {"Authorization": "Bearer key-alice-123"}
    bob = {"Authorization": "Bearer key-bob-456"}
    session_id = (await _upload(service, videos.short_mp4, alice)).json()["session_id"]
    await _events_until_done(service, session_id, alice)
    for method, path in [
        ("GET", f"/sessions/{session_id}/frames"),
        ("GET", f"/sessions/{session_id}/frames/0.jpg"),
        ("GET", f"/sessions/{session_id}/events"),
        ("GET", f"/summaries/{session_id}"),
        ("DELETE", f"/sessions/{session_id}"),
    ]:
        response = await service.http.request(method, path, headers=bob)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["code"] == "session_not_found"
    refused = await service.http.post("/chat", json={"session_id": session_id, "question": "what?"}, headers=bob)
    assert refused.status_code == 404
    # Nothing of it was touched: the owner still sees all of it.
    assert (await service.http.get(f"/sessions/{session_id}/frames/0.jpg", headers=alice)).status_code == 200
    assert (await service.http.get(f"/status/{session_id}", headers=alice)).json()["status"] == "completed"
