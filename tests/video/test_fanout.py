"""Fan-out: bounded concurrency, every result delivered, failures recorded per frame."""

from __future__ import annotations

import base64

import pytest
from openai import AsyncOpenAI

from tests.conftest import UpstreamFactory
from video.clips import ClipPlan
from video.fanout import Describer, fan_out
from video.sampling import SampledFrame

pytestmark = pytest.mark.service


def _frames(count: int):
    for index in range(count):
        yield SampledFrame(index, float(index), b"\xff\xd8fake-jpeg\xff\xd9", 8, 8)


async def test_never_more_than_max_concurrency_in_flight(upstream: UpstreamFactory) -> None:
    fake = await upstream("vision", delay_s=0.05, echo_prompt=True)
    results: dict[int, str | None] = {}

    async def on_result(batch: list[SampledFrame], _clip: object, description: str | None, error: str | None) -> None:
        for frame in batch:
            results[frame.index] = description

    async with AsyncOpenAI(base_url=fake.url, api_key="k", max_retries=0) as client:
        await fan_out(_frames(12), Describer(client, "vision"), on_result, max_concurrency=3)
    assert fake.max_in_flight == 3
    assert sorted(results) == list(range(12))
    assert all(f"Timestamp: 00:{i:04.1f}" in (results[i] or "") for i in range(12))


async def test_clip_mode_sends_consecutive_frames_together(upstream: UpstreamFactory) -> None:
    fake = await upstream("vision", echo_prompt=True)
    batches: list[list[int]] = []

    async def on_result(batch: list[SampledFrame], _clip: object, description: str | None, error: str | None) -> None:
        batches.append([f.index for f in batch])

    async with AsyncOpenAI(base_url=fake.url, api_key="k", max_retries=0) as client:
        await fan_out(_frames(7), Describer(client, "vision"), on_result, max_concurrency=2, frames_per_request=3)
    assert sorted(batches) == [[0, 1, 2], [3, 4, 5], [6]]
    sent = {
        body["messages"][0]["content"][0]["text"].rsplit("\n", 1)[-1]: sum(
            part["type"] == "image_url" for part in body["messages"][0]["content"]
        )
        for body in fake.bodies
    }
    assert sent == {
        "Timestamps: 00:00.0, 00:01.0, 00:02.0.": 3,
        "Timestamps: 00:03.0, 00:04.0, 00:05.0.": 3,
        "Timestamp: 00:06.0.": 1,
    }


async def test_native_clips_go_as_one_video_item_each_with_their_times(upstream: UpstreamFactory) -> None:
    fake = await upstream("vision", echo_prompt=True)
    clips: dict[tuple[float, float] | None, list[int]] = {}

    async def on_result(
        batch: list[SampledFrame], clip: tuple[float, float] | None, description: str | None, error: str | None
    ) -> None:
        assert error is None, error
        clips[clip] = [f.index for f in batch]

    plan = ClipPlan.for_job(chunk_seconds=4, fps=1, duration_s=7.0)
    async with AsyncOpenAI(base_url=fake.url, api_key="k", max_retries=0) as client:
        # frames_per_request is the per-image grouping; a clip plan groups by time instead.
        await fan_out(_frames(7), Describer(client, "vision"), on_result, frames_per_request=3, clips=plan)
    assert clips == {(0.0, 4.0): [0, 1, 2, 3], (4.0, 7.0): [4, 5, 6]}
    for body in fake.bodies:
        parts = body["messages"][0]["content"]
        assert [p["type"] for p in parts] == ["text", "video_url"]
        url = parts[1]["video_url"]["url"]
        assert url.startswith("data:video/jpeg;base64,")
        frames = url.removeprefix("data:video/jpeg;base64,").split(",")
        assert all(base64.b64decode(f) == b"\xff\xd8fake-jpeg\xff\xd9" for f in frames)
        if len(frames) == 4:
            assert "from 00:00.0 to 00:04.0" in parts[0]["text"]
        else:
            assert len(frames) == 3
            assert "from 00:04.0 to 00:07.0" in parts[0]["text"]


def test_a_clip_holds_at_most_32_frames_whatever_the_rate() -> None:
    plan = ClipPlan.for_job(chunk_seconds=10, fps=8, duration_s=60)
    assert plan.seconds == 4.0
    assert plan.span(14) == (56.0, 60.0)
    small = ClipPlan.for_job(chunk_seconds=10, fps=2, duration_s=60, max_frames=6)  # a small model's context
    assert (small.seconds, small.max_frames) == (3.0, 6)
    assert ClipPlan.for_job(chunk_seconds=10, fps=30, duration_s=60, max_frames=100).max_frames == 32


async def test_a_failing_frame_is_reported_not_raised(upstream: UpstreamFactory) -> None:
    fake = await upstream("vision", fail_status=400, fail_body=b'{"error": {"message": "image too large"}}')
    errors: list[str | None] = []

    async def on_result(batch: list[SampledFrame], _clip: object, description: str | None, error: str | None) -> None:
        errors.append(error)

    async with AsyncOpenAI(base_url=fake.url, api_key="k", max_retries=0) as client:
        await fan_out(_frames(2), Describer(client, "vision"), on_result)
    assert errors == ["the gateway answered 400: image too large"] * 2


async def test_a_result_that_cannot_be_stored_stops_the_fan_out_at_once(upstream: UpstreamFactory) -> None:
    fake = await upstream("vision", delay_s=0.05, echo_prompt=True)

    class Gone(Exception):
        pass

    async def on_result(batch: list[SampledFrame], _clip: object, description: str | None, error: str | None) -> None:
        raise Gone  # e.g. the session was deleted while its frames were being described

    async with AsyncOpenAI(base_url=fake.url, api_key="k", max_retries=0) as client:
        with pytest.raises(Gone):
            await fan_out(_frames(100), Describer(client, "vision"), on_result, max_concurrency=4)
    assert len(fake.bodies) <= 4 + 3, "only the requests already in flight when the first result failed"
