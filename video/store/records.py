"""What the store keeps: sessions, frame descriptions, summaries, search hits."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("queued", "processing", "completed", "failed")
UPDATABLE = frozenset({"status", "total_frames", "warnings", "error", "duration_s"})


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


@dataclass(frozen=True)
class FrameRecord:
    index: int
    timestamp_s: float
    description: str | None
    error: str | None


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
    """A session's columns from ``id`` to ``error`` as both stores write them (JSON for lists and maps)."""
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
    )


def update_values(fields: dict[str, Any]) -> dict[str, Any]:
    """The columns an update may set, as stored; ValueError for any other."""
    unknown = set(fields) - UPDATABLE
    if unknown:
        raise ValueError(f"cannot update {unknown}")
    return {k: json.dumps(v) if k == "warnings" else v for k, v in fields.items()}
