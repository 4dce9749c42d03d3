-- Recordings of terminal sessions on ports whose rule requires it
-- (internal/recording). One row per recorded session, written when the
-- recording starts; its SHA-256 and size when it is saved (audited as
-- session.recorded in the same transaction); deleted_at when the retention
-- sweep (or an admin) deleted the file (audited as recording.deleted).
CREATE TABLE recordings (
    session_id  TEXT PRIMARY KEY,
    target      TEXT NOT NULL,
    principal   TEXT NOT NULL,
    request_id  TEXT NOT NULL DEFAULT '',
    input       INTEGER NOT NULL DEFAULT 0,
    started_at  INTEGER NOT NULL,
    saved_at    INTEGER,
    sha256      TEXT NOT NULL DEFAULT '',
    size        INTEGER NOT NULL DEFAULT 0,
    deleted_at  INTEGER
);
CREATE INDEX recordings_saved ON recordings(deleted_at, saved_at);
