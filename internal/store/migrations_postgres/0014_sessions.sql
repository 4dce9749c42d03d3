-- PostgreSQL counterpart of migrations/0014_sessions.sql.
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    target      TEXT NOT NULL,
    principal   TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    protocol    TEXT NOT NULL,
    port        BIGINT NOT NULL,
    client_addr TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    deadline    BIGINT NOT NULL,
    ended_at    BIGINT,
    end_reason  TEXT NOT NULL DEFAULT '',
    ended_by    TEXT NOT NULL DEFAULT '',
    message     TEXT NOT NULL DEFAULT '',
    bytes_in    BIGINT NOT NULL DEFAULT 0,
    bytes_out   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX sessions_state ON sessions(state, started_at);
CREATE INDEX sessions_target ON sessions(target, started_at);
