"""``launch up --engine temporal``: a Temporal dev server, worker processes and the video service,
supervised as one stack, describing a video through a fake gateway; the job shows in Temporal."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest

from launch.stack import Stack
from launch.up import UpOptions, plan_stack
from tests.conftest import UpstreamFactory
from tests.launch.test_environment import _model_dir
from tests.temporal_server import free_port
from tests.video.conftest import make_video

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]


async def test_launch_up_with_the_temporal_engine_runs_jobs_on_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upstream: UpstreamFactory
) -> None:
    gateway = await upstream("vision", echo_prompt=True)
    monkeypatch.setenv("VIDEO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VIDEO_SUMMARY_BATCH_SIZE", "4")
    for name in ("GATEWAY_MASTER_KEY", "VIDEO_API_KEY", "VIDEO_ENGINE"):
        monkeypatch.delenv(name, raising=False)
    _model_dir(tmp_path / "models" / "tiny-qwen2.5-vl")
    options = UpOptions(
        root=Path(__file__).resolve().parents[2],
        models_dir=tmp_path / "models",
        vllm_python=sys.executable,
        tiny=True,
        gateway_port=int(gateway.url.rsplit(":", 1)[1].split("/")[0]),
        video_port=free_port(),
        engine="temporal",
        video_workers=2,
        temporal_port=free_port(),
        temporal_http_port=free_port(),
        temporal_ui_port=free_port(),
        worker_metrics_port=free_port(),
        env_file=tmp_path / ".env",
        state_dir=tmp_path / "state",
    )
    planned = plan_stack(options, lambda _: None)
    assert [s.name for s in planned] == ["vllm", "gateway", "temporal", "workers", "video"]
    lines: list[str] = []
    stack = Stack([s for s in planned if s.name not in ("vllm", "gateway")], lines.append)
    running = asyncio.create_task(stack.run())
    video_url = f"http://127.0.0.1:{options.video_port}"
    try:
        async with httpx.AsyncClient(base_url=video_url, timeout=60) as http:
            while not any("all services are up" in line for line in lines):
                assert not running.done(), "\n".join(lines)
                await asyncio.sleep(0.1)
            video = make_video(tmp_path / "clip.mp4", seconds=6)
            with video.open("rb") as handle:
                job = (await http.post("/upload", files={"file": ("clip.mp4", handle, "video/mp4")})).json()
            for _ in range(1200):
                status = (await http.get(f"/status/{job['session_id']}")).json()
                if status["status"] in ("completed", "failed"):
                    break
                await asyncio.sleep(0.1)
            assert (status["status"], status["processed_frames"]) == ("completed", 6), "\n".join(lines[-40:])
        api = f"http://127.0.0.1:{options.temporal_http_port}/api/v1/namespaces/default/workflows"
        async with httpx.AsyncClient(timeout=10) as http:
            described = (await http.get(f"{api}/{job['workflow_id']}")).json()
            assert described["workflowExecutionInfo"]["status"] == "WORKFLOW_EXECUTION_STATUS_COMPLETED"
            ui = await http.get(f"http://127.0.0.1:{options.temporal_ui_port}/")
            assert ui.status_code == 200
        assert (tmp_path / "state" / "temporal.db").exists(), "job history survives a restart of the stack"
    finally:
        stack.stop_requested.set()
        assert await running == 0
