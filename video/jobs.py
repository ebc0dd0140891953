"""Runs analysis jobs: sample, describe through the gateway, store, summarise; resumes after a crash."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from video.chat import ChatModel
from video.fanout import Describer, fan_out
from video.metrics import VideoMetrics
from video.probe import VideoRejected, probe
from video.sampling import SampledFrame, SamplingOptions, SamplingReport, sample
from video.store import FrameRecord, Session, Store, Summary

log = logging.getLogger("video.jobs")


class EventHub:
    """Progress events per session, for Server-Sent Events subscribers."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)

    def subscribe(self, session_id: str) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self._subscribers[session_id].add(queue)
        return queue

    def unsubscribe(self, session_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers[session_id].discard(queue)
        if not self._subscribers[session_id]:
            del self._subscribers[session_id]

    def publish(self, session_id: str, event: dict[str, Any]) -> None:
        for queue in list(self._subscribers.get(session_id, ())):
            if queue.full():
                queue.get_nowait()  # a slow reader loses the oldest progress event, never blocks the job
            queue.put_nowait(event)


@dataclass
class JobSettings:
    max_concurrency: int = 16
    frames_per_request: int = 1
    summary_batch_size: int = 20
    max_video_bytes: int | None = None
    max_duration_s: float | None = None


def sampling_options(session: Session) -> SamplingOptions:
    known = SamplingOptions.__dataclass_fields__
    return SamplingOptions(**{k: v for k, v in session.options.items() if k in known})


class JobRunner:
    """One task per running session; state lives in the store, so a restart resumes."""

    def __init__(
        self,
        store: Store,
        describer: Describer,
        chat: ChatModel,
        events: EventHub,
        settings: JobSettings,
        metrics: VideoMetrics | None = None,
    ) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.metrics = metrics or VideoMetrics(self.running)
        self.store = store
        self.describer = describer
        self.chat = chat
        self.events = events
        self.settings = settings

    def start(self, session_id: str) -> None:
        if session_id in self._tasks:
            return
        task = asyncio.create_task(self._run(session_id))
        self._tasks[session_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(session_id, None))

    def resume_all(self) -> int:
        """Restart every job that was queued or running when the service stopped."""
        sessions = self.store.sessions_with_status("queued", "processing")
        for session in sessions:
            log.info("resuming job", extra={"session_id": session.id})
            self.start(session.id)
        return len(sessions)

    async def cancel(self, session_id: str) -> None:
        task = self._tasks.pop(session_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def shutdown(self) -> None:
        for session_id in list(self._tasks):
            await self.cancel(session_id)

    def progress(self, session_id: str) -> dict[str, Any]:
        session = self.store.get_session(session_id)
        if session is None:
            return {}
        described, failed = self.store.counts(session_id)
        done = described + failed
        total = max(session.total_frames, 1)
        return {
            "session_id": session_id,
            "status": session.status,
            "processed_frames": described,
            "failed_frames": failed,
            "total_frames": session.total_frames,
            "progress_percentage": round(min(100.0, 100.0 * done / total), 1)
            if session.status != "completed"
            else 100.0,
            "warnings": session.warnings,
            "error": session.error,
        }

    def _publish(self, session_id: str, kind: str, **extra: Any) -> None:
        self.events.publish(session_id, {"event": kind, **self.progress(session_id), **extra})

    async def _run(self, session_id: str) -> None:
        session = self.store.get_session(session_id)
        if session is None:
            return
        try:
            await self._process(session)
        except asyncio.CancelledError:
            raise
        except VideoRejected as exc:
            self._fail(session_id, str(exc))
        except Exception:
            log.exception("job failed", extra={"session_id": session_id})
            self._fail(session_id, "the analysis failed unexpectedly; see the service log")

    def running(self) -> int:
        return len(self._tasks)

    def _fail(self, session_id: str, message: str) -> None:
        self.metrics.jobs.labels("failed").inc()
        self.store.update_session(session_id, status="failed", error=message)
        self._publish(session_id, "failed")

    async def _process(self, session: Session) -> None:
        path = Path(session.video_path)
        info = await asyncio.to_thread(probe, path, self.settings.max_video_bytes, self.settings.max_duration_s)
        self.store.update_session(session.id, status="processing")
        self._publish(session.id, "started")
        done = self.store.described_indices(session.id)
        report = SamplingReport()
        summarised = {s.batch_index for s in self.store.summaries(session.id)}
        summaries: set[asyncio.Task[None]] = set()
        produced = 0

        async def on_result(batch: list[SampledFrame], description: str | None, error: str | None) -> None:
            nonlocal produced
            self.metrics.frames.labels("described" if description is not None else "failed").inc(len(batch))
            for frame in batch:
                self.store.save_frame(
                    session.id, frame.index, frame.timestamp_s, description, error, frame.thumbnail or None
                )
                produced = max(produced, frame.index + 1)
            self._publish(
                session.id,
                "frame",
                frames=[{"index": f.index, "timestamp_s": f.timestamp_s} for f in batch],
                description=description,
                frame_error=error,
            )
            for batch_index in {f.index // self.settings.summary_batch_size for f in batch}:
                if batch_index not in summarised and self._batch_complete(session.id, batch_index):
                    summarised.add(batch_index)
                    summaries.add(asyncio.create_task(self._summarise(session.id, batch_index)))

        frames = sample(path, info, sampling_options(session), report, skip=done.__contains__)
        await fan_out(
            frames, self.describer, on_result, self.settings.max_concurrency, self._frames_per_request(session)
        )
        produced = max([produced, *(i + 1 for i in done)], default=0)
        if summaries:
            await asyncio.gather(*summaries)
        last_batch = (produced - 1) // self.settings.summary_batch_size if produced else -1
        for batch_index in range(last_batch + 1):
            if batch_index not in summarised:
                await self._summarise(session.id, batch_index)
        described, failed = self.store.counts(session.id)
        warnings = list(report.warnings)
        if failed:
            warnings.append(f"{failed} frame(s) could not be described; see GET /sessions/{session.id}/frames")
        if described == 0 and produced > 0:
            self.store.update_session(session.id, total_frames=produced, warnings=warnings)
            self._fail(session.id, "no frame could be described: is the gateway reachable?")
            return
        self.metrics.jobs.labels("completed").inc()
        self.store.update_session(session.id, status="completed", total_frames=produced, warnings=warnings)
        self._publish(session.id, "completed")

    def _frames_per_request(self, session: Session) -> int:
        value = session.options.get("frames_per_request", self.settings.frames_per_request)
        return int(value)

    def _batch_frames(self, session_id: str, batch_index: int) -> list[FrameRecord]:
        size = self.settings.summary_batch_size
        return self.store.frames(session_id, batch_index * size, (batch_index + 1) * size - 1)

    def _batch_complete(self, session_id: str, batch_index: int) -> bool:
        return len(self._batch_frames(session_id, batch_index)) == self.settings.summary_batch_size

    async def _summarise(self, session_id: str, batch_index: int) -> None:
        frames = self._batch_frames(session_id, batch_index)
        described = [f for f in frames if f.description]
        if not described:
            return
        try:
            text = await self.chat.summarise(described)
        except openai.APIError as exc:
            log.warning("summary failed", extra={"session_id": session_id, "batch": batch_index, "error": str(exc)})
            return
        summary = Summary(batch_index, described[0].timestamp_s, described[-1].timestamp_s, len(described), text)
        self.store.save_summary(session_id, summary)
        self._publish(session_id, "summary", batch_index=batch_index)
