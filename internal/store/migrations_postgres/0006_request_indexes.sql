-- PostgreSQL counterpart of migrations/0006_request_indexes.sql.
CREATE INDEX requests_target_activated ON requests(target, activated_at);
CREATE INDEX grants_expires ON grants(expires_at);
