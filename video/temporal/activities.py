"""The Temporal engine's activities. A segment's frames are decoded inside the activity from the
shared media location and described through the gateway; results go straight to the store, one
idempotent write per frame, so a retried activity (after a worker died) skips what is stored and
continues where the dead one stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from video.fanout import Describer, fan_out
from video.jobs import JobSettings, Summariser
from video.jobs.engine import clip_plan, save_frames
from video.jobs.local import close_sampler, sampling_options
from video.jobs.speech import Soundtrack
from video.metrics import WorkerMetrics
from video.probe import VideoInfo, VideoRejected, probe
from video.sampling import SampledFrame, SamplingReport, sample
from video.store import Session, SessionGone, SpeechWindow, Store
from video.temporal.shared import (
    FailInput,
    FinishInput,
    JobPlan,
    PlanInput,
    SegmentInput,
    SegmentOutcome,
    SpeechInput,
    SpeechResult,
    SummariseInput,
)

log = logging.getLogger("video.temporal")


class _WhileStored(Describer):
    """Sends a frame only while its session exists: once ``DELETE`` removed it, no request starts,
    whatever Temporal's cancellation has reached yet."""

    session_id: str = ""
    store: Store | None = None

    async def describe(self, frames: list[SampledFrame], clip: tuple[float, float] | None = None) -> str:
        if self.store is not None and await asyncio.to_thread(self.store.get_session, self.session_id) is None:
            raise _gone(self.session_id)
        return await super().describe(frames, clip)


def _gone(session_id: str) -> ApplicationError:
    return ApplicationError(f"session {session_id} was deleted", type="SessionGone", non_retryable=True)


