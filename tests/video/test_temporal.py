"""The Temporal engine end to end: a real Temporal dev server, a real PostgreSQL, ``video serve``
and ``video worker`` processes, a fake gateway on loopback; workers and the API killed mid-job."""

from __future__ import annotations

import asyncio
import re
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Replayer

from tests.conftest import UpstreamFactory
from tests.fakes import FakeUpstream
from tests.postgres_server import PostgresServer, postgres_server
from tests.temporal_server import TemporalServer, VideoApi, VideoProcess, free_port, temporal_server
from tests.video.conftest import Soundtracks, make_video
from video.temporal.workflows import VideoWorkflow

__all__ = ["postgres_server", "temporal_server"]

pytestmark = pytest.mark.system
STAMP = re.compile(r"Timestamp: (\d\d:\d\d\.\d)")


@dataclass
class Stack:
    directory: Path
    env: dict[str, str]
    gateway: FakeUpstream
    temporal: Client
    workers: list[VideoProcess] = field(default_factory=list)
    apis: list[VideoApi] = field(default_factory=list)

    def worker(self, max_concurrency: int = 4) -> VideoProcess:
        env = {**self.env, "VIDEO_MAX_CONCURRENCY": str(max_concurrency)}
        process = VideoProcess(self.directory / "logs", env, "worker", "--concurrency", "4")
        self.workers.append(process)
        return process

    async def api(self) -> VideoApi:
        api = VideoApi(self.directory / "logs", self.env)
        self.apis.append(api)
        await api.wait_up()
        return api

    def frame_requests(self) -> Counter[str]:
        """How often each frame (by its timestamp) was sent to the vision model."""
        stamps: Counter[str] = Counter()
        for body in self.gateway.bodies:
            if body.get("model") != "vision":
                continue
            for part in body["messages"][-1]["content"]:
                if part.get("type") == "text":
                    stamps.update(STAMP.findall(part["text"]))
        return stamps

    def logs(self) -> str:
        return "\n".join(p.output() for p in [*self.workers, *self.apis])


@pytest.fixture
async def stack(
    tmp_path: Path, temporal_server: TemporalServer, postgres_server: PostgresServer, upstream: UpstreamFactory
) -> AsyncIterator[Callable[..., Any]]:
    made: list[Stack] = []

    async def make(**behaviour: Any) -> Stack:
        gateway = await upstream("vision", **behaviour)
        env = {
            "VIDEO_ENGINE": "temporal",
            "VIDEO_TEMPORAL_ADDRESS": temporal_server.address,
            "VIDEO_TEMPORAL_TASK_QUEUE": f"video-{uuid.uuid4().hex[:8]}",
            "VIDEO_TEMPORAL_HEARTBEAT_TIMEOUT_S": "3",
            "VIDEO_TEMPORAL_SEGMENT_FRAMES": "8",
            "VIDEO_DATABASE_URL": postgres_server.new_database(),
            "VIDEO_DATA_DIR": str(tmp_path / "media"),
            "VIDEO_GATEWAY_URL": gateway.url,
            "VIDEO_SUMMARY_BATCH_SIZE": "4",
            "VIDEO_MAX_RETRIES": "3",
            "VIDEO_LOG_LEVEL": "warning",
        }
        client = await Client.connect(temporal_server.address)
        made.append(Stack(tmp_path, env, gateway, client))
        return made[-1]

    yield make
    for built in made:
        for process in [*built.workers, *built.apis]:
            process.stop()


