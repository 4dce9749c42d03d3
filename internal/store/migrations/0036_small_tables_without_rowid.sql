-- The live-request counts (0011) and the change log of desired state (0021)
-- are kept as WITHOUT ROWID tables: the rows are stored in their primary
-- key's b-tree, with no rowid table beside it. Both are written on every
-- request's creation, and a commit's cost is its pages (a WAL frame each,
-- written before the fsync): as rowid tables, a new request's counts wrote
-- three pages (its requester's row and the target's total, far apart in
-- rowid order, and the key's index) and its change-log row two; now one
-- each (the target's rows are neighbours in the key). docs/benchmarks.md.
-- The rows, the keys and every statement on them are unchanged; the tables
-- are rebuilt under their own names (the triggers on requests name
-- live_requests and are left as they are).
CREATE TABLE live_requests_0036 AS SELECT target, requester, n FROM live_requests;
DROP TABLE live_requests;
CREATE TABLE live_requests (
    target    TEXT NOT NULL,
    requester TEXT NOT NULL,
    n         INTEGER NOT NULL,
    PRIMARY KEY (target, requester)
) WITHOUT ROWID;
INSERT INTO live_requests (target, requester, n) SELECT target, requester, n FROM live_requests_0036;
DROP TABLE live_requests_0036;

CREATE TABLE desired_changes_0036 AS SELECT enforcer, revision, grant_id FROM desired_changes;
DROP TABLE desired_changes;
CREATE TABLE desired_changes (
    enforcer TEXT NOT NULL,
    revision BIGINT NOT NULL,
    grant_id BIGINT NOT NULL,
    PRIMARY KEY (enforcer, revision, grant_id)
) WITHOUT ROWID;
INSERT INTO desired_changes (enforcer, revision, grant_id) SELECT enforcer, revision, grant_id FROM desired_changes_0036;
DROP TABLE desired_changes_0036;
