-- Nothing to change on SQLite. The PostgreSQL twin of this migration adds
-- audit_high_water, the greatest id the audit trail ever held, which a DELETE
-- does not lower; on SQLite that mark already exists: the audit table is
-- AUTOINCREMENT, and sqlite_sequence keeps its greatest id. store.VerifyAudit
-- compares the mark with the newest event on both databases, so removing the
-- newest events is reported.
SELECT 1;
