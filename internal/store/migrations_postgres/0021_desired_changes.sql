-- PostgreSQL counterpart of migrations/0021_desired_changes.sql.
CREATE TABLE desired_changes (
    enforcer TEXT NOT NULL,
    revision BIGINT NOT NULL,
    grant_id BIGINT NOT NULL,
    PRIMARY KEY (enforcer, revision, grant_id)
);
