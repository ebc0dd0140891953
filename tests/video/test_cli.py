"""The ``video`` command: analyse a file in-process against a fake gateway, describe an image."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import UpstreamFactory
from tests.video.conftest import Videos
from video.cli import main

pytestmark = pytest.mark.service


async def test_analyze_prints_timeline_and_answer_and_writes_a_report(
    upstream: UpstreamFactory, videos: Videos, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = await upstream("gateway", echo_prompt=True)
    report = tmp_path / "report.json"
    argv = [
        "analyze",
        str(videos.h264_mp4),
        "--gateway-url",
        gateway.url,
        "--question",
        "What is shown?",
        "--output",
        str(report),
    ]
    code = await asyncio.to_thread(main, argv)
    assert code == 0
    out = capsys.readouterr().out
    timeline = out.split("Q: ")[0]
    lines = [line for line in timeline.splitlines() if line.startswith("[00:")]
    assert [line[:9] for line in lines] == ["[00:00.0]", "[00:01.0]", "[00:02.0]", "[00:03.0]", "[00:04.0]"]
    assert "Q: What is shown?" in out
    assert "A: gateway saw:" in out
    data = json.loads(report.read_text())
    assert len(data["frames"]) == 5
    assert data["answer"].startswith("gateway saw:")
    assert data["warnings"] == []


async def test_analyze_sends_clips_as_video_items_when_asked(
    upstream: UpstreamFactory, videos: Videos, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = await upstream("gateway", echo_prompt=True)
    argv = [
        "analyze",
        str(videos.h264_mp4),
        "--gateway-url",
        gateway.url,
        "--clip-mode",
        "video",
        "--chunk-seconds",
        "2",
    ]
    assert await asyncio.to_thread(main, argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[00:")]
    assert [line.split("]")[0] for line in lines] == ["[00:00.0-00:02.0", "[00:02.0-00:04.0", "[00:04.0-00:05.0"]
    assert [b["messages"][0]["content"][1]["type"] for b in gateway.bodies] == ["video_url"] * 3


async def test_analyze_refuses_a_bad_file(
    upstream: UpstreamFactory, videos: Videos, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = await upstream("gateway")
    code = await asyncio.to_thread(main, ["analyze", str(videos.not_a_video), "--gateway-url", gateway.url])
    assert code == 1
    assert "cannot be opened as a video" in capsys.readouterr().err
    assert gateway.bodies == []


async def test_describe_an_image(upstream: UpstreamFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gateway = await upstream("gateway", echo_prompt=True)
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.full((40, 60, 3), 90, np.uint8))
    assert await asyncio.to_thread(main, ["describe", str(image), "--gateway-url", gateway.url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Description:\ngateway saw: Describe this video frame")
    assert "Insights:" in out
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert await asyncio.to_thread(main, ["describe", str(text), "--gateway-url", gateway.url]) == 1
