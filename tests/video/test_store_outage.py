"""The video API while its PostgreSQL restarts: 503 with Retry-After on every route, never a 500,
and answers again as soon as the database is back."""

from __future__ import annotations

import pytest

from tests.conftest import UpstreamFactory
from tests.postgres_server import PostgresServer, own_postgres_server
from tests.video.conftest import ServiceFactory, Videos

__all__ = ["own_postgres_server"]

pytestmark = [pytest.mark.service, pytest.mark.timeout(120)]


async def test_a_database_outage_is_a_503_until_it_is_back(
    own_postgres_server: PostgresServer, upstream: UpstreamFactory, video_service: ServiceFactory, videos: Videos
) -> None:
    gateway = await upstream("gateway")
    service = await video_service(gateway_url=gateway.url, database_url=own_postgres_server.new_database())
    with videos.h264_mp4.open("rb") as handle:
        uploaded = await service.http.post("/upload", files={"file": ("v.mp4", handle, "video/mp4")}, data={"fps": "1"})
    assert uploaded.status_code == 200, uploaded.text
    session_id = uploaded.json()["session_id"]
    routes = [
        f"/status/{session_id}",
        "/sessions",
        f"/sessions/{session_id}/frames",
        f"/summaries/{session_id}",
        "/search?q=fake",
    ]

    own_postgres_server.stop()
    for route in routes:
        response = await service.http.get(route)
        assert response.status_code == 503, (route, response.text)
        assert response.headers["Retry-After"] == "5"
        error = response.json()["error"]
        assert error["code"] == "store_unavailable"
        assert "127.0.0.1" not in error["message"]
        assert str(own_postgres_server.port) not in error["message"]
    chat = await service.http.post("/chat", json={"session_id": session_id, "question": "what happens?"})
    assert chat.status_code == 503

    own_postgres_server.start()
    for route in routes:
        response = await service.http.get(route)
        assert response.status_code == 200, (route, response.text)
    # The job went on where it stopped once the database was back.
    async with service.http.stream("GET", f"/sessions/{session_id}/events") as events:
        async for line in events.aiter_lines():
            if '"completed"' in line or '"failed"' in line:
                break
    status = (await service.http.get(f"/status/{session_id}")).json()
    assert status["status"] == "completed", status
    assert status["processed_frames"] == 5
