"""Failures are told apart: the chat model failing is a 502, a bug is a 500 with its traceback
logged; an upload the client abandons leaves no open file behind."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from tests.conftest import UpstreamFactory
from tests.video.conftest import ServiceFactory, Videos
from video.chat import ChatModel
from video.upload import receive_upload

pytestmark = [pytest.mark.service, pytest.mark.timeout(120)]


async def _described(service: Any, videos: Videos) -> str:
    with videos.h264_mp4.open("rb") as handle:
        uploaded = await service.http.post("/upload", files={"file": ("v.mp4", handle, "video/mp4")}, data={"fps": "1"})
    session_id: str = uploaded.json()["session_id"]
    async with service.http.stream("GET", f"/sessions/{session_id}/events") as events:
        async for line in events.aiter_lines():
            if '"completed"' in line or '"failed"' in line:
                break
    return session_id


async def test_a_bug_in_chat_is_a_500_and_a_model_failure_a_502(
    upstream: UpstreamFactory,
    video_service: ServiceFactory,
    videos: Videos,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = await upstream("gateway")
    service = await video_service(gateway_url=gateway.url)
    session_id = await _described(service, videos)

    async def broken(*_: Any, **__: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(ChatModel, "answer", broken)
    response = await service.http.post("/chat", json={"session_id": session_id, "question": "what happens?"})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records), "the bug's traceback is logged"
    monkeypatch.undo()

    gateway.behaviour.fail_status = 500
    failed = await service.http.post("/chat", json={"session_id": session_id, "question": "what happens?"})
    assert failed.status_code == 502


async def test_an_abandoned_upload_closes_and_removes_its_file(tmp_path: Path) -> None:
    more, stalled = asyncio.Event(), asyncio.Event()
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="v.mp4"\r\n\r\n' + b"x" * 1000

    async def receive() -> dict[str, Any]:
        if not more.is_set():
            more.set()
            return {"type": "http.request", "body": head, "more_body": True}
        stalled.set()  # the first chunk is written: the file is open
        await asyncio.Event().wait()  # the client stops sending
        raise AssertionError("unreachable")

    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", b"multipart/form-data; boundary=b")]}
    destination = tmp_path / "upload"
    receiving = asyncio.create_task(receive_upload(Request(scope, receive), destination, 10_000_000))
    await stalled.wait()
    assert destination.exists()
    receiving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receiving
    assert not destination.exists()
    open_files = {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if fd.isdigit()
                  and os.path.exists(f"/proc/self/fd/{fd}")}  # fmt: skip
    assert not any(str(destination) in path for path in open_files), "the upload's file is still open"
