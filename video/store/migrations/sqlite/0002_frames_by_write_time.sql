-- Progress streams read the frames written since their last look (frames.created_at is the last write).
CREATE INDEX IF NOT EXISTS frames_stored ON frames (session_id, created_at);
