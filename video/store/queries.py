"""The statements both stores run word for word, written once with ``{p}`` for a parameter:
each store formats them with its own placeholder (SQLite ``?``, PostgreSQL ``%s``). What the
databases do differently (full-text search, upserts' clocks, JSON columns) stays in each store.
"""

from __future__ import annotations

# frame_index is a 32-bit INTEGER in PostgreSQL: "up to the last frame" is this bound in both.
LAST_FRAME_INDEX = 2**31 - 1

FRAMES_IN_RANGE = (
    "SELECT frame_index, timestamp_s, description, error FROM frames WHERE session_id = {p} "
    "AND frame_index >= {p} AND frame_index <= {p} ORDER BY frame_index"
)
DESCRIBED_IN_RANGE = (
    "SELECT frame_index FROM frames WHERE session_id = {p} AND description IS NOT NULL "
    "AND frame_index >= {p} AND frame_index <= {p}"
)
FRAMES_STORED_SINCE = (
    "SELECT stored_at, frame_index, timestamp_s, description, error FROM frames "
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
    "SELECT f.frame_index, f.timestamp_s, f.description, f.error FROM frames f "
    "LEFT JOIN frame_embeddings e ON e.session_id = f.session_id AND e.frame_index = f.frame_index "
    "AND e.model = {p} WHERE f.session_id = {p} AND f.description IS NOT NULL AND e.vector IS NULL "
    "ORDER BY f.frame_index LIMIT {p}"
)


class Statements:
    """The shared statements with ``placeholder`` for each parameter."""

    def __init__(self, placeholder: str) -> None:
        def fill(sql: str) -> str:
            return sql.format(p=placeholder)

        self.frames_in_range = fill(FRAMES_IN_RANGE)
        self.described_in_range = fill(DESCRIBED_IN_RANGE)
        self.frames_stored_since = fill(FRAMES_STORED_SINCE)
        self.thumbnail = fill(THUMBNAIL)
        self.summary_count = fill(SUMMARY_COUNT)
        self.summaries = fill(SUMMARIES)
        self.overviews = fill(OVERVIEWS)
        self.frames_without_embedding = fill(FRAMES_WITHOUT_EMBEDDING)
