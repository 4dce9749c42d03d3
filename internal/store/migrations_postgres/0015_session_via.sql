-- PostgreSQL counterpart of migrations/0015_session_via.sql.
ALTER TABLE sessions ADD COLUMN via TEXT NOT NULL DEFAULT 'tunnel';
ALTER TABLE sessions ADD COLUMN login TEXT NOT NULL DEFAULT '';
