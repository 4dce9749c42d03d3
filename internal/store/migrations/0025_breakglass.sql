-- Break-glass (issue 15 items 5 and 6). An alert per break-glass, online
-- (kind 'online': a request opened without approvers by the breakglass role)
-- or offline (kind 'offline': an agent used a signed token while the server
-- was unreachable, reported when it came back); it stays open until an
-- auditor or admin reviews it. The tokens an admin issued (never the token
-- text: only what it covers), when they were revoked and where they were used.
CREATE TABLE breakglass_alerts (
    id          TEXT PRIMARY KEY,
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    target      TEXT NOT NULL,
    request_id  TEXT NOT NULL DEFAULT '',
    token_id    TEXT NOT NULL DEFAULT '',
    source      TEXT NOT NULL DEFAULT '',
    ports       TEXT NOT NULL DEFAULT '',
    duration_ms BIGINT NOT NULL DEFAULT 0,
    reason      TEXT NOT NULL DEFAULT '',
    reviewed_at BIGINT,
    reviewed_by TEXT NOT NULL DEFAULT '',
    review_note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX breakglass_alerts_open ON breakglass_alerts(reviewed_at, at);
CREATE UNIQUE INDEX breakglass_alerts_use ON breakglass_alerts(token_id, target) WHERE token_id <> '';
CREATE TABLE breakglass_tokens (
    id              TEXT PRIMARY KEY,
    targets         TEXT NOT NULL,
    ports           TEXT NOT NULL,
    max_duration_ms BIGINT NOT NULL,
    issued_at       BIGINT NOT NULL,
    issued_by       TEXT NOT NULL,
    expires_at      BIGINT NOT NULL,
    revoked_at      BIGINT,
    revoked_by      TEXT NOT NULL DEFAULT '',
    used_at         BIGINT,
    used_target     TEXT NOT NULL DEFAULT ''
);
