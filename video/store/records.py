"""What the store keeps: sessions, frame descriptions, summaries, search hits."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("queued", "processing", "completed", "failed")
UPDATABLE = frozenset({"status", "total_frames", "warnings", "error", "duration_s", "audio"})
AUDIO_STATES = ("none", "not transcribed", "transcribing", "done")
# The columns a new session is written with, in ``session_values``' order (then created_at, updated_at).
INSERT_COLUMNS = (
    "id, owner, filename, video_path, status, options, prompt, duration_s, total_frames, warnings, error, audio, "
    "created_at, updated_at"
)


@dataclass
class Session:
    id: str
    owner: str | None
    filename: str
    video_path: str
    status: str
    options: dict[str, Any]
    prompt: str | None
    duration_s: float
    total_frames: int
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    audio: str = "none"  # the soundtrack: one of AUDIO_STATES


@dataclass(frozen=True)
class FrameRecord:
    index: int
    timestamp_s: float
    description: str | None
    error: str | None
    clip_start_s: float | None = None  # described as part of a clip: its time range
    clip_end_s: float | None = None

    @property
    def clip(self) -> tuple[float, float] | None:
        if self.clip_start_s is None or self.clip_end_s is None:
            return None
        return self.clip_start_s, self.clip_end_s


@dataclass(frozen=True)
class SpeechSegment:
    """What was said from ``start_s`` to ``end_s`` (seconds from the video's start)."""

    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class StoredSpeech:
    """A speech segment with its key in the store: (window, position in the window)."""

    window_index: int
    segment_index: int
    segment: SpeechSegment


@dataclass(frozen=True)
class SpeechWindow:
    """A stretch of the soundtrack transcribed in one request; ``error`` when it failed."""

    index: int
    start_s: float
    end_s: float
    error: str | None = None


@dataclass(frozen=True)
class SpokenMoment:
    """A speech segment found by a search, with the session it belongs to."""

    session_id: str
    filename: str
    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class Summary:
    batch_index: int
    start_s: float
    end_s: float
    frame_count: int
    summary: str
    level: int = 0  # 0: a batch of frames; n: a group of level n-1 summaries


@dataclass(frozen=True)
class Moment:
    """A frame found by a search, with the session it belongs to."""

    session_id: str
    filename: str
    index: int
    timestamp_s: float
    description: str


@dataclass(frozen=True)
class StoredFrame:
    """A frame with the time it was last written (the store's clock), for progress streams."""

    stored_at: float
    frame: FrameRecord


def session_values(session: Session) -> tuple[Any, ...]:
    """A session's columns from ``id`` to ``audio`` (``INSERT_COLUMNS``) as both stores write them (JSON for
    lists and maps)."""
    return (
        session.id,
        session.owner,
        session.filename,
        session.video_path,
        session.status,
        json.dumps(session.options),
        session.prompt,
        session.duration_s,
        session.total_frames,
        json.dumps(session.warnings),
        session.error,
        session.audio,
    )


def update_values(fields: dict[str, Any]) -> dict[str, Any]:
    """The columns an update may set, as stored; ValueError for any other."""
    unknown = set(fields) - UPDATABLE
    if unknown:
        raise ValueError(f"cannot update {unknown}")
    return {k: json.dumps(v) if k == "warnings" else v for k, v in fields.items()}
