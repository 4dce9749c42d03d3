-- PostgreSQL counterpart of migrations/0017_recordings.sql.
CREATE TABLE recordings (
    session_id  TEXT PRIMARY KEY,
    target      TEXT NOT NULL,
    principal   TEXT NOT NULL,
    request_id  TEXT NOT NULL DEFAULT '',
    input       BIGINT NOT NULL DEFAULT 0,
    started_at  BIGINT NOT NULL,
    saved_at    BIGINT,
    sha256      TEXT NOT NULL DEFAULT '',
    size        BIGINT NOT NULL DEFAULT 0,
    deleted_at  BIGINT
);
CREATE INDEX recordings_saved ON recordings(deleted_at, saved_at);
