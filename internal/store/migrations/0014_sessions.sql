-- Bastion sessions: one row per client tunnel relayed to a target's agent
-- under a live bastion grant. A session is live until it ends, once, for one
-- reason (internal/session); a server that starts marks the sessions a dead
-- predecessor left live as ended (server_lost).
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    target      TEXT NOT NULL,
    principal   TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    protocol    TEXT NOT NULL,
    port        INTEGER NOT NULL,
    client_addr TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    deadline    INTEGER NOT NULL,
    ended_at    INTEGER,
    end_reason  TEXT NOT NULL DEFAULT '',
    ended_by    TEXT NOT NULL DEFAULT '',
    message     TEXT NOT NULL DEFAULT '',
    bytes_in    INTEGER NOT NULL DEFAULT 0,
    bytes_out   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_state ON sessions(state, started_at);
CREATE INDEX sessions_target ON sessions(target, started_at);