class VideoActivities:
    """Activities sharing this worker's store, gateway client and bound on frames in flight."""

    def __init__(
        self,
        store: Store,
        describer: Describer,
        summariser: Summariser,
        settings: JobSettings,
        metrics: WorkerMetrics,
        frame_slots: asyncio.Semaphore,
        heartbeat_every_s: float = 10.0,
        soundtrack: Soundtrack | None = None,
    ) -> None:
        self.store = store
        self.describer = describer
        self.summariser = summariser
        self.settings = settings
        self.metrics = metrics
        self.frame_slots = frame_slots
        self.heartbeat_every_s = heartbeat_every_s
        self.soundtrack = replace(soundtrack, record=metrics.speech) if soundtrack is not None else None

    async def _session(self, session_id: str) -> Session:
        # Store calls run in threads: a slow database must not hold up the heartbeats, or Temporal
        # would take the worker for dead and start the activity again elsewhere.
        session = await asyncio.to_thread(self.store.get_session, session_id)
        if session is None:
            raise _gone(session_id)
        return session

    async def _probe(self, session: Session) -> VideoInfo:
        try:
            return await asyncio.to_thread(
                probe,
                Path(session.video_path),
                self.settings.max_video_bytes,
                self.settings.max_duration_s,
                self.settings.max_video_pixels,
            )
        except VideoRejected as exc:
            raise ApplicationError(str(exc), type="VideoRejected", non_retryable=True) from None

    @activity.defn
    async def plan(self, job: PlanInput) -> JobPlan:
        """Cut the frames counted at upload into segments of whole summary batches (each segment
        activity opens the video itself, and fails the job if it can no longer be decoded)."""
        session = await self._session(job.session_id)
        options = sampling_options(session)
        total = session.total_frames
        batch = self.summariser.batch_size
        # Which frames a scene pass keeps depends on the frames before it: one segment then.
        scene = options.scene_threshold is not None
        unit = batch
        clips = clip_plan(session)
        if clips is not None and options.max_frames is None:
            # Segments hold whole clips too, so that no clip is cut in two requests.
            unit = math.lcm(batch, max(1, round(clips.seconds * options.fps)))
        size = total if scene else max(unit, round(job.segment_frames / unit) * unit)
        await asyncio.to_thread(self.store.update_session, session.id, status="processing")
        return JobPlan(total, max(1, size), batch, transcribe=session.audio == "transcribing")

    @activity.defn
    async def transcribe_soundtrack(self, job: SpeechInput) -> SpeechResult:
        """Transcribe the soundtrack's windows not stored yet (a retry continues where it stopped)."""
        session = await self._session(job.session_id)
        if self.soundtrack is None:
            await asyncio.to_thread(self.store.update_session, session.id, audio="not transcribed")
            return SpeechResult(0, 0, ["the workers have no transcription group (VIDEO_TRANSCRIPTION_MODEL)"])
        stored = [0]

        async def counted(window: SpeechWindow, segments: int) -> None:
            stored[0] += 1

        try:
            async with self._heartbeats(lambda: stored[0]):
                outcome = await self.soundtrack.transcribe(session, counted)
        except SessionGone:
            raise _gone(session.id) from None
        return SpeechResult(outcome.transcribed, outcome.failed, outcome.warnings)

    @activity.defn
    async def describe_segment(self, segment: SegmentInput) -> SegmentOutcome:
        """Describe the segment's frames that are not stored yet; heartbeats carry the last stored one."""
        session = await self._session(segment.session_id)
        info = await self._probe(session)
        done = await asyncio.to_thread(self.store.described_indices, session.id, segment.first, segment.last)
        if activity.info().attempt > 1:
            log.info(
                "continuing a segment",
                extra={"session_id": session.id, "first": segment.first, "already_described": len(done)},
            )
        report = SamplingReport()
        outcome = SegmentOutcome(max(done, default=-1) + 1, 0, 0)
        prompt = session.prompt or self.describer.prompt
        describer = _WhileStored(self.describer.client, self.describer.model, prompt, self.describer.max_tokens)
        describer.session_id, describer.store = session.id, self.store
        last_stored = [max(done, default=segment.first - 1)]

        async def on_result(
            batch: list[SampledFrame], clip: tuple[float, float] | None, description: str | None, error: str | None
        ) -> None:
            self.metrics.frames("described" if description is not None else "failed", len(batch))
            try:
                await asyncio.to_thread(save_frames, self.store, session.id, batch, clip, description, error)
            except SessionGone:
                raise _gone(session.id) from None
            for frame in batch:
                outcome.produced = max(outcome.produced, frame.index + 1)
                last_stored[0] = max(last_stored[0], frame.index)
            if description is None:
                outcome.failed += len(batch)
            else:
                outcome.described += len(batch)

        stop = threading.Event()
        frames = sample(
            Path(session.video_path),
            info,
            # One decoder per activity: a worker's parallelism is its concurrent activities.
            replace(sampling_options(session), workers=1),
            report,
            skip=done.__contains__,
            stop=stop,
            first=segment.first,
            last=segment.last,
        )
        try:
            async with self._heartbeats(lambda: last_stored[0]):
                await fan_out(
                    frames,
                    describer,
                    on_result,
                    frames_per_request=int(session.options.get("frames_per_request", self.settings.frames_per_request)),
                    latency=self.metrics.latency,
                    slots=self.frame_slots,
                    clips=clip_plan(session),
                )
        finally:
            await asyncio.to_thread(close_sampler, frames, stop)
        outcome.warnings = report.warnings
        return outcome

    @activity.defn
    async def summarise_batches(self, batches: SummariseInput) -> int:
        """Summarise the batches not summarised yet, then roll full groups up a level."""
        await self._session(batches.session_id)
        summarised = {s.batch_index for s in await asyncio.to_thread(self.store.summaries, batches.session_id)}
        made = 0
        try:
            async with self._heartbeats(lambda: made):
                for batch_index in batches.batches:
                    if batch_index not in summarised:
                        made += await self.summariser.summarise(batches.session_id, batch_index, roll_up=False)
                await self.summariser.roll_up(batches.session_id, final=False)
        except SessionGone:
            raise _gone(batches.session_id) from None
        return made

    @activity.defn
    async def finish(self, job: FinishInput) -> str:
        """Summarise what is left, roll up, embed, and set the final status."""
        await self._session(job.session_id)
        try:
            async with self._heartbeats(lambda: job.produced):
                status = await self.summariser.finish(job.session_id, job.produced, job.warnings)
            self.metrics.job(status)
            return status
        except SessionGone:
            raise _gone(job.session_id) from None
        finally:
            self.summariser.forget(job.session_id)

    @activity.defn
    async def mark_failed(self, failure: FailInput) -> None:
        await asyncio.to_thread(self.store.update_session, failure.session_id, status="failed", error=failure.message)
        self.metrics.job("failed")

    @contextlib.asynccontextmanager
    async def _heartbeats(self, details: Callable[[], int]) -> AsyncIterator[None]:
        """Heartbeat while the body runs (also while every request waits on a slow gateway), so a
        dead worker is noticed and a cancelled workflow's activity hears of it."""

        async def beat() -> None:
            while True:
                activity.heartbeat(details())
                await asyncio.sleep(self.heartbeat_every_s)

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
