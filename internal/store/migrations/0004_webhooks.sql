-- Notifications: webhooks and the outbox of their deliveries. An outbox row
-- is written in the same transaction as the audit event it reports, so a
-- committed change is never left unannounced and a rolled-back one is never
-- announced; the deliverer (internal/notify) sends it afterwards, retrying.
CREATE TABLE webhooks (
    id         TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    format     TEXT NOT NULL,               -- generic | slack
    -- The key deliveries are signed with (HMAC-SHA256), stored as given:
    -- signing needs it in the clear. It is the receiver's means to check
    -- that a delivery comes from jitgate, not a credential to jitgate; the
    -- API never returns it after creation.
    secret     TEXT NOT NULL,
    events     TEXT NOT NULL DEFAULT '[]',  -- JSON list of event names; empty: all
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
);

-- One row per (event, subscribed webhook). State: delivered when
-- delivered_at is set; failed (given up) when neither delivered_at nor
-- next_attempt_at is; otherwise due at next_attempt_at (a claimed row's
-- next_attempt_at is the end of its lease, so a crash re-delivers it).
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id      TEXT NOT NULL,
    event_id        INTEGER NOT NULL,          -- the audit event's id
    event           TEXT NOT NULL,             -- request.activated, ...
    payload         TEXT NOT NULL,             -- the generic JSON body
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_error      TEXT NOT NULL DEFAULT '',
    delivered_at    INTEGER,
    created_at      INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox(next_attempt_at);
CREATE INDEX outbox_webhook ON outbox(webhook_id, id);

-- Whether the request.expiring event of an active request was written.
ALTER TABLE requests ADD COLUMN expiry_warned INTEGER NOT NULL DEFAULT 0;
