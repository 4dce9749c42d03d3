-- Tamper-evident audit trail: each event carries the hash of the event
-- before it (prev_hash) and its own hash over prev_hash and its content
-- (see auditchain.go). Events written before this migration are chained
-- in Go when the store opens (chainUnhashed).
ALTER TABLE audit ADD COLUMN prev_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN hash TEXT NOT NULL DEFAULT '';

-- Per-target access statistics: activations in the last 7 days. (Not on
-- (target, activated_at): the planner would then pick it for the per-target
-- queries of requests.go and change the order in which they see rows.)
CREATE INDEX requests_activated ON requests(activated_at);
