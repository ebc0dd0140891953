"""A database busy with another process's write holds up the requests that need it, never the
service: other requests are answered meanwhile."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest

from tests.conftest import UpstreamFactory
from tests.video.conftest import ServiceFactory, Videos

pytestmark = [pytest.mark.service, pytest.mark.timeout(120)]


async def test_a_busy_writer_does_not_freeze_the_api(
    upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    gateway = await upstream("gateway")
    service = await video_service(gateway_url=gateway.url)
    with videos.h264_mp4.open("rb") as handle:
        uploaded = await service.http.post("/upload", files={"file": ("v.mp4", handle, "video/mp4")}, data={"fps": "1"})
    session_id = uploaded.json()["session_id"]
    async with service.http.stream("GET", f"/sessions/{session_id}/events") as events:
        async for line in events.aiter_lines():
            if '"completed"' in line or '"failed"' in line:
                break

    # Another process holds the write lock for 2 s (a long transaction, a backup, a migration).
    other = sqlite3.connect(service.settings.data_dir / "video.db", check_same_thread=False, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    releaser = threading.Timer(2.0, lambda: other.execute("COMMIT"))
    releaser.start()
    try:
        deleting = asyncio.create_task(service.http.delete(f"/sessions/{session_id}"))  # a write: it waits
        await asyncio.sleep(0.2)
        started = time.monotonic()
        assert (await service.http.get("/health")).status_code == 200
        status = await service.http.get(f"/status/{session_id}")  # a read: WAL lets it through
        assert status.status_code == 200
        assert time.monotonic() - started < 1.0, "the event loop waited for the database"
        assert not deleting.done()
        deleted = await deleting
        assert deleted.status_code == 200, deleted.text
    finally:
        releaser.join()
        other.close()
