-- Clips: a clip's description is stored on each of its frames, with the clip's time range.
ALTER TABLE frames ADD COLUMN clip_start_s REAL;
ALTER TABLE frames ADD COLUMN clip_end_s REAL;
-- The soundtrack: 'none', 'not transcribed', 'transcribing' or 'done'.
ALTER TABLE sessions ADD COLUMN audio TEXT NOT NULL DEFAULT 'none';
-- One row per transcription window (a window once transcribed is never replaced by a failure),
-- and its segments with absolute times.
CREATE TABLE IF NOT EXISTS speech_windows (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    window_index INTEGER NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    error TEXT,
    stored_at REAL NOT NULL,
    PRIMARY KEY (session_id, window_index)
);
CREATE TABLE IF NOT EXISTS speech (
    session_id TEXT NOT NULL,
    window_index INTEGER NOT NULL,
    segment_index INTEGER NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (session_id, window_index, segment_index),
    FOREIGN KEY (session_id, window_index) REFERENCES speech_windows(session_id, window_index) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS speech_by_time ON speech (session_id, start_s);
CREATE VIRTUAL TABLE IF NOT EXISTS speech_fts USING fts5(
    text, content='speech', content_rowid='rowid', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS speech_fts_insert AFTER INSERT ON speech BEGIN
    INSERT INTO speech_fts(rowid, text) VALUES (new.rowid, new.text);
END;
CREATE TRIGGER IF NOT EXISTS speech_fts_delete AFTER DELETE ON speech BEGIN
    INSERT INTO speech_fts(speech_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
END;
CREATE TABLE IF NOT EXISTS speech_embeddings (
    session_id TEXT NOT NULL,
    window_index INTEGER NOT NULL,
    segment_index INTEGER NOT NULL,
    model TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (session_id, window_index, segment_index),
    FOREIGN KEY (session_id, window_index, segment_index)
        REFERENCES speech(session_id, window_index, segment_index) ON DELETE CASCADE
);
