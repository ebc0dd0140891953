-- Teams and keys managed through /team/* and /key/*, their spend by day, and a revision that
-- every change bumps (each gateway process reloads its cache when it moves).
CREATE TABLE IF NOT EXISTS managed_teams (
    team_id TEXT PRIMARY KEY,
    team_alias TEXT,
    models TEXT NOT NULL DEFAULT '[]',
    max_budget DOUBLE PRECISION,
    budget_duration TEXT,
    budget_reset_at DOUBLE PRECISION,
    spend DOUBLE PRECISION NOT NULL DEFAULT 0,
    rpm_limit BIGINT,
    tpm_limit BIGINT,
    max_parallel_requests BIGINT,
    metadata TEXT NOT NULL DEFAULT '{}',
    blocked INTEGER NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS managed_keys (
    token TEXT PRIMARY KEY,
    key_name TEXT NOT NULL,
    key_alias TEXT UNIQUE,
    team_id TEXT REFERENCES managed_teams(team_id),
    models TEXT NOT NULL DEFAULT '[]',
    max_budget DOUBLE PRECISION,
    budget_duration TEXT,
    budget_reset_at DOUBLE PRECISION,
    spend DOUBLE PRECISION NOT NULL DEFAULT 0,
    rpm_limit BIGINT,
    tpm_limit BIGINT,
    max_parallel_requests BIGINT,
    metadata TEXT NOT NULL DEFAULT '{}',
    blocked INTEGER NOT NULL DEFAULT 0,
    expires DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS managed_keys_team ON managed_keys (team_id);
CREATE TABLE IF NOT EXISTS managed_spend_daily (
    day TEXT NOT NULL,
    token TEXT NOT NULL,
    team_id TEXT NOT NULL DEFAULT '',
    model_group TEXT NOT NULL,
    spend DOUBLE PRECISION NOT NULL DEFAULT 0,
    requests BIGINT NOT NULL DEFAULT 0,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (day, token, model_group, team_id)
);
CREATE TABLE IF NOT EXISTS managed_spend_logs (
    request_id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    team_id TEXT NOT NULL DEFAULT '',
    model_group TEXT NOT NULL,
    spend DOUBLE PRECISION NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS managed_spend_logs_time ON managed_spend_logs (started_at);
CREATE TABLE IF NOT EXISTS managed_revision (
    id INTEGER PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO managed_revision (id, revision) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
