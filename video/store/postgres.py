"""The shared store: PostgreSQL, for API replicas and workers on any number of machines."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import TupleRow

from common.postgres import unreachable
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

log = logging.getLogger("video.store")
T = TypeVar("T")
Connection = psycopg.Connection[TupleRow]
CONNECT_TIMEOUT_S = 5
MIGRATION_LOCK = 0x76696465  # one process migrates at a time
NOW = "extract(epoch from clock_timestamp())"
SQL = Statements("%s", NOW)
# In the order of Session's fields.
SESSION_COLUMNS = (
    "id, owner, filename, video_path, status, options, prompt, duration_s, total_frames, warnings, error, "
    "created_at, updated_at, audio"
)


def ts_query(terms: list[str]) -> str:
    """A tsquery matching any of ``terms`` (each quoted, so no word is an operator)."""
    return " | ".join("'" + t.replace("'", "").replace("\\", "") + "'" for t in terms)


class PostgresStore:
    """One connection per process, used by one thread at a time; reconnects once the server is back."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        try:
            with self._lock:
                self._migrate(self._connect())
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(unreachable(url, exc)) from None

    def _connect(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        return self._conn

    def _run(self, operation: Callable[[Connection], T]) -> T:
        """Run ``operation`` (idempotent); a connection lost on the way is reopened and it runs again
        once. StoreUnavailable while the server cannot be reached (it restarts, it is down)."""
        with self._lock:
            try:
                try:
                    return operation(self._connect())
                except psycopg.OperationalError:
                    if self._conn is not None and not self._conn.broken and not self._conn.closed:
                        raise
                    self._conn = None
                    return operation(self._connect())
            except psycopg.OperationalError as exc:
                self._conn = None
                log.warning("PostgreSQL cannot be reached: %s", type(exc).__name__)
                raise StoreUnavailable("the video database cannot be reached") from None

    def _migrate(self, conn: Connection) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT)")
            applied = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, name, sql in migrations("postgres"):
                if version not in applied:
                    conn.execute(sql.encode())
                    conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (version, name))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()

    def create_session(self, session: Session) -> None:
        def insert(conn: Connection) -> None:
            conn.execute(
                f"INSERT INTO sessions ({INSERT_COLUMNS}) VALUES "  # noqa: S608
                f"(%s,%s,%s,%s,%s,%s::jsonb,%s,%s,%s,%s::jsonb,%s,%s,{NOW},{NOW}) ON CONFLICT (id) DO NOTHING",
                session_values(session),
            )

        self._run(insert)

    def _sessions(self, where: str, params: tuple[Any, ...], order: str) -> list[Session]:
        sql = f"SELECT {SESSION_COLUMNS} FROM sessions WHERE {where} ORDER BY {order}"  # noqa: S608
        rows = self._run(lambda conn: conn.execute(sql, params).fetchall())
        return [_session(row) for row in rows]

    def get_session(self, session_id: str) -> Session | None:
        found = self._sessions("id = %s", (session_id,), "id")
        return found[0] if found else None

    def list_sessions(self, owner: str | None) -> list[Session]:
        return self._sessions("owner IS NOT DISTINCT FROM %s", (owner,), "created_at DESC")

    def sessions_with_status(self, *statuses: str) -> list[Session]:
        return self._sessions("status = ANY(%s)", (list(statuses),), "created_at, seq")

    def update_session(self, session_id: str, **fields: Any) -> None:
        values = update_values(fields)
        assignments = ", ".join(f"{k} = %s::jsonb" if k == "warnings" else f"{k} = %s" for k in values)
        sql = f"UPDATE sessions SET {assignments}, updated_at = {NOW} WHERE id = %s"  # noqa: S608
        self._run(lambda conn: conn.execute(sql, (*values.values(), session_id)))

    def delete_session(self, session_id: str) -> None:
        self._run(lambda conn: conn.execute("DELETE FROM sessions WHERE id = %s", (session_id,)))

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
        sql = (
            "INSERT INTO frames (session_id, frame_index, timestamp_s, description, error, thumbnail, clip_start_s, "  # noqa: S608
            f"clip_end_s, stored_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,{NOW}) ON CONFLICT (session_id, frame_index) "
            "DO UPDATE SET timestamp_s = excluded.timestamp_s, description = excluded.description, "
            "error = excluded.error, thumbnail = COALESCE(excluded.thumbnail, frames.thumbnail), "
            "clip_start_s = excluded.clip_start_s, clip_end_s = excluded.clip_end_s, stored_at = excluded.stored_at "
            + KEEP_DESCRIPTION
        )
        start, end = clip if clip is not None else (None, None)
        values = (session_id, index, timestamp_s, description, error, thumbnail, start, end)
        try:
            self._run(lambda conn: conn.execute(sql, values))
        except pg_errors.ForeignKeyViolation as exc:
            raise SessionGone(session_id) from exc

    def clock(self) -> float:
        row = self._run(lambda conn: conn.execute(f"SELECT {NOW}").fetchone())
        assert row is not None
        return float(row[0])

    def frames_stored_since(self, session_id: str, since: float) -> list[StoredFrame]:
        rows = self._run(lambda conn: conn.execute(SQL.frames_stored_since, (session_id, since)).fetchall())
        return [StoredFrame(r[0], FrameRecord(*r[1:])) for r in rows]

    def frames(self, session_id: str, first: int = 0, last: int | None = None) -> list[FrameRecord]:
        rows = self._run(
            lambda conn: conn.execute(
                SQL.frames_in_range,
                (session_id, first, last if last is not None else LAST_FRAME_INDEX),
            ).fetchall()
        )
        return [FrameRecord(*r) for r in rows]

    def described_indices(self, session_id: str, first: int = 0, last: int | None = None) -> set[int]:
        rows = self._run(
            lambda conn: conn.execute(
                SQL.described_in_range,
                (session_id, first, last if last is not None else LAST_FRAME_INDEX),
            ).fetchall()
        )
        return {r[0] for r in rows}

    def counts(self, session_id: str) -> tuple[int, int]:
        row = self._run(
            lambda conn: conn.execute(
                "SELECT COUNT(description), COUNT(*) FILTER (WHERE description IS NULL AND error IS NOT NULL) "
                "FROM frames WHERE session_id = %s",
                (session_id,),
            ).fetchone()
        )
        assert row is not None
        return int(row[0]), int(row[1])

    def thumbnail(self, session_id: str, index: int) -> bytes | None:
        row = self._run(lambda conn: conn.execute(SQL.thumbnail, (session_id, index)).fetchone())
        return bytes(row[0]) if row and row[0] is not None else None

    def save_summary(self, session_id: str, summary: Summary) -> None:
        """Store a batch summary (level 0) or an overview (level 1 and up); a retry replaces it."""
        values = (summary.start_s, summary.end_s, summary.frame_count, summary.summary)
        if summary.level == 0:
            sql = (
                "INSERT INTO summaries (session_id, batch_index, start_s, end_s, frame_count, summary) "
                "VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (session_id, batch_index) DO UPDATE SET "
                "start_s = excluded.start_s, end_s = excluded.end_s, frame_count = excluded.frame_count, "
                "summary = excluded.summary"
            )
            params: tuple[Any, ...] = (session_id, summary.batch_index, *values)
        else:
            sql = (
                "INSERT INTO overviews VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (session_id, level, node_index) "
                "DO UPDATE SET start_s = excluded.start_s, end_s = excluded.end_s, "
                "frame_count = excluded.frame_count, summary = excluded.summary"
            )
            params = (session_id, summary.level, summary.batch_index, *values)
        try:
            self._run(lambda conn: conn.execute(sql, params))
        except pg_errors.ForeignKeyViolation as exc:
            raise SessionGone(session_id) from exc

    def summary_count(self, session_id: str) -> int:
        row = self._run(lambda conn: conn.execute(SQL.summary_count, (session_id,)).fetchone())
        assert row is not None
        return int(row[0])

    def summaries(self, session_id: str) -> list[Summary]:
        rows = self._run(
            lambda conn: conn.execute(
                SQL.summaries,
                (session_id,),
            ).fetchall()
        )
        return [Summary(*r) for r in rows]

    def overviews(self, session_id: str) -> list[Summary]:
        rows = self._run(
            lambda conn: conn.execute(
                SQL.overviews,
                (session_id,),
            ).fetchall()
        )
        return [Summary(*r) for r in rows]

    def rank_frames(self, session_id: str, terms: list[str], limit: int) -> list[int]:
        if not terms:
            return []
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT frame_index FROM frames, to_tsquery('english', %s) q WHERE session_id = %s "
                "AND search @@ q ORDER BY ts_rank_cd(search, q) DESC, frame_index LIMIT %s",
                (ts_query(terms), session_id, limit),
            ).fetchall()
        )
        return [r[0] for r in rows]

    def rank_summaries(self, session_id: str, terms: list[str], limit: int) -> list[int]:
        if not terms:
            return []
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT batch_index FROM summaries, to_tsquery('english', %s) q WHERE session_id = %s "
                "AND search @@ q ORDER BY ts_rank_cd(search, q) DESC, batch_index LIMIT %s",
                (ts_query(terms), session_id, limit),
            ).fetchall()
        )
        return [r[0] for r in rows]

    def search(self, owner: str | None, terms: list[str], limit: int) -> list[Moment]:
        if not terms:
            return []
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT f.session_id, s.filename, f.frame_index, f.timestamp_s, f.description "
                "FROM frames f JOIN sessions s ON s.id = f.session_id, to_tsquery('english', %s) q "
                "WHERE f.search @@ q AND s.owner IS NOT DISTINCT FROM %s "
                "ORDER BY ts_rank_cd(f.search, q) DESC LIMIT %s",
                (ts_query(terms), owner, limit),
            ).fetchall()
        )
        return [Moment(*r) for r in rows]

    def save_embeddings(self, session_id: str, model: str, vectors: dict[int, bytes]) -> None:
        """Store frame embeddings (float32 bytes); a frame deleted meanwhile is skipped."""

        def insert(conn: Connection) -> None:
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO frame_embeddings SELECT %s, %s, %s, %s "
                    "WHERE EXISTS (SELECT 1 FROM frames WHERE session_id = %s AND frame_index = %s) "
                    "ON CONFLICT (session_id, frame_index) DO UPDATE SET model = excluded.model, "
                    "vector = excluded.vector",
                    [(session_id, index, model, vector, session_id, index) for index, vector in vectors.items()],
                )

        self._run(insert)

    def embeddings(self, session_ids: list[str], model: str) -> list[tuple[str, int, bytes]]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT session_id, frame_index, vector FROM frame_embeddings WHERE model = %s "
                "AND session_id = ANY(%s)",
                (model, session_ids),
            ).fetchall()
        )
        return [(r[0], r[1], bytes(r[2])) for r in rows]

    def frames_without_embedding(self, session_id: str, model: str, limit: int) -> list[FrameRecord]:
        rows = self._run(
            lambda conn: conn.execute(
                SQL.frames_without_embedding,
                (model, session_id, limit),
            ).fetchall()
        )
        return [FrameRecord(*r) for r in rows]

    def frames_at(self, session_id: str, indices: list[int]) -> list[FrameRecord]:
        if not indices:
            return []
        rows = self._run(
            lambda conn: conn.execute(
                f"SELECT {FRAME_COLUMNS} FROM frames WHERE session_id = %s "  # noqa: S608
                "AND frame_index = ANY(%s) ORDER BY frame_index",
                (session_id, indices),
            ).fetchall()
        )
        return [FrameRecord(*r) for r in rows]

    def frame_at_time(self, session_id: str, timestamp_s: float) -> int | None:
        """The last frame at or before ``timestamp_s``, else the first one after it."""
        row = self._run(lambda conn: conn.execute(SQL.frame_at_time, (session_id, timestamp_s, timestamp_s)).fetchone())
        return int(row[0]) if row else None

    def save_speech(self, session_id: str, window: SpeechWindow, segments: list[SpeechSegment]) -> bool:
        def write(conn: Connection) -> bool:
            with conn.transaction():
                if window.error is not None and conn.execute(SQL.window_done, (session_id, window.index)).fetchone():
                    return False
                conn.execute(SQL.save_window, (session_id, window.index, window.start_s, window.end_s, window.error))
                conn.execute(SQL.delete_window_speech, (session_id, window.index))
                with conn.cursor() as cursor:
                    cursor.executemany(
                        SQL.insert_speech,
                        [(session_id, window.index, i, s.start_s, s.end_s, s.text) for i, s in enumerate(segments)],
                    )
            return True

        try:
            return self._run(write)
        except pg_errors.ForeignKeyViolation as exc:
            raise SessionGone(session_id) from exc

    def speech_without_embedding(self, session_id: str, model: str, limit: int) -> list[StoredSpeech]:
        rows = self._run(lambda conn: conn.execute(SQL.speech_without_embedding, (model, session_id, limit)).fetchall())
        return [StoredSpeech(r[0], r[1], SpeechSegment(r[2], r[3], r[4])) for r in rows]

    def save_speech_embeddings(self, session_id: str, model: str, vectors: dict[tuple[int, int], bytes]) -> None:
        """Store speech embeddings (float32 bytes); a segment replaced meanwhile is skipped."""

        def insert(conn: Connection) -> None:
            with conn.cursor() as cursor:
                cursor.executemany(
                    SQL.save_speech_embedding,
                    [(session_id, w, s, model, v, session_id, w, s) for (w, s), v in vectors.items()],
                )

        self._run(insert)

    def speech_embeddings(self, session_ids: list[str], model: str) -> list[tuple[str, tuple[int, int], bytes]]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT session_id, window_index, segment_index, vector FROM speech_embeddings "
                "WHERE model = %s AND session_id = ANY(%s)",
                (model, session_ids),
            ).fetchall()
        )
        return [(r[0], (r[1], r[2]), bytes(r[3])) for r in rows]

    def speech_at(self, session_id: str, keys: list[tuple[int, int]]) -> list[SpeechSegment]:
        def read(conn: Connection) -> list[SpeechSegment]:
            rows = [conn.execute(SQL.speech_at, (session_id, w, s)).fetchone() for w, s in keys]
            return [SpeechSegment(*r) for r in rows if r is not None]

        return self._run(read)

    def speech_windows(self, session_id: str) -> list[SpeechWindow]:
        rows = self._run(lambda conn: conn.execute(SQL.speech_windows, (session_id,)).fetchall())
        return [SpeechWindow(*r) for r in rows]

    def speech(self, session_id: str, start_s: float = 0.0, end_s: float = LAST_TIME_S) -> list[SpeechSegment]:
        rows = self._run(lambda conn: conn.execute(SQL.speech, (session_id, start_s, end_s)).fetchall())
        return [SpeechSegment(*r) for r in rows]

    def rank_speech(self, session_id: str, terms: list[str], limit: int) -> list[SpeechSegment]:
        if not terms:
            return []
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT start_s, end_s, text FROM speech, to_tsquery('english', %s) q WHERE session_id = %s "
                "AND search @@ q ORDER BY ts_rank_cd(search, q) DESC, start_s LIMIT %s",
                (ts_query(terms), session_id, limit),
            ).fetchall()
        )
        return [SpeechSegment(*r) for r in rows]

    def search_speech(self, owner: str | None, terms: list[str], limit: int) -> list[SpokenMoment]:
        if not terms:
            return []
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT s.session_id, v.filename, s.start_s, s.end_s, s.text "
                "FROM speech s JOIN sessions v ON v.id = s.session_id, to_tsquery('english', %s) q "
                "WHERE s.search @@ q AND v.owner IS NOT DISTINCT FROM %s "
                "ORDER BY ts_rank_cd(s.search, q) DESC LIMIT %s",
                (ts_query(terms), owner, limit),
            ).fetchall()
        )
        return [SpokenMoment(*r) for r in rows]


def _session(row: tuple[Any, ...]) -> Session:
    return Session(*row)
