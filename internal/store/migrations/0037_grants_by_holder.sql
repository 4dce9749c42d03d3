-- The grants of a request are found by what they share with it, their
-- target, requester and source (a prefix of the unique index grants_key),
-- and their request_id: a grant moves to a newer request only when that
-- request holds the same key, so every grant of a request has the request's
-- key. The index on request_id alone served nothing else; every new grant
-- wrote a page of it (its keys are random: the request ids), one WAL frame
-- of every request's commit, and every ended request's grants deleted
-- their entries from it. docs/benchmarks.md.
DROP INDEX grants_request;
