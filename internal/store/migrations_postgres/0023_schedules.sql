-- PostgreSQL counterpart of migrations/0023_schedules.sql. Recurring access (issue 15, item 3): a schedule binds a principal to
-- ports of a target on a recurrence (cron, in an IANA time zone), with a
-- duration per occurrence. next_at is the start of the next occurrence not
-- produced yet (NULL: none ever again); the sweeper produces each as an
-- ordinary request recur.Lead before it starts.
CREATE TABLE schedules (
    id           TEXT PRIMARY KEY,
    principal    TEXT NOT NULL,
    target       TEXT NOT NULL,
    ports        TEXT NOT NULL,
    source       TEXT NOT NULL,
    cron         TEXT NOT NULL,
    timezone     TEXT NOT NULL,
    duration_ms  BIGINT NOT NULL,
    reason       TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    next_at      BIGINT,
    last_request TEXT NOT NULL DEFAULT ''
);
CREATE INDEX schedules_next ON schedules(next_at);
