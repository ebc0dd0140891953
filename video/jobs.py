"""Runs analysis jobs: sample, describe through the gateway, store, summarise; resumes after a crash."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import openai

from video.chat import ChatModel
from video.context_window import ContextTooSmall
from video.fanout import Describer, fan_out
from video.metrics import VideoMetrics
from video.probe import VideoRejected, probe
from video.retrieval import Embedder
from video.sampling import SampledFrame, SamplingOptions, SamplingReport, sample
from video.store import FrameRecord, Session, Store, Summary

log = logging.getLogger("video.jobs")
FAN_IN = 8  # summaries per summary one level up
EMBED_BATCH = 32  # descriptions embedded together


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
    max_concurrency: int = 16  # frames in flight across every running job
    max_jobs: int = 2  # jobs running at once; the others wait as 'queued', oldest first
    frames_per_request: int = 1
    summary_batch_size: int = 20
    max_video_bytes: int | None = None
    max_duration_s: float | None = None
    max_video_pixels: int | None = None


def sampling_options(session: Session) -> SamplingOptions:
    known = SamplingOptions.__dataclass_fields__
    return SamplingOptions(**{k: v for k, v in session.options.items() if k in known})


class JobRunner:
    """Runs at most ``max_jobs`` sessions at once, the rest wait in order; state lives in the
    store, so a restart resumes running jobs first, then the queue."""

    def __init__(
        self,
        store: Store,
        describer: Describer,
        chat: ChatModel,
        events: EventHub,
        settings: JobSettings,
        metrics: VideoMetrics | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._roll_up_locks: dict[str, asyncio.Lock] = {}
        self.embedder = embedder
        self._waiting: deque[str] = deque()
        self._closing = False
        self._frame_slots = asyncio.Semaphore(settings.max_concurrency)
        self.metrics = metrics or VideoMetrics(self.running, self.queued)
        self.store = store
        self.describer = describer
        self.chat = chat
        self.events = events
        self.settings = settings

    def start(self, session_id: str) -> None:
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

    def resume_all(self) -> int:
        """Restart the jobs that were running when the service stopped, then the queued ones, oldest first."""
        sessions = self.store.sessions_with_status("processing") + self.store.sessions_with_status("queued")
        for session in sessions:
            log.info("resuming job", extra={"session_id": session.id, "status": session.status})
            self.start(session.id)
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
        session = self.store.get_session(session_id)
        if session is None:
            return {}
        described, failed = self.store.counts(session_id)
        done = described + failed
        total = max(session.total_frames, 1)
        progress: dict[str, Any] = {
            "session_id": session_id,
            "status": session.status,
            "processed_frames": described,
            "failed_frames": failed,
            "total_frames": session.total_frames,
            "progress_percentage": round(min(100.0, 100.0 * done / total), 1)
            if session.status != "completed"
            else 100.0,
            "prompt": session.prompt,
            "warnings": session.warnings,
            "error": session.error,
        }
        if session_id in self._waiting:
            progress["queue_position"] = self._waiting.index(session_id) + 1
        return progress

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
        finally:
            self._roll_up_locks.pop(session_id, None)

    def _fail(self, session_id: str, message: str) -> None:
        self.metrics.jobs.labels("failed").inc()
        self.store.update_session(session_id, status="failed", error=message)
        self._publish(session_id, "failed")

    async def _process(self, session: Session) -> None:
        path = Path(session.video_path)
        info = await asyncio.to_thread(
            probe, path, self.settings.max_video_bytes, self.settings.max_duration_s, self.settings.max_video_pixels
        )
        self.store.update_session(session.id, status="processing")
        self._publish(session.id, "started")
        done = self.store.described_indices(session.id)
        report = SamplingReport()
        summarised = {s.batch_index for s in self.store.summaries(session.id)}
        produced = 0
        unembedded = 0
        embedding: asyncio.Task[None] | None = None
        describer = replace(self.describer, prompt=session.prompt) if session.prompt else self.describer
        stop = threading.Event()
        frames = sample(path, info, sampling_options(session), report, skip=done.__contains__, stop=stop)
        try:
            # The job owns its summaries: cancelling the job (DELETE, shutdown) cancels them too.
            async with asyncio.TaskGroup() as summaries:

                async def on_result(batch: list[SampledFrame], description: str | None, error: str | None) -> None:
                    nonlocal produced, unembedded, embedding
                    outcome = "described" if description is not None else "failed"
                    self.metrics.frames.labels(outcome).inc(len(batch))
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
                            summaries.create_task(self._summarise(session.id, batch_index))
                    if self.embedder is not None and description is not None:
                        unembedded += len(batch)
                        if unembedded >= EMBED_BATCH and (embedding is None or embedding.done()):
                            unembedded = 0
                            embedding = summaries.create_task(self._embed_missing(session.id))

                await fan_out(
                    frames,
                    describer,
                    on_result,
                    frames_per_request=self._frames_per_request(session),
                    latency=self.metrics.frame_latency.observe,
                    slots=self._frame_slots,
                )
        finally:
            await asyncio.to_thread(_close_sampler, frames, stop)
        produced = max([produced, *(i + 1 for i in done)], default=0)
        last_batch = (produced - 1) // self.settings.summary_batch_size if produced else -1
        for batch_index in range(last_batch + 1):
            if batch_index not in summarised:
                await self._summarise(session.id, batch_index, roll_up=False)
        await self._roll_up(session.id, final=True)
        await self._embed_missing(session.id)
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

    async def _summarise(self, session_id: str, batch_index: int, roll_up: bool = True) -> None:
        frames = self._batch_frames(session_id, batch_index)
        described = [f for f in frames if f.description]
        if not described:
            return
        try:
            text = await self.chat.summarise(described)
        except (openai.APIError, ContextTooSmall) as exc:
            log.warning("summary failed", extra={"session_id": session_id, "batch": batch_index, "error": str(exc)})
            return
        summary = Summary(batch_index, described[0].timestamp_s, described[-1].timestamp_s, len(described), text)
        self.store.save_summary(session_id, summary)
        self._publish(session_id, "summary", batch_index=batch_index)
        if roll_up:
            await self._roll_up(session_id, final=False)

    async def _roll_up(self, session_id: str, final: bool) -> None:
        """Summarise every full group of ``FAN_IN`` summaries into one a level up, so the overview of
        any length of video fits any budget; ``final`` also summarises partial groups. A level of at
        most ``FAN_IN`` summaries is the top."""
        lock = self._roll_up_locks.setdefault(session_id, asyncio.Lock())
        async with lock:
            level = 0
            while True:
                nodes = self.store.summaries(session_id) if level == 0 else self._level(session_id, level)
                if len(nodes) <= FAN_IN:
                    return  # a level this small is its own overview
                done = {n.batch_index for n in self._level(session_id, level + 1)}
                groups: dict[int, list[Summary]] = defaultdict(list)
                for node in nodes:
                    groups[node.batch_index // FAN_IN].append(node)
                for parent, children in sorted(groups.items()):
                    if parent in done or (len(children) < FAN_IN and not final):
                        continue
                    if not await self._summarise_group(session_id, level + 1, parent, children):
                        return
                if len(groups) <= 1:
                    return
                level += 1

    def _level(self, session_id: str, level: int) -> list[Summary]:
        return [s for s in self.store.overviews(session_id) if s.level == level]

    async def _summarise_group(self, session_id: str, level: int, index: int, children: list[Summary]) -> bool:
        try:
            text = await self.chat.summarise_summaries(children)
        except (openai.APIError, ContextTooSmall) as exc:
            log.warning("overview failed", extra={"session_id": session_id, "level": level, "error": str(exc)})
            return False
        frames = sum(c.frame_count for c in children)
        self.store.save_summary(
            session_id, Summary(index, children[0].start_s, children[-1].end_s, frames, text, level)
        )
        return True

    async def _embed_missing(self, session_id: str) -> None:
        """Embed the session's described frames that have no vector yet (also after a resume)."""
        if self.embedder is None:
            return
        while frames := self.store.frames_without_embedding(session_id, self.embedder.model, EMBED_BATCH * 2):
            try:
                vectors = await self.embedder.embed([f.description or "" for f in frames])
            except openai.APIError as exc:
                log.warning(
                    "embedding failed; search uses words only", extra={"session_id": session_id, "error": str(exc)}
                )
                return
            self.store.save_embeddings(
                session_id, self.embedder.model, {f.index: v.tobytes() for f, v in zip(frames, vectors, strict=True)}
            )


def _close_sampler(frames: Iterator[SampledFrame], stop: threading.Event) -> None:
    """Stop the decoders; close the generator unless a reader thread is still inside it (it then
    returns by itself at its next frame, having seen ``stop``)."""
    stop.set()
    close = getattr(frames, "close", None)
    if close is not None:
        with contextlib.suppress(ValueError):
            close()