async def _upload(api: VideoApi, video: Path, **fields: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=api.url, timeout=60) as http:
        with video.open("rb") as handle:
            response = await http.post("/upload", files={"file": (video.name, handle, "video/mp4")}, data=fields)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _status(api: VideoApi, session_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        response = await http.get(f"/status/{session_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _until(check: Callable[[], Any], stack: Stack, seconds: float = 120) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out; process logs:\n{stack.logs()}")
        await asyncio.sleep(0.1)


async def _completed(api: VideoApi, session_id: str, stack: Stack, seconds: float = 180) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        status = await _status(api, session_id)
        assert status["status"] != "failed", status
        return status if status["status"] == "completed" else None

    result: dict[str, Any] = await _until(done, stack, seconds)
    return result


async def test_a_killed_worker_s_frames_move_to_the_other_and_none_is_lost(stack: Callable[..., Any]) -> None:
    s: Stack = await stack(delay_s=0.15, echo_prompt=True)
    video = make_video(s.directory / "walk.mp4", seconds=40, fps=10)
    doomed, survivor = s.worker(max_concurrency=4), s.worker(max_concurrency=4)
    api = await s.api()
    job = await _upload(api, video, fps="2")
    assert job["total_frames"] == 80
    handle = s.temporal.get_workflow_handle(job["workflow_id"])
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING

    await _until(lambda: len(s.frame_requests()) >= 16 and s.gateway.in_flight > 0, s)
    doomed.kill()
    status = await _completed(api, job["session_id"], s)
    assert status["processed_frames"] == 80
    assert status["failed_frames"] == 0
    requests = s.frame_requests()
    assert len(requests) == 80
    twice = sum(count - 1 for count in requests.values())
    assert twice <= 4, f"{twice} frames described twice; at most the killed worker's 4 in flight may be"
    assert survivor.process.poll() is None
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    async with httpx.AsyncClient(base_url=api.url) as http:
        summaries = (await http.get(f"/summaries/{job['session_id']}")).json()["summaries"]
    assert [x["batch_index"] for x in summaries] == list(range(20))


async def test_the_api_killed_and_restarted_mid_job_loses_nothing(stack: Callable[..., Any]) -> None:
    s: Stack = await stack(delay_s=0.1, echo_prompt=True)
    video = make_video(s.directory / "walk.mp4", seconds=30, fps=10)
    s.worker()
    first = await s.api()
    job = await _upload(first, video, fps="2")
    await _until(lambda: len(s.frame_requests()) >= 8, s)
    first.kill()
    second = await s.api()
    status = await _completed(second, job["session_id"], s)
    assert (status["processed_frames"], status["failed_frames"]) == (60, 0)
    assert max(s.frame_requests().values()) == 1


async def test_a_flaky_gateway_still_gets_every_frame_described_and_progress_streams(
    stack: Callable[..., Any],
) -> None:
    s: Stack = await stack(fail_status=503, fail_every=10, echo_prompt=True)
    video = make_video(s.directory / "walk.mp4", seconds=20, fps=10)
    s.worker()
    s.worker()
    api = await s.api()
    job = await _upload(api, video, fps="2")
    events: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(base_url=api.url, timeout=120) as http,
        http.stream("GET", f"/sessions/{job['session_id']}/events") as stream,
    ):
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                events.append(orjson.loads(line[6:]))
                if events[-1].get("status") in ("completed", "failed") and events[-1].get("event") != "frame":
                    break
    assert events[-1]["status"] == "completed", events[-1]
    frame_events = [e for e in events if e.get("event") == "frame"]
    assert frame_events, "frames described by the worker processes are streamed by the API process"
    status = await _status(api, job["session_id"])
    assert (status["processed_frames"], status["failed_frames"]) == (40, 0)
    assert sum(1 for b in s.gateway.bodies if b.get("model") == "vision") > 40  # some were answered 503


async def test_clips_and_the_soundtrack_run_on_the_workers(stack: Callable[..., Any], soundtracks: Soundtracks) -> None:
    s: Stack = await stack(heard="The deadline is on Friday.|Open the red box now.")
    s.env.update(VIDEO_CLIP_MODE="video", VIDEO_CHUNK_SECONDS="4", VIDEO_TRANSCRIPTION_MODEL="speech")
    s.worker()
    api = await s.api()
    job = await _upload(api, soundtracks.speech_mp4, fps="1")
    kinds = []
    async with (
        httpx.AsyncClient(base_url=api.url, timeout=120) as http,
        http.stream("GET", f"/sessions/{job['session_id']}/events") as stream,
    ):
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                kinds.append(line.removeprefix("event: "))
                if kinds[-1] in ("completed", "failed"):
                    break
    assert "speech" in kinds, kinds  # the API streams the windows the workers store
    status = await _completed(api, job["session_id"], s)
    assert (status["processed_frames"], status["failed_frames"]) == (12, 0)
    assert (status["clip_mode"], status["audio"], status["transcribed_windows"]) == ("video", "done", 1)
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        frames = (await http.get(f"/sessions/{job['session_id']}/frames")).json()["frames"]
        transcript = (await http.get(f"/sessions/{job['session_id']}/transcript")).json()
    assert [(f["clip_start_s"], f["clip_end_s"]) for f in frames] == [(0.0, 4.0)] * 4 + [(4.0, 8.0)] * 4 + [
        (8.0, 12.0)
    ] * 4
    clips = [b for b in s.gateway.bodies if b.get("model") == "vision"]
    assert len(clips) == 3  # one request a clip, none cut in two by a segment boundary
    assert all(b["messages"][0]["content"][1]["type"] == "video_url" for b in clips)
    assert [seg["text"] for seg in transcript["segments"]] == ["The deadline is on Friday.", "Open the red box now."]


