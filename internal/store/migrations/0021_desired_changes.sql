-- The change log of desired state: one row per (enforcer, revision) for every
-- revision an enforcer's agent is sent, written in the transaction that
-- advances the revision. grant_id names a grant row the revision added,
-- extended or removed; 0 marks a revision that changed more than grants (a
-- policy, a target's addresses, a mapping): an agent behind it needs a full
-- snapshot; -1 marks a revision of grant changes (so that every revision has
-- a row even when its grants are already gone). The server answers an agent
-- that holds revision A with the grants touched in (A, current] when every
-- revision in between has its rows, and with a snapshot otherwise (a gap: rows
-- pruned, or revisions lifted by the restore guard). Rows older than a window
-- of revisions are pruned as new ones are written.
CREATE TABLE desired_changes (
    enforcer TEXT NOT NULL,
    revision BIGINT NOT NULL,
    grant_id BIGINT NOT NULL,
    PRIMARY KEY (enforcer, revision, grant_id)
);
