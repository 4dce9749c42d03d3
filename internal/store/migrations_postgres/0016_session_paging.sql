-- PostgreSQL counterpart of migrations/0016_session_paging.sql.
CREATE INDEX sessions_principal ON sessions(principal, started_at);
CREATE INDEX sessions_started ON sessions(started_at, id);
