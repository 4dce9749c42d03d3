-- Removals are confirmed like activations (access.Removal): a request that
-- ended while its grants were still in a kernel records the revision of its
-- enforcer (the target's agent, or its gateway's) that no longer holds
-- them; the agent confirms the removal by reporting a revision at least
-- that one. removal_enforcer '' means no agent will confirm it (the target
-- was removed); the grant's kernel deadline (expires_at) still closes it.
ALTER TABLE requests ADD COLUMN removal_revision INTEGER NOT NULL DEFAULT 0;  -- 0: nothing to confirm
ALTER TABLE requests ADD COLUMN removal_enforcer TEXT NOT NULL DEFAULT '';
ALTER TABLE requests ADD COLUMN removal_at INTEGER;
ALTER TABLE requests ADD COLUMN removal_confirmed_at INTEGER;
CREATE INDEX requests_removal_unconfirmed ON requests(removal_enforcer) WHERE removal_revision > 0 AND removal_confirmed_at IS NULL;

-- The removal of a target's policy (it re-opens ports) is confirmed the
-- same way; a new policy clears it.
ALTER TABLE targets ADD COLUMN policy_removed_revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE targets ADD COLUMN policy_removed_at INTEGER;
ALTER TABLE targets ADD COLUMN policy_removal_confirmed_at INTEGER;
