-- PostgreSQL counterpart of migrations/0019_replicas.sql.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    acquired_at BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE shared_keys (
    name       TEXT PRIMARY KEY,
    value      BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE device_logins (
    code_hash  TEXT PRIMARY KEY,
    source     TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    state      TEXT NOT NULL DEFAULT 'pending',
    identity   TEXT NOT NULL DEFAULT '',
    error      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX device_logins_source ON device_logins(source, state);

-- The change feed across replicas (feed_postgres.go): a commit that changes
-- a target's desired state, or one of its requests, notifies the channel
-- jitgate_changes with "<origin> <target>". NOTIFY is transactional: the
-- listeners of every replica hear it when, and only if, the transaction
-- commits. origin is the jitgate.origin setting of the writing connection,
-- so a replica skips what it wrote itself (its own feed told it already).
CREATE FUNCTION jitgate_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    t TEXT;
BEGIN
    IF TG_TABLE_NAME = 'targets' THEN
        IF TG_OP = 'DELETE' THEN t := OLD.name; ELSE t := NEW.name; END IF;
    ELSE
        IF TG_OP = 'DELETE' THEN t := OLD.target; ELSE t := NEW.target; END IF;
    END IF;
    PERFORM pg_notify('jitgate_changes', coalesce(current_setting('jitgate.origin', true), '') || ' ' || t);
    RETURN NULL;
END
$$;
CREATE TRIGGER targets_notify AFTER UPDATE OF revision, gateway OR DELETE ON targets
    FOR EACH ROW EXECUTE FUNCTION jitgate_notify_change();
CREATE TRIGGER requests_notify AFTER INSERT OR UPDATE OF state, version, expires_at, removal_confirmed_at ON requests
    FOR EACH ROW EXECUTE FUNCTION jitgate_notify_change();
