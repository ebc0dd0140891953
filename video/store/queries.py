"""The statements both stores run word for word, written once with ``{p}`` for a parameter and
``{now}`` for the store's clock: each store formats them with its own (SQLite ``?``, PostgreSQL ``%s``). What the
databases do differently (full-text search, upserts' clocks, JSON columns) stays in each store.
"""

from __future__ import annotations

# frame_index is a 32-bit INTEGER in PostgreSQL: "up to the last frame" is this bound in both.
LAST_FRAME_INDEX = 2**31 - 1

FRAME_COLUMNS = "frame_index, timestamp_s, description, error, clip_start_s, clip_end_s"
FRAMES_IN_RANGE = (
    "SELECT " + FRAME_COLUMNS + " FROM frames WHERE session_id = {p} "  # noqa: S608
    "AND frame_index >= {p} AND frame_index <= {p} ORDER BY frame_index"
)
DESCRIBED_IN_RANGE = (
    "SELECT frame_index FROM frames WHERE session_id = {p} AND description IS NOT NULL "
    "AND frame_index >= {p} AND frame_index <= {p}"
)
FRAMES_STORED_SINCE = (
    "SELECT stored_at, " + FRAME_COLUMNS + " FROM frames "  # noqa: S608
    "WHERE session_id = {p} AND stored_at >= {p} ORDER BY stored_at"
)
THUMBNAIL = "SELECT thumbnail FROM frames WHERE session_id = {p} AND frame_index = {p}"
SUMMARY_COUNT = "SELECT COUNT(*) FROM summaries WHERE session_id = {p}"
SUMMARIES = (
    "SELECT batch_index, start_s, end_s, frame_count, summary FROM summaries WHERE session_id = {p} "
    "ORDER BY batch_index"
)
OVERVIEWS = (
    "SELECT node_index, start_s, end_s, frame_count, summary, level FROM overviews "
    "WHERE session_id = {p} ORDER BY level, node_index"
)
FRAMES_WITHOUT_EMBEDDING = (
    "SELECT f.frame_index, f.timestamp_s, f.description, f.error, f.clip_start_s, f.clip_end_s FROM frames f "
    "LEFT JOIN frame_embeddings e ON e.session_id = f.session_id AND e.frame_index = f.frame_index "
    "AND e.model = {p} WHERE f.session_id = {p} AND f.description IS NOT NULL AND e.vector IS NULL "
    "ORDER BY f.frame_index LIMIT {p}"
)

# The last frame at or before a time, else the first one after it.
FRAME_AT_TIME = (
    "SELECT frame_index FROM frames WHERE session_id = {p} ORDER BY (timestamp_s > {p}), abs(timestamp_s - {p}) LIMIT 1"
)
SPEECH_WINDOWS = (
    "SELECT window_index, start_s, end_s, error FROM speech_windows WHERE session_id = {p} ORDER BY window_index"
)
SPEECH = (
    "SELECT start_s, end_s, text FROM speech WHERE session_id = {p} AND start_s >= {p} AND start_s < {p} "
    "ORDER BY start_s, window_index, segment_index"
)
LAST_TIME_S = 1e15  # "up to the end" for time ranges
# A window once transcribed is kept: a later failure of the same window (a retried activity) changes nothing.
WINDOW_DONE = "SELECT 1 FROM speech_windows WHERE session_id = {p} AND window_index = {p} AND error IS NULL"
DELETE_WINDOW_SPEECH = "DELETE FROM speech WHERE session_id = {p} AND window_index = {p}"
INSERT_SPEECH = (
    "INSERT INTO speech (session_id, window_index, segment_index, start_s, end_s, text) "
    "VALUES ({p},{p},{p},{p},{p},{p})"
)
SAVE_WINDOW = (
    "INSERT INTO speech_windows (session_id, window_index, start_s, end_s, error, stored_at) "
    "VALUES ({p},{p},{p},{p},{p},{now}) "
    "ON CONFLICT (session_id, window_index) DO UPDATE SET start_s = excluded.start_s, end_s = excluded.end_s, "
    "error = excluded.error, stored_at = excluded.stored_at"
)

# A speech segment's key is (window_index, segment_index); its vector is stored per embedding model.
SPEECH_WITHOUT_EMBEDDING = (
    "SELECT s.window_index, s.segment_index, s.start_s, s.end_s, s.text FROM speech s "
    "LEFT JOIN speech_embeddings e ON e.session_id = s.session_id AND e.window_index = s.window_index "
    "AND e.segment_index = s.segment_index AND e.model = {p} WHERE s.session_id = {p} AND e.vector IS NULL "
    "ORDER BY s.window_index, s.segment_index LIMIT {p}"
)
SAVE_SPEECH_EMBEDDING = (
    "INSERT INTO speech_embeddings SELECT {p}, {p}, {p}, {p}, {p} WHERE EXISTS (SELECT 1 FROM speech "
    "WHERE session_id = {p} AND window_index = {p} AND segment_index = {p}) "
    "ON CONFLICT (session_id, window_index, segment_index) DO UPDATE SET model = excluded.model, "
    "vector = excluded.vector"
)
SPEECH_AT = (
    "SELECT start_s, end_s, text FROM speech WHERE session_id = {p} AND window_index = {p} AND segment_index = {p}"
)


class Statements:
    """The shared statements with ``placeholder`` for each parameter."""

    def __init__(self, placeholder: str, now: str) -> None:
        def fill(sql: str) -> str:
            return sql.format(p=placeholder, now=now)

        self.frames_in_range = fill(FRAMES_IN_RANGE)
        self.described_in_range = fill(DESCRIBED_IN_RANGE)
        self.frames_stored_since = fill(FRAMES_STORED_SINCE)
        self.thumbnail = fill(THUMBNAIL)
        self.summary_count = fill(SUMMARY_COUNT)
        self.summaries = fill(SUMMARIES)
        self.overviews = fill(OVERVIEWS)
        self.frames_without_embedding = fill(FRAMES_WITHOUT_EMBEDDING)
        self.frame_at_time = fill(FRAME_AT_TIME)
        self.speech_windows = fill(SPEECH_WINDOWS)
        self.speech = fill(SPEECH)
        self.window_done = fill(WINDOW_DONE)
        self.delete_window_speech = fill(DELETE_WINDOW_SPEECH)
        self.insert_speech = fill(INSERT_SPEECH)
        self.save_window = fill(SAVE_WINDOW)
        self.speech_without_embedding = fill(SPEECH_WITHOUT_EMBEDDING)
        self.save_speech_embedding = fill(SAVE_SPEECH_EMBEDDING)
        self.speech_at = fill(SPEECH_AT)
