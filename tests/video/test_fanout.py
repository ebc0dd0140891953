"""Fan-out: bounded concurrency, every result delivered, failures recorded per frame."""

from __future__ import annotations

import pytest
from openai import AsyncOpenAI

from tests.conftest import UpstreamFactory
from video.fanout import Describer, fan_out
from video.sampling import SampledFrame

pytestmark = pytest.mark.service


def _frames(count: int):
    for index in range(count):
        yield SampledFrame(index, float(index), b"\xff\xd8fake-jpeg\xff\xd9", 8, 8)


async def test_never_more_than_max_concurrency_in_flight(upstream: UpstreamFactory) -> None:
    fake = await upstream("vision", delay_s=0.05, echo_prompt=True)
    results: dict[int, str | None] = {}

    async def on_result(batch: list[SampledFrame], description: str | None, error: str | None) -> None:
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

    async def on_result(batch: list[SampledFrame], description: str | None, error: str | None) -> None:
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


async def test_a_failing_frame_is_reported_not_raised(upstream: UpstreamFactory) -> None:
    fake = await upstream("vision", fail_status=400, fail_body=b'{"error": {"message": "image too large"}}')
    errors: list[str | None] = []

    async def on_result(batch: list[SampledFrame], description: str | None, error: str | None) -> None:
        errors.append(error)

    async with AsyncOpenAI(base_url=fake.url, api_key="k", max_retries=0) as client:
        await fan_out(_frames(2), Describer(client, "vision"), on_result)
    assert errors == ["the gateway answered 400: image too large"] * 2


async def test_a_result_that_cannot_be_stored_stops_the_fan_out_at_once(upstream: UpstreamFactory) -> None:
    fake = await upstream("vision", delay_s=0.05, echo_prompt=True)

    class Gone(Exception):
        pass

    async def on_result(batch: list[SampledFrame], description: str | None, error: str | None) -> None:
        raise Gone  # e.g. the session was deleted while its frames were being described

    async with AsyncOpenAI(base_url=fake.url, api_key="k", max_retries=0) as client:
        with pytest.raises(Gone):
            await fan_out(_frames(100), Describer(client, "vision"), on_result, max_concurrency=4)
    assert len(fake.bodies) <= 4 + 3, "only the requests already in flight when the first result failed"
