"""Kill the service with SIGKILL in the middle of a job, start it again: the job resumes, no frame
is lost, and no frame that was already described is sent again."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import UpstreamFactory
from tests.fakes import free_socket
from tests.video.conftest import Soundtracks, make_video

pytestmark = [pytest.mark.service, pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parents[2]


def _start(gateway_url: str, data_dir: Path, port: int, **settings: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "VIDEO_MAX_CONCURRENCY": "2", "VIDEO_MAX_RETRIES": "0", "PYTHONPATH": str(ROOT), **settings}
    command = [sys.executable, "-m", "video", "serve", "--gateway-url", gateway_url]
    command += ["--data-dir", str(data_dir), "--port", str(port)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _wait_up(http: httpx.AsyncClient, process: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise AssertionError("the service exited at start")
        try:
            if (await http.get("/health")).status_code == 200:
                return
        except httpx.TransportError:
            await asyncio.sleep(0.05)
    raise AssertionError("the service did not start")


async def _follow(http: httpx.AsyncClient, session_id: str, until: int | None) -> dict:
    """Read progress events until ``until`` frames are processed (or the job ends)."""
    last: dict = {}
    async with http.stream("GET", f"/sessions/{session_id}/events") as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                last = orjson.loads(line[6:])
                if until is not None and last.get("processed_frames", 0) >= until:
                    return last
    return last


def _labels(bodies: list[dict]) -> Counter[str]:
    found: Counter[str] = Counter()
    for body in bodies:
        if body["model"] == "vision":
            match = re.search(r"Timestamp: (\d\d:\d\d\.\d)", body["messages"][0]["content"][0]["text"])
            assert match
            found[match.group(1)] += 1
    return found


async def test_sigkill_mid_job_then_restart_resumes_without_repeats(upstream: UpstreamFactory, tmp_path: Path) -> None:
    gateway = await upstream("gateway", delay_s=0.25, echo_prompt=True)
    video = make_video(tmp_path / "twelve.mp4", seconds=12)
    data_dir = tmp_path / "data"
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        first = _start(gateway.url, data_dir, port)
        try:
            await _wait_up(http, first)
            with video.open("rb") as handle:
                session_id = (await http.post("/upload", files={"file": ("v.mp4", handle)})).json()["session_id"]
            await _follow(http, session_id, until=4)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        with sqlite3.connect(data_dir / "video.db") as db:
            stored = {
                row[0]
                for row in db.execute(
                    "SELECT timestamp_s FROM frames WHERE session_id = ? AND description IS NOT NULL", (session_id,)
                )
            }
        assert 4 <= len(stored) < 12, "killed mid-job"

        second = _start(gateway.url, data_dir, port)
        try:
            await _wait_up(http, second)
            final = await _follow(http, session_id, until=None)
            assert final["status"] == "completed"
            frames = (await http.get(f"/sessions/{session_id}/frames")).json()["frames"]
        finally:
            second.terminate()
            second.wait(timeout=30)

    assert [f["timestamp_s"] for f in frames] == [float(i) for i in range(12)]
    assert all(f["description"] for f in frames)
    sent = _labels(gateway.bodies)
    assert set(sent) == {f"00:{i:04.1f}" for i in range(12)}
    for seconds in stored:
        assert sent[f"00:{seconds:04.1f}"] == 1, f"frame at {seconds}s was described before the kill and sent again"


async def test_sigkill_mid_job_in_clip_mode_with_a_soundtrack_resumes_without_repeats(
    upstream: UpstreamFactory, tmp_path: Path, soundtracks: Soundtracks
) -> None:
    gateway = await upstream("gateway", delay_s=0.4, heard="The deadline is on Friday.|Open the red box now.")
    data_dir = tmp_path / "data"
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    settings = {
        "VIDEO_CLIP_MODE": "video",
        "VIDEO_CHUNK_SECONDS": "2",
        "VIDEO_TRANSCRIPTION_MODEL": "speech",
        "VIDEO_TRANSCRIPTION_WINDOW_S": "5",
        "VIDEO_TRANSCRIPTION_CONCURRENCY": "1",
    }
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        first = _start(gateway.url, data_dir, port, **settings)
        try:
            await _wait_up(http, first)
            with soundtracks.speech_mp4.open("rb") as handle:
                session_id = (await http.post("/upload", files={"file": ("s.mp4", handle)})).json()["session_id"]
            await _follow(http, session_id, until=4)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        with sqlite3.connect(data_dir / "video.db") as db:
            clips = {r[0] for r in db.execute("SELECT DISTINCT clip_start_s FROM frames WHERE description IS NOT NULL")}
            windows = {r[0] for r in db.execute("SELECT window_index FROM speech_windows WHERE error IS NULL")}
        assert 2 <= len(clips) < 6, "killed mid-job"

        second = _start(gateway.url, data_dir, port, **settings)
        try:
            await _wait_up(http, second)
            final = await _follow(http, session_id, until=None)
            frames = (await http.get(f"/sessions/{session_id}/frames")).json()["frames"]
            status = (await http.get(f"/status/{session_id}")).json()
        finally:
            second.terminate()
            second.wait(timeout=30)

    assert final["status"] == "completed"
    assert status["audio"] == "done"
    assert status["failed_windows"] == 0
    assert {f["clip_start_s"] for f in frames} == {0.0, 2.0, 4.0, 6.0, 8.0, 10.0}
    assert all(f["description"] for f in frames)
    sent: Counter[str] = Counter()
    heard: Counter[str] = Counter()
    for body in gateway.bodies:
        if body.get("model") == "vision":
            sent.update(re.findall(r"from (\d\d:\d\d\.\d) to", body["messages"][0]["content"][0]["text"]))
        elif body.get("model") == "speech":
            heard[body["filename"]] += 1
    for start in clips:
        assert sent[f"00:{start:04.1f}"] == 1, f"the clip at {start}s was described before the kill and sent again"
    for index in windows:
        assert heard[f"window-{index}.wav"] == 1, f"window {index} was transcribed before the kill and sent again"
    assert len(heard) == status["transcribed_windows"]
