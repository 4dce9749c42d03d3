-- Identity: tokens for people (admin bootstrap, personal, OIDC sessions) and
-- services, each optionally limited to a subset of its owner's role grants;
-- role bindings; approvals of requests.
ALTER TABLE tokens ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN groups TEXT NOT NULL DEFAULT '[]';  -- groups from the identity provider (sessions)
ALTER TABLE tokens ADD COLUMN limits TEXT NOT NULL DEFAULT '[]';  -- [{role, scope}]; empty: the owner's full grants
ALTER TABLE tokens ADD COLUMN created_by TEXT NOT NULL DEFAULT '';

CREATE TABLE bindings (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    principal  TEXT NOT NULL,   -- user:NAME | group:NAME | service:NAME
    role       TEXT NOT NULL,
    scope      TEXT NOT NULL,   -- * | target:NAME | label:KEY=VALUE
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    UNIQUE (principal, role, scope)
);

ALTER TABLE requests ADD COLUMN approvals_required INTEGER NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN approve_by INTEGER;   -- a request awaiting approval expires then
ALTER TABLE requests ADD COLUMN approved_at INTEGER;

CREATE TABLE approvals (
    request_id TEXT NOT NULL,
    approver   TEXT NOT NULL,
    decision   TEXT NOT NULL,   -- approve | deny
    reason     TEXT NOT NULL DEFAULT '',
    at         INTEGER NOT NULL,
    PRIMARY KEY (request_id, approver)
);
