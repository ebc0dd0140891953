"""Durable storage of sessions, frame descriptions, summaries and job state.

SQLite (WAL) under the data directory is the embedded default; ``postgresql://`` URLs select
PostgreSQL, shared by every API replica and worker. Both run the same numbered migrations.
"""

from __future__ import annotations

from pathlib import Path

from video.store.base import SessionGone, Store, StoreUnavailable
from video.store.records import (
    AUDIO_STATES,
    STATUSES,
    FrameRecord,
    Moment,
    Session,
    SpeechSegment,
    SpeechWindow,
    SpokenMoment,
    StoredFrame,
    StoredSpeech,
    Summary,
)
from video.store.sqlite import SQLiteStore

__all__ = [
    "AUDIO_STATES",
    "STATUSES",
    "FrameRecord",
    "Moment",
    "SQLiteStore",
    "Session",
    "SessionGone",
    "SpeechSegment",
    "SpeechWindow",
    "SpokenMoment",
    "Store",
    "StoreUnavailable",
    "StoredFrame",
    "StoredSpeech",
    "Summary",
    "open_store",
]


def open_store(database_url: str | None, data_dir: Path) -> Store:
    """PostgreSQL for a ``postgresql://`` (or ``postgres://``) URL, else SQLite (``sqlite:///path``
    or, by default, ``video.db`` under ``data_dir``)."""
    if database_url and database_url.startswith(("postgresql://", "postgres://")):
        from video.store.postgres import PostgresStore

        return PostgresStore(database_url)
    if database_url and database_url.startswith("sqlite:///"):
        return SQLiteStore(Path(database_url.removeprefix("sqlite:///")))
    if database_url:
        raise ValueError("VIDEO_DATABASE_URL must start with postgresql:// or sqlite:///")
    return SQLiteStore(data_dir / "video.db")
