-- PostgreSQL counterpart of migrations/0010_token_lineage.sql.
ALTER TABLE tokens ADD COLUMN parent_id TEXT;
CREATE INDEX tokens_parent ON tokens(parent_id);
