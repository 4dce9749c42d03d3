-- PostgreSQL counterpart of migrations/0007_removal_confirmation.sql. The
-- SQLite migration also deletes mappings left behind by earlier versions; a
-- PostgreSQL database never held any (it starts at this schema, or is
-- filled by jitgate migrate from an SQLite database already migrated).
ALTER TABLE requests ADD COLUMN removal_revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN removal_enforcer TEXT NOT NULL DEFAULT '';
ALTER TABLE requests ADD COLUMN removal_at BIGINT;
ALTER TABLE requests ADD COLUMN removal_confirmed_at BIGINT;
CREATE INDEX requests_removal_unconfirmed ON requests(removal_enforcer) WHERE removal_revision > 0 AND removal_confirmed_at IS NULL;

ALTER TABLE targets ADD COLUMN policy_removed_revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE targets ADD COLUMN policy_removed_at BIGINT;
ALTER TABLE targets ADD COLUMN policy_removal_confirmed_at BIGINT;