async def test_delete_cancels_the_workflow_and_stops_the_spending(stack: Callable[..., Any]) -> None:
    s: Stack = await stack(delay_s=0.2, echo_prompt=True)
    video = make_video(s.directory / "walk.mp4", seconds=60, fps=10)
    s.worker(max_concurrency=4)
    api = await s.api()
    job = await _upload(api, video, fps="2")
    await _until(lambda: len(s.frame_requests()) >= 8, s)
    async with httpx.AsyncClient(base_url=api.url) as http:
        response = await http.delete(f"/sessions/{job['session_id']}")
    assert response.status_code == 200
    handle = s.temporal.get_workflow_handle(job["workflow_id"])

    async def cancelled() -> bool:
        return (await handle.describe()).status == WorkflowExecutionStatus.CANCELED

    await _until(cancelled, s, 30)
    await _until(lambda: s.gateway.in_flight == 0, s, 30)
    sent = len(s.gateway.bodies)
    await asyncio.sleep(4)  # a quiet period longer than the heartbeat timeout: nothing more may be sent
    assert len(s.gateway.bodies) == sent
    assert sent < 120


async def test_ten_thousand_frames_complete_across_continue_as_new(stack: Callable[..., Any]) -> None:
    s: Stack = await stack(content="a test pattern")
    s.env.update(
        VIDEO_TEMPORAL_SEGMENT_FRAMES="200",
        VIDEO_TEMPORAL_SEGMENTS_PER_RUN="20",
        VIDEO_SUMMARY_BATCH_SIZE="200",
        VIDEO_MAX_SIDE="64",
    )
    video = make_video(s.directory / "long.mp4", seconds=1000, fps=10, size="64x48")
    s.worker(max_concurrency=32)
    s.worker(max_concurrency=32)
    api = await s.api()
    job = await _upload(api, video, fps="10")
    assert job["total_frames"] == 10_000
    status = await _completed(api, job["session_id"], s, seconds=280)
    assert (status["processed_frames"], status["failed_frames"]) == (10_000, 0)
    history = [e async for e in s.temporal.list_workflows(f"WorkflowId = '{job['workflow_id']}'")]
    assert len(history) >= 3, "50 segments at 20 a run continue as new at least twice"


async def test_sigterm_drains_the_worker_processes_and_metrics_are_exported(stack: Callable[..., Any]) -> None:
    s: Stack = await stack(delay_s=0.1, echo_prompt=True)
    video = make_video(s.directory / "walk.mp4", seconds=30, fps=10)
    port = free_port()
    workers = VideoProcess(s.directory / "logs", s.env, "worker", "--processes", "2", "--metrics-port", str(port))
    s.workers.append(workers)
    api = await s.api()
    job = await _upload(api, video, fps="2")

    async def some_described() -> bool:
        return bool((await _status(api, job["session_id"]))["processed_frames"] >= 8)

    await _until(some_described, s)
    async with httpx.AsyncClient() as http:
        scraped = [(await http.get(f"http://127.0.0.1:{p}/metrics")).text for p in (port, port + 1)]
    assert all("temporal_" in text for text in scraped), "each process exports the SDK's metrics"
    assert any('video_frames_total{outcome="described"' in text for text in scraped)
    assert any("video_frame_description_seconds_bucket" in text for text in scraped)
    workers.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(workers.process.wait, 60) == 0
    s.worker()
    status = await _completed(api, job["session_id"], s)
    assert (status["processed_frames"], status["failed_frames"]) == (60, 0)
    assert max(s.frame_requests().values()) == 1, "a drained worker finishes what it started: nothing is paid twice"
    handle = s.temporal.get_workflow_handle(job["workflow_id"])
    await Replayer(workflows=[VideoWorkflow]).replay_workflow(await handle.fetch_history())


async def test_an_upload_while_temporal_is_down_waits_queued_and_runs_once_it_is_back(
    stack: Callable[..., Any],
) -> None:
    s: Stack = await stack(echo_prompt=True)
    video = make_video(s.directory / "walk.mp4", seconds=10, fps=10)
    live = s.env["VIDEO_TEMPORAL_ADDRESS"]
    s.env["VIDEO_TEMPORAL_ADDRESS"] = f"127.0.0.1:{free_port()}"  # nothing listens there
    down = await s.api()
    job = await _upload(down, video, fps="2")
    assert (await _status(down, job["session_id"]))["status"] == "queued"
    down.stop()
    s.env["VIDEO_TEMPORAL_ADDRESS"] = live
    s.worker()
    back = await s.api()  # at start it starts the workflows of queued sessions
    status = await _completed(back, job["session_id"], s)
    assert (status["processed_frames"], status["failed_frames"]) == (20, 0)
