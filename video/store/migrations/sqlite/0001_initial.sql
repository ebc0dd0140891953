-- The video service's embedded store (SQLite, WAL): sessions, frames, summaries, search indexes.
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    owner TEXT,
    filename TEXT NOT NULL,
    video_path TEXT NOT NULL,
    status TEXT NOT NULL,
    options TEXT NOT NULL,
    prompt TEXT,
    duration_s REAL NOT NULL,
    total_frames INTEGER NOT NULL,
    warnings TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS frames (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    frame_index INTEGER NOT NULL,
    timestamp_s REAL NOT NULL,
    description TEXT,
    error TEXT,
    thumbnail BLOB,
    created_at REAL NOT NULL,
    PRIMARY KEY (session_id, frame_index)
);
CREATE TABLE IF NOT EXISTS summaries (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    batch_index INTEGER NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    frame_count INTEGER NOT NULL,
    summary TEXT NOT NULL,
    PRIMARY KEY (session_id, batch_index)
);
-- Summaries of summaries: level 1 summarises level-0 batch summaries, level 2 level-1 ones, ...
CREATE TABLE IF NOT EXISTS overviews (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    level INTEGER NOT NULL,
    node_index INTEGER NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    frame_count INTEGER NOT NULL,
    summary TEXT NOT NULL,
    PRIMARY KEY (session_id, level, node_index)
);
CREATE TABLE IF NOT EXISTS frame_embeddings (
    session_id TEXT NOT NULL,
    frame_index INTEGER NOT NULL,
    model TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (session_id, frame_index),
    FOREIGN KEY (session_id, frame_index) REFERENCES frames(session_id, frame_index) ON DELETE CASCADE
);
-- Full-text indexes (BM25) over descriptions and summaries, kept in step by triggers.
CREATE VIRTUAL TABLE IF NOT EXISTS frames_fts USING fts5(
    description, content='frames', content_rowid='rowid', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS frames_fts_insert AFTER INSERT ON frames WHEN new.description IS NOT NULL BEGIN
    INSERT INTO frames_fts(rowid, description) VALUES (new.rowid, new.description);
END;
CREATE TRIGGER IF NOT EXISTS frames_fts_delete AFTER DELETE ON frames WHEN old.description IS NOT NULL BEGIN
    INSERT INTO frames_fts(frames_fts, rowid, description) VALUES ('delete', old.rowid, old.description);
END;
CREATE TRIGGER IF NOT EXISTS frames_fts_update AFTER UPDATE OF description ON frames BEGIN
    INSERT INTO frames_fts(frames_fts, rowid, description)
        SELECT 'delete', old.rowid, old.description WHERE old.description IS NOT NULL;
    INSERT INTO frames_fts(rowid, description) SELECT new.rowid, new.description WHERE new.description IS NOT NULL;
END;
CREATE VIRTUAL TABLE IF NOT EXISTS summaries_fts USING fts5(
    summary, content='summaries', content_rowid='rowid', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS summaries_fts_insert AFTER INSERT ON summaries BEGIN
    INSERT INTO summaries_fts(rowid, summary) VALUES (new.rowid, new.summary);
END;
CREATE TRIGGER IF NOT EXISTS summaries_fts_delete AFTER DELETE ON summaries BEGIN
    INSERT INTO summaries_fts(summaries_fts, rowid, summary) VALUES ('delete', old.rowid, old.summary);
END;
CREATE TRIGGER IF NOT EXISTS summaries_fts_update AFTER UPDATE OF summary ON summaries BEGIN
    INSERT INTO summaries_fts(summaries_fts, rowid, summary) VALUES ('delete', old.rowid, old.summary);
    INSERT INTO summaries_fts(rowid, summary) VALUES (new.rowid, new.summary);
END;
