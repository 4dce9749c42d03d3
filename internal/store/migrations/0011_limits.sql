-- Resource limits (issue 9, item 7).
-- The caps on live requests count a requester's and a target's live requests
-- in the transaction of every new request; this index holds only live rows,
-- so the count costs what is live, not what ever was.
CREATE INDEX requests_live ON requests(target, requester) WHERE state IN ('pending_approval', 'pending', 'active');
-- The pruner deletes expired tokens (and console sessions) in batches.
CREATE INDEX tokens_expires ON tokens(expires_at) WHERE expires_at IS NOT NULL;
