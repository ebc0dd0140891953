"""The store's interface: one set of short transactions, implemented on SQLite and PostgreSQL.

Every write is idempotent per key (session; session and frame; session and batch), so a job
retried after a crash, on this process or another, stores each result once.
"""

from __future__ import annotations

from typing import Any, Protocol

from video.store.queries import LAST_TIME_S
from video.store.records import (
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

# The condition of both stores' frame upsert: a description once stored is never replaced by a
# failure (at-least-once work: a retried segment whose later attempt got a 429 or a timeout).
KEEP_DESCRIPTION = "WHERE excluded.description IS NOT NULL OR frames.description IS NULL"


class StoreUnavailable(Exception):
    """The database cannot be reached or opened; the message says which and why."""


class SessionGone(Exception):
    """The session was deleted while its job was still writing to it."""


class Store(Protocol):
    def close(self) -> None: ...

    def create_session(self, session: Session) -> None: ...

    def get_session(self, session_id: str) -> Session | None: ...

    def list_sessions(self, owner: str | None) -> list[Session]: ...

    def sessions_with_status(self, *statuses: str) -> list[Session]: ...

    def update_session(self, session_id: str, **fields: Any) -> None: ...

    def delete_session(self, session_id: str) -> None: ...

    def save_frame(
        self,
        session_id: str,
        index: int,
        timestamp_s: float,
        description: str | None,
        error: str | None = None,
        thumbnail: bytes | None = None,
        clip: tuple[float, float] | None = None,
    ) -> None:
        """Store one frame's result (``clip``: the time range of the clip it was described in),
        replacing an earlier one unless that was a description and this is a failure (a description
        once stored is kept); ``SessionGone`` once the session is deleted."""
        ...

    def frames(self, session_id: str, first: int = 0, last: int | None = None) -> list[FrameRecord]: ...

    def frames_stored_since(self, session_id: str, since: float) -> list[StoredFrame]:
        """Frames written at or after ``since`` (the store's clock), oldest write first."""
        ...

    def clock(self) -> float:
        """The store's current time, the clock ``frames_stored_since`` compares with."""
        ...

    def described_indices(self, session_id: str, first: int = 0, last: int | None = None) -> set[int]: ...

    def counts(self, session_id: str) -> tuple[int, int]:
        """(described frames, failed frames)."""
        ...

    def thumbnail(self, session_id: str, index: int) -> bytes | None: ...

    def save_summary(self, session_id: str, summary: Summary) -> None: ...

    def summaries(self, session_id: str) -> list[Summary]: ...

    def summary_count(self, session_id: str) -> int:
        """How many batch summaries the session has (without reading them)."""
        ...

    def overviews(self, session_id: str) -> list[Summary]: ...

    def rank_frames(self, session_id: str, terms: list[str], limit: int) -> list[int]:
        """Frame indices best matching any of ``terms`` (BM25 or the backend's ranking), best first."""
        ...

    def rank_summaries(self, session_id: str, terms: list[str], limit: int) -> list[int]: ...

    def search(self, owner: str | None, terms: list[str], limit: int) -> list[Moment]: ...

    def save_embeddings(self, session_id: str, model: str, vectors: dict[int, bytes]) -> None: ...

    def embeddings(self, session_ids: list[str], model: str) -> list[tuple[str, int, bytes]]: ...

    def frames_without_embedding(self, session_id: str, model: str, limit: int) -> list[FrameRecord]: ...

    def frames_at(self, session_id: str, indices: list[int]) -> list[FrameRecord]: ...

    def frame_at_time(self, session_id: str, timestamp_s: float) -> int | None:
        """The last frame at or before ``timestamp_s``, else the first one after it."""
        ...

    def save_speech(self, session_id: str, window: SpeechWindow, segments: list[SpeechSegment]) -> bool:
        """Store a transcription window's result and its segments, replacing an earlier result unless
        that was a transcript and this a failure (False then: it is kept); ``SessionGone`` once deleted."""
        ...

    def speech_windows(self, session_id: str) -> list[SpeechWindow]: ...

    def speech_without_embedding(self, session_id: str, model: str, limit: int) -> list[StoredSpeech]: ...

    def save_speech_embeddings(self, session_id: str, model: str, vectors: dict[tuple[int, int], bytes]) -> None: ...

    def speech_embeddings(self, session_ids: list[str], model: str) -> list[tuple[str, tuple[int, int], bytes]]:
        """(session, (window, segment), float32 vector bytes) of the sessions' embedded speech."""
        ...

    def speech_at(self, session_id: str, keys: list[tuple[int, int]]) -> list[SpeechSegment]:
        """The segments with these (window, segment) keys, in the keys' order (missing ones left out)."""
        ...

    def speech(self, session_id: str, start_s: float = 0.0, end_s: float = LAST_TIME_S) -> list[SpeechSegment]:
        """The stored speech segments starting in ``start_s``..``end_s`` (all by default), in time order."""
        ...

    def rank_speech(self, session_id: str, terms: list[str], limit: int) -> list[SpeechSegment]: ...

    def search_speech(self, owner: str | None, terms: list[str], limit: int) -> list[SpokenMoment]: ...
