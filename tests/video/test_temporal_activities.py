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
    def frames(self, outcome: str, count: int) -> None:
        pass

    def latency(self, seconds: float) -> None:
        pass


def _activities(store: SQLiteStore) -> VideoActivities:
    summariser = Summariser(store, None, 4)  # type: ignore[arg-type]
    return VideoActivities(store, None, summariser, JobSettings(), _Meter(), asyncio.Semaphore(4))  # type: ignore[arg-type]


async def test_an_undecodable_video_fails_the_plan_without_retries(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "video.db")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    store.create_session(Session("s", None, "broken.mp4", str(broken), "queued", {}, None, 10, 10))
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(_activities(store).plan, PlanInput("s", 60))
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
