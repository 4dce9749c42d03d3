-- PostgreSQL counterpart of migrations/0028_grants_target_id.sql.
CREATE INDEX grants_target_id ON grants(target, id);
