"""The embedded store: one SQLite file in WAL mode, shared safely by the processes of one machine."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from video.store.base import KEEP_DESCRIPTION, SessionGone, StoreUnavailable
from video.store.migrations import migrations
from video.store.queries import FRAME_COLUMNS, LAST_FRAME_INDEX, LAST_TIME_S, Statements
from video.store.records import (
    INSERT_COLUMNS,
    FrameRecord,
    Moment,
    Session,
    SpeechSegment,
    SpeechWindow,
    SpokenMoment,
    StoredFrame,
    StoredSpeech,
    Summary,
    session_values,
    update_values,
)

SAVE_FRAME = (
    "INSERT INTO frames (session_id, frame_index, timestamp_s, description, error, thumbnail, stored_at, "  # noqa: S608
    "clip_start_s, clip_end_s) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(session_id, frame_index) DO UPDATE SET "
    "timestamp_s=excluded.timestamp_s, description=excluded.description, error=excluded.error, "
    "thumbnail=COALESCE(excluded.thumbnail, frames.thumbnail), stored_at=excluded.stored_at, "
    f"clip_start_s=excluded.clip_start_s, clip_end_s=excluded.clip_end_s {KEEP_DESCRIPTION}"
)
SQL = Statements("?", "((julianday('now') - 2440587.5) * 86400.0)")
BUSY_TIMEOUT_S = 30  # another process's write transaction is waited for this long


def match_expression(terms: list[str]) -> str:
    """An FTS5 query matching any of ``terms`` (quoted, so no word is an operator)."""
    return " OR ".join('"' + t.replace('"', "") + '"' for t in terms)


class SQLiteStore:
    """One SQLite database; every method is a short transaction, safe from any thread and process."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        # Reads have a connection of their own: under WAL they never wait for a writer, this
        # process's (which holds the lock above while SQLite makes it wait) or another's.
        self._reader = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        self._reader.row_factory = sqlite3.Row
        self._read_lock = threading.Lock()
        with self._lock:
            self._wal()
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
            self._index_existing_rows()

    def _wal(self) -> None:
        """Switch to WAL; processes opening a new database together get SQLITE_BUSY here without the
        busy handler's wait, so the switch is retried until ``BUSY_TIMEOUT_S``."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _migrate(self) -> None:
        """Run the migrations not applied yet, each in a transaction that checks again under the
        write lock (processes opening the database together must not both run one)."""
        self._db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT)")
        applied = {r[0] for r in self._db.execute("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations("sqlite"):
            if version in applied:
                continue
            self._db.execute("BEGIN IMMEDIATE")
            try:
                done = self._db.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone()
                if done is None:
                    for statement in _statements(sql):
                        self._db.execute(statement)
                    self._db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, name))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _index_existing_rows(self) -> None:
        """Fill the full-text indexes of a database written before they existed."""
        for table in ("frames", "summaries", "speech"):
            indexed = self._db.execute(f"SELECT COUNT(*) FROM {table}_fts").fetchone()[0]  # noqa: S608
            if not indexed and self._db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():  # noqa: S608
                self._db.execute(f"INSERT INTO {table}_fts({table}_fts) VALUES ('rebuild')")  # noqa: S608

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._db.close()
            self._reader.close()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._read_lock:
            yield self._reader

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                raise StoreUnavailable(f"the video database is busy (waited {BUSY_TIMEOUT_S} s)") from None
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def create_session(self, session: Session) -> None:
        now = time.time()
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO sessions ({INSERT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "  # noqa: S608
                "ON CONFLICT(id) DO NOTHING",
                (*session_values(session), now, now),
            )

    def get_session(self, session_id: str) -> Session | None:
        with self._reading() as db:
            row = db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return _session(row) if row else None

    def list_sessions(self, owner: str | None) -> list[Session]:
        with self._reading() as db:
            rows = db.execute("SELECT * FROM sessions WHERE owner IS ? ORDER BY created_at DESC", (owner,)).fetchall()
        return [_session(row) for row in rows]

    def sessions_with_status(self, *statuses: str) -> list[Session]:
        marks = ",".join("?" * len(statuses))
        with self._reading() as db:
            rows = db.execute(
                f"SELECT * FROM sessions WHERE status IN ({marks}) ORDER BY created_at, rowid",  # noqa: S608
                statuses,
            ).fetchall()
        return [_session(row) for row in rows]

    def update_session(self, session_id: str, **fields: Any) -> None:
        values = update_values(fields)
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self._transaction() as db:
            db.execute(
                f"UPDATE sessions SET {assignments}, updated_at = ? WHERE id = ?",  # noqa: S608
                (*values.values(), time.time(), session_id),
            )

    def delete_session(self, session_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

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
        start, end = clip if clip is not None else (None, None)
        try:
            with self._transaction() as db:
                db.execute(
                    SAVE_FRAME,
                    (session_id, index, timestamp_s, description, error, thumbnail, time.time(), start, end),
                )
        except sqlite3.IntegrityError as exc:
            raise SessionGone(session_id) from exc

    def clock(self) -> float:
        return time.time()

    def frames_stored_since(self, session_id: str, since: float) -> list[StoredFrame]:
        with self._reading() as db:
            rows = db.execute(SQL.frames_stored_since, (session_id, since)).fetchall()
        return [StoredFrame(r[0], FrameRecord(*tuple(r)[1:])) for r in rows]

    def frames(self, session_id: str, first: int = 0, last: int | None = None) -> list[FrameRecord]:
        """Frames ``first``..``last`` (inclusive; all by default) in order."""
        with self._reading() as db:
            rows = db.execute(
                SQL.frames_in_range, (session_id, first, last if last is not None else LAST_FRAME_INDEX)
            ).fetchall()
        return [FrameRecord(*r) for r in rows]

    def described_indices(self, session_id: str, first: int = 0, last: int | None = None) -> set[int]:
        with self._reading() as db:
            rows = db.execute(
                SQL.described_in_range, (session_id, first, last if last is not None else LAST_FRAME_INDEX)
            ).fetchall()
        return {r[0] for r in rows}

    def counts(self, session_id: str) -> tuple[int, int]:
        """(described frames, failed frames)."""
        with self._reading() as db:
            row = db.execute(
                "SELECT COUNT(description), SUM(description IS NULL AND error IS NOT NULL) FROM frames "
                "WHERE session_id = ?",
                (session_id,),
            ).fetchone()
        return int(row[0] or 0), int(row[1] or 0)

    def thumbnail(self, session_id: str, index: int) -> bytes | None:
        with self._reading() as db:
            row = db.execute(SQL.thumbnail, (session_id, index)).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    def save_summary(self, session_id: str, summary: Summary) -> None:
        """Store a batch summary (level 0) or an overview (level 1 and up); a retry replaces it."""
        values = (summary.start_s, summary.end_s, summary.frame_count, summary.summary)
        try:
            self._write_summary(session_id, summary, values)
        except sqlite3.IntegrityError as exc:
            raise SessionGone(session_id) from exc

    def _write_summary(self, session_id: str, summary: Summary, values: tuple[float, float, int, str]) -> None:
        with self._transaction() as db:
            if summary.level == 0:
                db.execute(
                    "INSERT INTO summaries VALUES (?,?,?,?,?,?) ON CONFLICT(session_id, batch_index) DO UPDATE SET "
                    "start_s=excluded.start_s, end_s=excluded.end_s, frame_count=excluded.frame_count, "
                    "summary=excluded.summary",
                    (session_id, summary.batch_index, *values),
                )
            else:
                db.execute(
                    "INSERT OR REPLACE INTO overviews VALUES (?,?,?,?,?,?,?)",
                    (session_id, summary.level, summary.batch_index, *values),
                )

    def overviews(self, session_id: str) -> list[Summary]:
        """Summaries of summaries, by level then position."""
        with self._reading() as db:
            rows = db.execute(SQL.overviews, (session_id,)).fetchall()
        return [Summary(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    def rank_frames(self, session_id: str, terms: list[str], limit: int) -> list[int]:
        """Frame indices of the session best matching any of ``terms`` (BM25), best first."""
        if not terms:
            return []
        query = match_expression(terms)
        with self._reading() as db:
            rows = db.execute(
                "SELECT f.frame_index FROM frames_fts JOIN frames f ON f.rowid = frames_fts.rowid "
                "WHERE frames_fts MATCH ? AND f.session_id = ? ORDER BY bm25(frames_fts) LIMIT ?",
                (query, session_id, limit),
            ).fetchall()
        return [r[0] for r in rows]

    def rank_summaries(self, session_id: str, terms: list[str], limit: int) -> list[int]:
        """Batch indices of the session's summaries best matching any of ``terms`` (BM25), best first."""
        if not terms:
            return []
        query = match_expression(terms)
        with self._reading() as db:
            rows = db.execute(
                "SELECT s.batch_index FROM summaries_fts JOIN summaries s ON s.rowid = summaries_fts.rowid "
                "WHERE summaries_fts MATCH ? AND s.session_id = ? ORDER BY bm25(summaries_fts) LIMIT ?",
                (query, session_id, limit),
            ).fetchall()
        return [r[0] for r in rows]

    def search(self, owner: str | None, terms: list[str], limit: int) -> list[Moment]:
        """The frames of ``owner``'s sessions best matching any of ``terms`` (BM25), best first."""
        if not terms:
            return []
        query = match_expression(terms)
        with self._reading() as db:
            rows = db.execute(
                "SELECT f.session_id, s.filename, f.frame_index, f.timestamp_s, f.description FROM frames_fts "
                "JOIN frames f ON f.rowid = frames_fts.rowid JOIN sessions s ON s.id = f.session_id "
                "WHERE frames_fts MATCH ? AND s.owner IS ? ORDER BY bm25(frames_fts) LIMIT ?",
                (query, owner, limit),
            ).fetchall()
        return [Moment(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def save_embeddings(self, session_id: str, model: str, vectors: dict[int, bytes]) -> None:
        """Store frame embeddings (float32 bytes); a frame deleted meanwhile is skipped."""
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO frame_embeddings SELECT ?, ?, ?, ? "
                "WHERE EXISTS (SELECT 1 FROM frames WHERE session_id = ? AND frame_index = ?)",
                [(session_id, index, model, vector, session_id, index) for index, vector in vectors.items()],
            )

    def embeddings(self, session_ids: list[str], model: str) -> list[tuple[str, int, bytes]]:
        """(session, frame index, float32 vector bytes) of the sessions' embedded frames."""
        marks = ",".join("?" * len(session_ids))
        with self._reading() as db:
            rows = db.execute(
                f"SELECT session_id, frame_index, vector FROM frame_embeddings WHERE model = ? "  # noqa: S608
                f"AND session_id IN ({marks})",
                (model, *session_ids),
            ).fetchall()
        return [(r[0], r[1], bytes(r[2])) for r in rows]

    def frames_without_embedding(self, session_id: str, model: str, limit: int) -> list[FrameRecord]:
        with self._reading() as db:
            rows = db.execute(SQL.frames_without_embedding, (model, session_id, limit)).fetchall()
        return [FrameRecord(*r) for r in rows]

    def summary_count(self, session_id: str) -> int:
        with self._reading() as db:
            row = db.execute(SQL.summary_count, (session_id,)).fetchone()
        return int(row[0])

    def summaries(self, session_id: str) -> list[Summary]:
        with self._reading() as db:
            rows = db.execute(SQL.summaries, (session_id,)).fetchall()
        return [Summary(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def frames_at(self, session_id: str, indices: list[int]) -> list[FrameRecord]:
        """The frames with these indices, in index order."""
        if not indices:
            return []
        marks = ",".join("?" * len(indices))
        with self._reading() as db:
            rows = db.execute(
                f"SELECT {FRAME_COLUMNS} FROM frames WHERE session_id = ? "  # noqa: S608
                f"AND frame_index IN ({marks}) ORDER BY frame_index",
                (session_id, *indices),
            ).fetchall()
        return [FrameRecord(*r) for r in rows]

    def frame_at_time(self, session_id: str, timestamp_s: float) -> int | None:
        """The last frame at or before ``timestamp_s``, else the first one after it."""
        with self._reading() as db:
            row = db.execute(SQL.frame_at_time, (session_id, timestamp_s, timestamp_s)).fetchone()
        return int(row[0]) if row else None

    def save_speech(self, session_id: str, window: SpeechWindow, segments: list[SpeechSegment]) -> bool:
        try:
            with self._transaction() as db:
                if window.error is not None and db.execute(SQL.window_done, (session_id, window.index)).fetchone():
                    return False
                db.execute(SQL.save_window, (session_id, window.index, window.start_s, window.end_s, window.error))
                db.execute(SQL.delete_window_speech, (session_id, window.index))
                db.executemany(
                    SQL.insert_speech,
                    [(session_id, window.index, i, s.start_s, s.end_s, s.text) for i, s in enumerate(segments)],
                )
        except sqlite3.IntegrityError as exc:
            raise SessionGone(session_id) from exc
        return True

    def speech_without_embedding(self, session_id: str, model: str, limit: int) -> list[StoredSpeech]:
        with self._reading() as db:
            rows = db.execute(SQL.speech_without_embedding, (model, session_id, limit)).fetchall()
        return [StoredSpeech(r[0], r[1], SpeechSegment(r[2], r[3], r[4])) for r in rows]

    def save_speech_embeddings(self, session_id: str, model: str, vectors: dict[tuple[int, int], bytes]) -> None:
        """Store speech embeddings (float32 bytes); a segment replaced meanwhile is skipped."""
        with self._transaction() as db:
            db.executemany(
                SQL.save_speech_embedding,
                [(session_id, w, s, model, v, session_id, w, s) for (w, s), v in vectors.items()],
            )

    def speech_embeddings(self, session_ids: list[str], model: str) -> list[tuple[str, tuple[int, int], bytes]]:
        marks = ",".join("?" * len(session_ids))
        with self._reading() as db:
            rows = db.execute(
                f"SELECT session_id, window_index, segment_index, vector FROM speech_embeddings "  # noqa: S608
                f"WHERE model = ? AND session_id IN ({marks})",
                (model, *session_ids),
            ).fetchall()
        return [(r[0], (r[1], r[2]), bytes(r[3])) for r in rows]

    def speech_at(self, session_id: str, keys: list[tuple[int, int]]) -> list[SpeechSegment]:
        with self._reading() as db:
            rows = [db.execute(SQL.speech_at, (session_id, w, s)).fetchone() for w, s in keys]
        return [SpeechSegment(*r) for r in rows if r is not None]

    def speech_windows(self, session_id: str) -> list[SpeechWindow]:
        with self._reading() as db:
            rows = db.execute(SQL.speech_windows, (session_id,)).fetchall()
        return [SpeechWindow(*r) for r in rows]

    def speech(self, session_id: str, start_s: float = 0.0, end_s: float = LAST_TIME_S) -> list[SpeechSegment]:
        with self._reading() as db:
            rows = db.execute(SQL.speech, (session_id, start_s, end_s)).fetchall()
        return [SpeechSegment(*r) for r in rows]

    def rank_speech(self, session_id: str, terms: list[str], limit: int) -> list[SpeechSegment]:
        """The session's speech segments best matching any of ``terms`` (BM25), best first."""
        if not terms:
            return []
        with self._reading() as db:
            rows = db.execute(
                "SELECT s.start_s, s.end_s, s.text FROM speech_fts JOIN speech s ON s.rowid = speech_fts.rowid "
                "WHERE speech_fts MATCH ? AND s.session_id = ? ORDER BY bm25(speech_fts) LIMIT ?",
                (match_expression(terms), session_id, limit),
            ).fetchall()
        return [SpeechSegment(*r) for r in rows]

    def search_speech(self, owner: str | None, terms: list[str], limit: int) -> list[SpokenMoment]:
        """The speech of ``owner``'s sessions best matching any of ``terms`` (BM25), best first."""
        if not terms:
            return []
        with self._reading() as db:
            rows = db.execute(
                "SELECT s.session_id, v.filename, s.start_s, s.end_s, s.text FROM speech_fts "
                "JOIN speech s ON s.rowid = speech_fts.rowid JOIN sessions v ON v.id = s.session_id "
                "WHERE speech_fts MATCH ? AND v.owner IS ? ORDER BY bm25(speech_fts) LIMIT ?",
                (match_expression(terms), owner, limit),
            ).fetchall()
        return [SpokenMoment(*r) for r in rows]


def _session(row: sqlite3.Row) -> Session:
    return Session(
        id=row["id"],
        owner=row["owner"],
        filename=row["filename"],
        video_path=row["video_path"],
        status=row["status"],
        options=json.loads(row["options"]),
        prompt=row["prompt"],
        duration_s=row["duration_s"],
        total_frames=row["total_frames"],
        warnings=json.loads(row["warnings"]),
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        audio=row["audio"],
    )


def _statements(script: str) -> list[str]:
    """The statements of a migration script (triggers' bodies kept whole)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                statements.append(pending.strip())
            pending = ""
    if pending.strip() and not all(p.strip().startswith("--") for p in pending.splitlines() if p.strip()):
        statements.append(pending.strip())
    return statements
