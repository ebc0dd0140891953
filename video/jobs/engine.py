"""The seam between the API and whatever runs analysis jobs: in-process, or Temporal workers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from video.clips import MAX_CLIP_FRAMES, ClipPlan
from video.jobs.events import EventHub
from video.jobs.speech import speech_progress
from video.metrics import VideoMetrics
from video.sampling import SampledFrame
from video.store import Session, Store


@dataclass
class JobSettings:
    max_concurrency: int = 16  # frames in flight across every running job (of this process)
    max_jobs: int = 2  # jobs running at once; the others wait as 'queued', oldest first
    frames_per_request: int = 1
    summary_batch_size: int = 20
    max_video_bytes: int | None = None
    max_duration_s: float | None = None
    max_video_pixels: int | None = None


class JobEngine(Protocol):
    """Starts, cancels and resumes jobs, and reports their progress; state lives in the store."""

    events: EventHub
    metrics: VideoMetrics

    async def start(self, session_id: str) -> None:
        """Run (or queue) the job of a session already in the store; idempotent."""
        ...

    async def cancel(self, session_id: str) -> None:
        """Stop the session's job so that nothing more is spent on it."""
        ...

    async def resume_all(self) -> int:
        """Make sure every unfinished job runs again after a restart; how many were resumed."""
        ...

    def progress(self, session_id: str) -> dict[str, Any]:
        """The session's status and frame counts (empty when there is no such session)."""
        ...

    async def shutdown(self) -> None:
        """Stop this process's part; unfinished jobs stay in the store (or in Temporal)."""
        ...


def save_frames(
    store: Store,
    session_id: str,
    batch: list[SampledFrame],
    clip: tuple[float, float] | None,
    description: str | None,
    error: str | None,
) -> None:
    """Store one request's result for each of its frames, with the clip they formed (blocking:
    call it in a thread)."""
    for frame in batch:
        store.save_frame(session_id, frame.index, frame.timestamp_s, description, error, frame.thumbnail or None, clip)


def clip_plan(session: Session) -> ClipPlan | None:
    """How the session's frames are cut into clips, when its frames go to the model as video."""
    options = session.options
    if options.get("clip_mode") != "video":
        return None
    return ClipPlan.for_job(
        float(options.get("chunk_seconds", 10.0)),
        float(options.get("fps", 1.0)),
        session.duration_s,
        int(options.get("max_clip_frames", MAX_CLIP_FRAMES)),
    )


def progress(store: Store, session_id: str, queue_position: int | None = None) -> dict[str, Any]:
    """What ``/status`` reports, read from the store (so any process's work shows)."""
    session = store.get_session(session_id)
    if session is None:
        return {}
    described, failed = store.counts(session_id)
    done = described + failed
    total = max(session.total_frames, 1)
    report: dict[str, Any] = {
        "session_id": session_id,
        "status": session.status,
        "processed_frames": described,
        "failed_frames": failed,
        "total_frames": session.total_frames,
        "progress_percentage": round(min(100.0, 100.0 * done / total), 1) if session.status != "completed" else 100.0,
        "prompt": session.prompt,
        "warnings": session.warnings,
        "error": session.error,
        "clip_mode": session.options.get("clip_mode", "images"),
        "audio": session.audio,
    }
    if session.audio in ("transcribing", "done"):
        report.update(speech_progress(store.speech_windows(session_id), session.duration_s, session.audio == "done"))
    if queue_position is not None:
        report["queue_position"] = queue_position
    return report
