-- The agent's snapshot reads a target's live grants in id order, 10,000 at a
-- time from the last id read (store.DesiredGrants): this index makes each
-- chunk a range scan instead of a sort of every grant of the target.
CREATE INDEX grants_target_id ON grants(target, id);
