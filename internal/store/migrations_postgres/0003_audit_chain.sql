-- PostgreSQL counterpart of migrations/0003_audit_chain.sql.
ALTER TABLE audit ADD COLUMN prev_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN hash TEXT NOT NULL DEFAULT '';
CREATE INDEX requests_activated ON requests(activated_at);
