-- A frame's last write time has the same name in both stores (PostgreSQL's frames.stored_at).
ALTER TABLE frames RENAME COLUMN created_at TO stored_at;
