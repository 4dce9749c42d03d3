-- PostgreSQL counterpart of migrations/0009_restore_guard.sql.
CREATE TABLE IF NOT EXISTS store_meta (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO store_meta (key, value) VALUES ('generation', 0) ON CONFLICT (key) DO NOTHING;
