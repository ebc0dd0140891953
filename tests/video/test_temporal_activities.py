"""The Temporal activities on their own (``ActivityEnvironment``), against a SQLite store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from video.jobs import JobSettings, Summariser
from video.store import Session, SQLiteStore
from video.temporal.activities import VideoActivities
from video.temporal.shared import JobPlan, PlanInput, SegmentInput

pytestmark = pytest.mark.service


class _Meter:
    def job(self, status: str) -> None:
        pass

    def frames(self, outcome: str, count: int) -> None:
        pass

    def latency(self, seconds: float) -> None:
        pass


def _activities(store: SQLiteStore) -> VideoActivities:
    summariser = Summariser(store, None, 4)  # type: ignore[arg-type]
    return VideoActivities(store, None, summariser, JobSettings(), _Meter(), asyncio.Semaphore(4))  # type: ignore[arg-type]


async def test_an_undecodable_video_fails_its_segment_without_retries(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "video.db")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    store.create_session(Session("s", None, "broken.mp4", str(broken), "queued", {}, None, 10, 10))
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(_activities(store).describe_segment, SegmentInput("s", 0, 9))
    assert raised.value.non_retryable
    assert raised.value.type == "VideoRejected"
    store.close()


async def test_a_deleted_session_ends_its_activities_without_retries(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "video.db")
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(_activities(store).describe_segment, SegmentInput("gone", 0, 7))
    assert raised.value.type == "SessionGone"
    assert raised.value.non_retryable
    store.close()


@pytest.mark.unit
def test_segments_cover_every_frame_once() -> None:
    plan = JobPlan(total_frames=130, segment_frames=60, batch_size=20)
    assert plan.segments() == 3
    assert [plan.frame_range(i) for i in range(3)] == [(0, 59), (60, 119), (120, None)]
    assert JobPlan(0, 60, 20).segments() == 1


async def test_the_plan_cuts_whole_summary_batches_and_marks_the_job_processing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "video.db")
    store.create_session(Session("s", None, "v.mp4", "/nowhere/v.mp4", "queued", {"fps": 1.0}, None, 130, 130))
    plan = await ActivityEnvironment().run(_activities(store).plan, PlanInput("s", 11))
    assert (plan.total_frames, plan.segment_frames, plan.batch_size) == (130, 12, 4)
    scene = Session("t", None, "v.mp4", "/nowhere/v.mp4", "queued", {"scene_threshold": 20.0}, None, 130, 130)
    store.create_session(scene)
    assert (await ActivityEnvironment().run(_activities(store).plan, PlanInput("t", 10))).segments() == 1
    session = store.get_session("s")
    assert session is not None
    assert session.status == "processing"
    store.close()


@pytest.mark.unit
def test_connection_settings_for_a_dev_server_temporal_cloud_and_mtls(tmp_path: Path) -> None:
    from temporalio.client import TLSConfig

    from video.settings import VideoSettings
    from video.temporal.connection import tls_config

    def settings(**values: object) -> VideoSettings:
        return VideoSettings(_env_file=None, **values)  # type: ignore[call-arg]

    assert tls_config(settings()) is False
    assert tls_config(settings(temporal_api_key="cloud-key")) is True  # Temporal Cloud: API key over TLS
    assert tls_config(settings(temporal_tls=True)) is True
    (tmp_path / "client.pem").write_bytes(b"CERT")
    (tmp_path / "client.key").write_bytes(b"KEY")
    mtls = tls_config(settings(temporal_tls_cert=tmp_path / "client.pem", temporal_tls_key=tmp_path / "client.key"))
    assert isinstance(mtls, TLSConfig)
    assert (mtls.client_cert, mtls.client_private_key, mtls.server_root_ca_cert) == (b"CERT", b"KEY", None)
