-- The two indexes on activated_at hold only activated requests. Every new
-- request is inserted with activated_at NULL, and each of these indexes took
-- an entry for it (and moved it when the request was activated): two B-tree
-- writes on every request's creation and two on its activation, for rows no
-- query reads through them (the statistics ask for activations: "activated_at
-- IS NOT NULL", or a range of activated_at, which imply it; their plans are
-- unchanged). docs/benchmarks.md §17.
DROP INDEX requests_activated;
CREATE INDEX requests_activated ON requests(activated_at) WHERE activated_at IS NOT NULL;
DROP INDEX requests_target_activated;
CREATE INDEX requests_target_activated ON requests(target, activated_at) WHERE activated_at IS NOT NULL;
