-- Times are UTC milliseconds since the Unix epoch (INTEGER): the same on
-- SQLite and PostgreSQL, and exact for kernel timeouts.
CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY,          -- SHA-256 of the secret; the secret is never stored
    id         TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,             -- admin | agent | enroll
    subject    TEXT NOT NULL,             -- user name, or target name for agent and enroll tokens
    created_at INTEGER NOT NULL,
    expires_at INTEGER                    -- NULL: no expiry
);
CREATE INDEX tokens_subject ON tokens(kind, subject);

CREATE TABLE targets (
    name             TEXT PRIMARY KEY,
    labels           TEXT NOT NULL DEFAULT '{}',
    addresses        TEXT NOT NULL DEFAULT '[]',
    policy           TEXT,                -- JSON; NULL: no JIT policy, nothing protected
    revision         INTEGER NOT NULL DEFAULT 1,
    applied_revision INTEGER NOT NULL DEFAULT 0,
    agent_state      TEXT NOT NULL DEFAULT 'never',
    agent_seen_at    INTEGER,
    agent_error      TEXT NOT NULL DEFAULT '',
    agent_version    TEXT NOT NULL DEFAULT '',
    created_at       INTEGER NOT NULL
);

CREATE TABLE requests (
    id            TEXT PRIMARY KEY,
    target        TEXT NOT NULL,
    requester     TEXT NOT NULL,
    source        TEXT NOT NULL,
    ports         TEXT NOT NULL,          -- JSON array of "22/tcp"
    duration_ms   INTEGER NOT NULL,
    reason        TEXT NOT NULL,
    state         TEXT NOT NULL,
    message       TEXT NOT NULL DEFAULT '',
    revision      INTEGER NOT NULL,       -- target revision the agent must apply to activate it
    created_at    INTEGER NOT NULL,
    activated_at  INTEGER,
    expires_at    INTEGER NOT NULL,
    ended_at      INTEGER,
    superseded_by TEXT NOT NULL DEFAULT '',
    extended      TEXT NOT NULL DEFAULT '[]',
    client_addr   TEXT NOT NULL DEFAULT '',
    version       INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX requests_state ON requests(state, expires_at);
CREATE INDEX requests_target ON requests(target, created_at);

-- A row per live (requester, source, protocol, port) of a target; deleted when
-- the grant ends. The desired firewall state of a target is exactly its rows
-- with expires_at in the future.
CREATE TABLE grants (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    target     TEXT NOT NULL,
    requester  TEXT NOT NULL,
    source     TEXT NOT NULL,
    protocol   TEXT NOT NULL,
    port       INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX grants_key ON grants(target, requester, source, protocol, port);
CREATE INDEX grants_request ON grants(request_id);

CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL DEFAULT '',
    request_id  TEXT NOT NULL DEFAULT '',
    client_addr TEXT NOT NULL DEFAULT '',
    reason      TEXT NOT NULL DEFAULT '',
    details     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_target ON audit(target, id);
