-- Clips: a clip's description is stored on each of its frames, with the clip's time range.
ALTER TABLE frames ADD COLUMN IF NOT EXISTS clip_start_s DOUBLE PRECISION;
ALTER TABLE frames ADD COLUMN IF NOT EXISTS clip_end_s DOUBLE PRECISION;
-- The soundtrack: 'none', 'not transcribed', 'transcribing' or 'done'.
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS audio TEXT NOT NULL DEFAULT 'none';
-- One row per transcription window (a window once transcribed is never replaced by a failure),
-- and its segments with absolute times.
CREATE TABLE IF NOT EXISTS speech_windows (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    window_index INTEGER NOT NULL,
    start_s DOUBLE PRECISION NOT NULL,
    end_s DOUBLE PRECISION NOT NULL,
    error TEXT,
    stored_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (session_id, window_index)
);
CREATE TABLE IF NOT EXISTS speech (
    session_id TEXT NOT NULL,
    window_index INTEGER NOT NULL,
    segment_index INTEGER NOT NULL,
    start_s DOUBLE PRECISION NOT NULL,
    end_s DOUBLE PRECISION NOT NULL,
    text TEXT NOT NULL,
    search TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
    PRIMARY KEY (session_id, window_index, segment_index),
    FOREIGN KEY (session_id, window_index) REFERENCES speech_windows(session_id, window_index) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS speech_by_time ON speech (session_id, start_s);
CREATE INDEX IF NOT EXISTS speech_search ON speech USING GIN (search);
CREATE TABLE IF NOT EXISTS speech_embeddings (
    session_id TEXT NOT NULL,
    window_index INTEGER NOT NULL,
    segment_index INTEGER NOT NULL,
    model TEXT NOT NULL,
    vector BYTEA NOT NULL,
    PRIMARY KEY (session_id, window_index, segment_index),
    FOREIGN KEY (session_id, window_index, segment_index)
        REFERENCES speech(session_id, window_index, segment_index) ON DELETE CASCADE
);
