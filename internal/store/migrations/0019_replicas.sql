-- Several server replicas on one database (docs/operations.md, "Replicas").
--
-- leases: the singleton jobs (the sweeper, webhook delivery, pruning) run on
-- the one replica holding the job's lease. A holder renews its row every
-- second or so; a row whose expires_at has passed may be taken by any
-- replica (internal/lease).
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    acquired_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

-- shared_keys: keys every replica must use alike, made once by the first
-- replica that needs one (the seal of browser logins in progress).
CREATE TABLE shared_keys (
    name       TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

-- device_logins: single sign-on device logins in progress (jitgate login),
-- so the CLI's polls may reach any replica. The CLI's code is kept only as
-- its SHA-256; the outcome (the identity the provider vouched for, or why
-- it failed) is taken once.
CREATE TABLE device_logins (
    code_hash  TEXT PRIMARY KEY,
    source     TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    state      TEXT NOT NULL DEFAULT 'pending',
    identity   TEXT NOT NULL DEFAULT '',
    error      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX device_logins_source ON device_logins(source, state);
