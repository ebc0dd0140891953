"""The embedded engine: jobs run in this process (sample, describe through the gateway, store,
summarise); state lives in the store, so a restart resumes them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from video.fanout import Describer, fan_out
from video.jobs.engine import JobSettings, clip_plan, progress, save_frames
from video.jobs.events import EventHub
from video.jobs.speech import Soundtrack, SpeechOutcome
from video.jobs.summaries import EMBED_BATCH, Summariser
from video.metrics import VideoMetrics
from video.probe import VideoRejected, probe
from video.sampling import SampledFrame, SamplingOptions, SamplingReport, sample
from video.store import Session, SessionGone, SpeechWindow, Store, StoreUnavailable

log = logging.getLogger("video.jobs")
STORE_RETRY_MIN_S = 1.0  # a job whose database is down tries again after this, doubling up to the max
STORE_RETRY_MAX_S = 30.0


def sampling_options(session: Session) -> SamplingOptions:
    known = SamplingOptions.__dataclass_fields__
    return SamplingOptions(**{k: v for k, v in session.options.items() if k in known})


class LocalEngine:
    """Runs at most ``max_jobs`` sessions at once, the rest wait in order; state lives in the
    store, so a restart resumes running jobs first, then the queue."""

    def __init__(
        self,
        store: Store,
        describer: Describer,
        summariser: Summariser,
        events: EventHub,
        settings: JobSettings,
        metrics: VideoMetrics | None = None,
        soundtrack: Soundtrack | None = None,
    ) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._waiting: deque[str] = deque()
        self._closing = False
        self._frame_slots = asyncio.Semaphore(settings.max_concurrency)
        self.metrics = metrics or VideoMetrics(self.running, self.queued)
        self.store = store
        self.describer = describer
        self.summariser = summariser
        self.events = events
        self.settings = settings
        self.soundtrack = replace(soundtrack, record=self.metrics.speech) if soundtrack is not None else None

    async def start(self, session_id: str) -> None:
        """Run the session's job now if a slot is free, else queue it behind the others."""
        if session_id in self._tasks or session_id in self._waiting:
            return
        self._waiting.append(session_id)
        self._admit()

    def _admit(self) -> None:
        while self._waiting and len(self._tasks) < self.settings.max_jobs and not self._closing:
            session_id = self._waiting.popleft()
            task = asyncio.create_task(self._run(session_id), name=f"video-job-{session_id}")
            self._tasks[session_id] = task
            task.add_done_callback(functools.partial(self._finished, session_id))
        for position, session_id in enumerate(self._waiting, start=1):
            self.events.publish(session_id, {"event": "queued", **self.progress(session_id), "position": position})

    def _finished(self, session_id: str, _: asyncio.Task[None]) -> None:
        self._tasks.pop(session_id, None)
        self._admit()

    async def resume_all(self) -> int:
        """Restart the jobs that were running when the service stopped, then the queued ones, oldest first."""
        sessions = self.store.sessions_with_status("processing") + self.store.sessions_with_status("queued")
        for session in sessions:
            log.info("resuming job", extra={"session_id": session.id, "status": session.status})
            await self.start(session.id)
        return len(sessions)

    async def cancel(self, session_id: str) -> None:
        """Stop the session's job (running or queued) and wait until nothing of it runs."""
        if session_id in self._waiting:
            self._waiting.remove(session_id)
        task = self._tasks.pop(session_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def shutdown(self) -> None:
        """Stop every job; queued and running ones stay in the store and resume at the next start."""
        self._closing = True
        self._waiting.clear()
        for session_id in list(self._tasks):
            await self.cancel(session_id)

    def running(self) -> int:
        return len(self._tasks)

    def queued(self) -> int:
        return len(self._waiting)

    def progress(self, session_id: str) -> dict[str, Any]:
        position = self._waiting.index(session_id) + 1 if session_id in self._waiting else None
        return progress(self.store, session_id, position)

    async def _publish(self, session_id: str, kind: str, **extra: Any) -> None:
        current = await asyncio.to_thread(self.progress, session_id)
        self.events.publish(session_id, {"event": kind, **current, **extra})

    async def _run(self, session_id: str) -> None:
        delay = STORE_RETRY_MIN_S
        try:
            while True:
                try:
                    await self._attempt(session_id)
                    return
                except StoreUnavailable:
                    # The database restarts or is down: the job is kept (its results so far are
                    # stored) and goes on where it stopped once the database answers again.
                    log.warning(
                        "database unavailable; the job goes on once it is back", extra={"session_id": session_id}
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, STORE_RETRY_MAX_S)
        finally:
            self.summariser.forget(session_id)

    async def _attempt(self, session_id: str) -> None:
        session = await asyncio.to_thread(self.store.get_session, session_id)
        if session is None:
            return
        try:
            await self._process(session)
        except (asyncio.CancelledError, StoreUnavailable):
            raise
        except VideoRejected as exc:
            await self._fail(session_id, str(exc))
        except ExceptionGroup as group:
            if group.subgroup(StoreUnavailable) is not None:  # raised by the job's summaries too
                raise StoreUnavailable(str(group.exceptions[0])) from group
            log.exception("job failed", extra={"session_id": session_id})
            await self._fail(session_id, "the analysis failed unexpectedly; see the service log")
        except Exception:
            log.exception("job failed", extra={"session_id": session_id})
            await self._fail(session_id, "the analysis failed unexpectedly; see the service log")

    async def _fail(self, session_id: str, message: str) -> None:
        self.metrics.jobs.labels("failed").inc()
        await asyncio.to_thread(self.store.update_session, session_id, status="failed", error=message)
        await self._publish(session_id, "failed")

    async def _process(self, session: Session) -> None:
        path = Path(session.video_path)
        info = await asyncio.to_thread(
            probe, path, self.settings.max_video_bytes, self.settings.max_duration_s, self.settings.max_video_pixels
        )
        await asyncio.to_thread(self.store.update_session, session.id, status="processing")
        await self._publish(session.id, "started")
        done = await asyncio.to_thread(self.store.described_indices, session.id)
        report = SamplingReport()
        summarised = {s.batch_index for s in await asyncio.to_thread(self.store.summaries, session.id)}
        batch_size = self.summariser.batch_size
        produced = 0
        unembedded = 0
        embedding: asyncio.Task[None] | None = None
        describer = replace(self.describer, prompt=session.prompt) if session.prompt else self.describer
        stop = threading.Event()
        frames = sample(path, info, sampling_options(session), report, skip=done.__contains__, stop=stop)
        speech: asyncio.Task[SpeechOutcome] | None = None
        unheard: list[str] = []
        if session.audio == "transcribing" and self.soundtrack is None:
            # Uploaded while a transcription group was configured, resumed without one.
            await asyncio.to_thread(self.store.update_session, session.id, audio="not transcribed")
            unheard.append("the soundtrack was not transcribed: no transcription group (VIDEO_TRANSCRIPTION_MODEL)")
        try:
            # The job owns its summaries and its soundtrack: cancelling the job (DELETE, shutdown)
            # cancels them too.
            async with asyncio.TaskGroup() as summaries:
                if self.soundtrack is not None and session.audio == "transcribing":
                    speech = summaries.create_task(self._listen(session, self.soundtrack))

                async def on_result(
                    batch: list[SampledFrame],
                    clip: tuple[float, float] | None,
                    description: str | None,
                    error: str | None,
                ) -> None:
                    nonlocal produced, unembedded, embedding
                    outcome = "described" if description is not None else "failed"
                    self.metrics.frames.labels(outcome).inc(len(batch))
                    await asyncio.to_thread(save_frames, self.store, session.id, batch, clip, description, error)
                    produced = max(produced, *(frame.index + 1 for frame in batch))
                    await self._publish(
                        session.id,
                        "frame",
                        frames=[{"index": f.index, "timestamp_s": f.timestamp_s} for f in batch],
                        clip={"start_s": clip[0], "end_s": clip[1]} if clip else None,
                        description=description,
                        frame_error=error,
                    )
                    for batch_index in {f.index // batch_size for f in batch}:
                        if batch_index in summarised:
                            continue
                        complete = await self.summariser.batch_complete(session.id, batch_index)
                        if complete and batch_index not in summarised:  # another result may have come first
                            summarised.add(batch_index)
                            summaries.create_task(self._summarise(session.id, batch_index))
                    if self.summariser.embedder is not None and description is not None:
                        unembedded += len(batch)
                        if unembedded >= EMBED_BATCH and (embedding is None or embedding.done()):
                            unembedded = 0
                            embedding = summaries.create_task(self.summariser.embed_missing(session.id))

                await fan_out(
                    frames,
                    describer,
                    on_result,
                    frames_per_request=self._frames_per_request(session),
                    latency=self.metrics.frame_latency.observe,
                    slots=self._frame_slots,
                    clips=clip_plan(session),
                )
        finally:
            await asyncio.to_thread(close_sampler, frames, stop)
        produced = max([produced, *(i + 1 for i in done)], default=0)
        warnings = report.warnings + unheard + (speech.result().warnings if speech is not None else [])
        status = await self.summariser.finish(session.id, produced, warnings)
        self.metrics.jobs.labels(status).inc()
        await self._publish(session.id, status)

    async def _listen(self, session: Session, soundtrack: Soundtrack) -> SpeechOutcome:
        """Transcribe the soundtrack beside the frames; a failure here never fails the frames."""

        async def stored(window: SpeechWindow, segments: int) -> None:
            stretch = {"index": window.index, "start_s": window.start_s, "end_s": window.end_s, "segments": segments}
            await self._publish(session.id, "speech", window=stretch, window_error=window.error)

        try:
            return await soundtrack.transcribe(session, stored)
        except (asyncio.CancelledError, StoreUnavailable, SessionGone):
            raise
        except Exception:
            log.exception("transcription failed", extra={"session_id": session.id})
            await asyncio.to_thread(self.store.update_session, session.id, audio="not transcribed")
            return SpeechOutcome(warnings=["the soundtrack could not be transcribed; see the service log"])

    async def _summarise(self, session_id: str, batch_index: int) -> None:
        if await self.summariser.summarise(session_id, batch_index):
            await self._publish(session_id, "summary", batch_index=batch_index)

    def _frames_per_request(self, session: Session) -> int:
        value = session.options.get("frames_per_request", self.settings.frames_per_request)
        return int(value)


def close_sampler(frames: Iterator[SampledFrame], stop: threading.Event) -> None:
    """Stop the decoders; close the generator unless a reader thread is still inside it (it then
    returns by itself at its next frame, having seen ``stop``)."""
    stop.set()
    close = getattr(frames, "close", None)
    if close is not None:
        with contextlib.suppress(ValueError):
            close()
