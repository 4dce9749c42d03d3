-- PostgreSQL counterpart of migrations/0036_small_tables_without_rowid.sql,
-- which stores SQLite's live_requests and desired_changes in their primary
-- key's b-tree (WITHOUT ROWID) so that a new request writes fewer pages.
-- PostgreSQL has no rowid table to drop (a table is a heap beside its
-- primary key's index either way): nothing changes here.
SELECT 1;
