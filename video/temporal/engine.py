"""The API's side of the Temporal engine: starts and cancels workflows, reads progress from the
shared store, and turns what workers store into progress events for this replica's subscribers."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from video.jobs.engine import progress
from video.jobs.events import EventHub
from video.metrics import VideoMetrics
from video.settings import VideoSettings
from video.store import Store, StoredFrame
from video.temporal.connection import connect
from video.temporal.shared import VideoJobInput, workflow_id
from video.temporal.workflows import VideoWorkflow

log = logging.getLogger("video.temporal")
LAG_S = 2.0  # frames written up to this long before the last poll are looked at again (commit order)
RESTART_QUEUED_EVERY_S = 30.0


@dataclass
class _Watch:
    cursor: float
    status: str | None = None
    summaries: int = 0
    windows: int = 0  # soundtrack windows stored
    published: dict[int, tuple[str | None, str | None]] = field(default_factory=dict)


class TemporalEngine:
    """Jobs run as ``VideoWorkflow`` on ``video worker`` processes; this API replica keeps no job state."""

    def __init__(self, client: Client, store: Store, settings: VideoSettings, poll_interval_s: float = 0.5) -> None:
        self.client = client
        self.store = store
        self.settings = settings
        self.events = EventHub()
        self.metrics = VideoMetrics(self.running)
        self._poll_interval_s = poll_interval_s
        self._watches: dict[str, _Watch] = {}
        self._watcher = asyncio.create_task(self._watch(), name="video-progress-watcher")

    @classmethod
    async def connect(cls, settings: VideoSettings, store: Store) -> TemporalEngine:
        return cls(await connect(settings, lazy=True), store, settings)

    def _input(self, session_id: str) -> VideoJobInput:
        s = self.settings
        return VideoJobInput(
            session_id,
            segment_frames=s.temporal_segment_frames,
            max_pending_activities=s.temporal_max_pending_activities,
            heartbeat_timeout_s=s.temporal_heartbeat_timeout_s,
            segments_per_run=s.temporal_segments_per_run,
        )

    async def start(self, session_id: str) -> None:
        """Start the session's workflow; one already running is kept, a failed one is started again.
        While Temporal cannot be reached the session stays queued and is started once it can."""
        try:
            await self.client.start_workflow(
                VideoWorkflow.run,
                self._input(session_id),
                id=workflow_id(session_id),
                task_queue=self.settings.temporal_task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )
        except RPCError as exc:
            if exc.status == RPCStatusCode.ALREADY_EXISTS:
                return  # finished already (completed): nothing to run
            self._not_started(session_id, exc.message)
        except RuntimeError as exc:  # the client could not connect
            self._not_started(session_id, str(exc))

    def _not_started(self, session_id: str, error: str) -> None:
        log.warning(
            "Temporal cannot start the job now; it stays queued and is started when Temporal answers",
            extra={"session_id": session_id, "error": error},
        )

    def _handle(self, session_id: str) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(workflow_id(session_id))

    async def cancel(self, session_id: str) -> None:
        """Ask Temporal to cancel the workflow; its activities stop at their next heartbeat, or at their
        next write once the session is deleted."""
        try:
            await self._handle(session_id).cancel()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                log.warning(
                    "the workflow could not be cancelled", extra={"session_id": session_id, "error": exc.message}
                )
        except RuntimeError as exc:  # Temporal unreachable: its activities stop at their next write instead
            log.warning("the workflow could not be cancelled", extra={"session_id": session_id, "error": str(exc)})

    async def resume_all(self) -> int:
        """Start the workflows of queued sessions (an upload while Temporal was down); running ones
        live in Temporal and need nothing."""
        queued = await asyncio.to_thread(self.store.sessions_with_status, "queued")
        for session in queued:
            await self.start(session.id)
        return len(queued)

    def progress(self, session_id: str) -> dict[str, Any]:
        return progress(self.store, session_id)

    def running(self) -> int:
        return len(self.store.sessions_with_status("processing"))

    async def shutdown(self) -> None:
        self._watcher.cancel()
        await asyncio.gather(self._watcher, return_exceptions=True)

    async def _watch(self) -> None:
        """Poll the store for the sessions someone streams, and now and then start queued ones."""
        loop = asyncio.get_running_loop()
        next_restart = loop.time() + RESTART_QUEUED_EVERY_S
        while True:
            await asyncio.sleep(self._poll_interval_s)
            try:
                watched = self.events.watched()
                for gone in set(self._watches) - set(watched):
                    del self._watches[gone]
                for session_id in watched:
                    await self._poll(session_id)
                if loop.time() >= next_restart:
                    next_restart = loop.time() + RESTART_QUEUED_EVERY_S
                    await self.resume_all()
            except Exception:
                log.exception("progress polling failed; retrying")

    def _read(self, session_id: str, since: float) -> tuple[dict[str, Any], list[StoredFrame], int]:
        """What a poll publishes, read in one go (blocking: run in a thread)."""
        return (
            self.progress(session_id),
            self.store.frames_stored_since(session_id, since),
            self.store.summary_count(session_id),
        )

    def _publish_speech(self, session_id: str, watch: _Watch, current: dict[str, Any]) -> None:
        """A ``speech`` event when workers stored soundtrack windows since the last poll."""
        stored = int(current.get("transcribed_windows") or 0) + int(current.get("failed_windows") or 0)
        if stored > watch.windows:
            watch.windows = stored
            self.events.publish(session_id, {"event": "speech", **current})

    async def _poll(self, session_id: str) -> None:
        watch = self._watches.get(session_id)
        if watch is None:
            watch = self._watches[session_id] = _Watch(cursor=await asyncio.to_thread(self.store.clock) - LAG_S)
        current, stored, summaries = await asyncio.to_thread(self._read, session_id, watch.cursor - LAG_S)
        if not current:
            return
        for item in stored:
            frame = item.frame
            if watch.published.get(frame.index) == (frame.description, frame.error):
                continue
            watch.published[frame.index] = (frame.description, frame.error)
            watch.cursor = max(watch.cursor, item.stored_at)
            self.events.publish(
                session_id,
                {
                    "event": "frame",
                    **current,
                    "frames": [{"index": frame.index, "timestamp_s": frame.timestamp_s}],
                    "clip": {"start_s": frame.clip_start_s, "end_s": frame.clip_end_s} if frame.clip else None,
                    "description": frame.description,
                    "frame_error": frame.error,
                },
            )
        self._publish_speech(session_id, watch, current)
        if summaries > watch.summaries:
            watch.summaries = summaries
            self.events.publish(session_id, {"event": "summary", **current, "batch_index": summaries - 1})
        status = current["status"]
        if status != watch.status:
            watch.status = status
            kind = {"processing": "started", "completed": "completed", "failed": "failed"}.get(status)
            if kind is not None:
                self.events.publish(session_id, {"event": kind, **current})
