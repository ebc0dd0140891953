-- The shared store (PostgreSQL): sessions, frames, summaries, search indexes; the same tables as
-- the embedded SQLite store, with PostgreSQL's full-text search in place of FTS5.
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    owner TEXT,
    filename TEXT NOT NULL,
    video_path TEXT NOT NULL,
    status TEXT NOT NULL,
    options JSONB NOT NULL,
    prompt TEXT,
    duration_s DOUBLE PRECISION NOT NULL,
    total_frames INTEGER NOT NULL,
    warnings JSONB NOT NULL DEFAULT '[]',
    error TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    seq BIGSERIAL
);
CREATE INDEX IF NOT EXISTS sessions_owner ON sessions (owner, created_at);
CREATE INDEX IF NOT EXISTS sessions_status ON sessions (status, created_at, seq);
CREATE TABLE IF NOT EXISTS frames (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    frame_index INTEGER NOT NULL,
    timestamp_s DOUBLE PRECISION NOT NULL,
    description TEXT,
    error TEXT,
    thumbnail BYTEA,
    stored_at DOUBLE PRECISION NOT NULL,
    search TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', coalesce(description, ''))) STORED,
    PRIMARY KEY (session_id, frame_index)
);
CREATE INDEX IF NOT EXISTS frames_search ON frames USING GIN (search);
CREATE INDEX IF NOT EXISTS frames_stored ON frames (session_id, stored_at);
CREATE TABLE IF NOT EXISTS summaries (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    batch_index INTEGER NOT NULL,
    start_s DOUBLE PRECISION NOT NULL,
    end_s DOUBLE PRECISION NOT NULL,
    frame_count INTEGER NOT NULL,
    summary TEXT NOT NULL,
    search TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', summary)) STORED,
    PRIMARY KEY (session_id, batch_index)
);
CREATE INDEX IF NOT EXISTS summaries_search ON summaries USING GIN (search);
CREATE TABLE IF NOT EXISTS overviews (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    level INTEGER NOT NULL,
    node_index INTEGER NOT NULL,
    start_s DOUBLE PRECISION NOT NULL,
    end_s DOUBLE PRECISION NOT NULL,
    frame_count INTEGER NOT NULL,
    summary TEXT NOT NULL,
    PRIMARY KEY (session_id, level, node_index)
);
CREATE TABLE IF NOT EXISTS frame_embeddings (
    session_id TEXT NOT NULL,
    frame_index INTEGER NOT NULL,
    model TEXT NOT NULL,
    vector BYTEA NOT NULL,
    PRIMARY KEY (session_id, frame_index),
    FOREIGN KEY (session_id, frame_index) REFERENCES frames(session_id, frame_index) ON DELETE CASCADE
);
