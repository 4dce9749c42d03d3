-- Resource limits (issue 9, item 7).
--
-- The caps on live requests read a requester's and a target's live
-- (pending_approval, pending, active) requests in the transaction of every
-- new request. Counting the rows costs what is live: 33 ms per request on a
-- target holding 99,000 (modernc SQLite, 2 cores), inside the write lock.
-- So the counts are kept here, by triggers on requests, whatever code path
-- moves a request into or out of a live state; requester '' holds the
-- target's total. A request's target and requester never change.
CREATE TABLE live_requests (
    target    TEXT NOT NULL,
    requester TEXT NOT NULL,
    n         INTEGER NOT NULL,
    PRIMARY KEY (target, requester)
);
INSERT INTO live_requests (target, requester, n)
    SELECT target, requester, count(*) FROM requests WHERE state IN ('pending_approval', 'pending', 'active') GROUP BY target, requester;
INSERT INTO live_requests (target, requester, n)
    SELECT target, '', count(*) FROM requests WHERE state IN ('pending_approval', 'pending', 'active') GROUP BY target;

CREATE TRIGGER live_requests_insert AFTER INSERT ON requests
WHEN NEW.state IN ('pending_approval', 'pending', 'active')
BEGIN
    INSERT OR IGNORE INTO live_requests (target, requester, n) VALUES (NEW.target, NEW.requester, 0), (NEW.target, '', 0);
    UPDATE live_requests SET n = n + 1 WHERE target = NEW.target AND requester IN (NEW.requester, '');
END;

CREATE TRIGGER live_requests_enter AFTER UPDATE OF state ON requests
WHEN NEW.state IN ('pending_approval', 'pending', 'active') AND OLD.state NOT IN ('pending_approval', 'pending', 'active')
BEGIN
    INSERT OR IGNORE INTO live_requests (target, requester, n) VALUES (NEW.target, NEW.requester, 0), (NEW.target, '', 0);
    UPDATE live_requests SET n = n + 1 WHERE target = NEW.target AND requester IN (NEW.requester, '');
END;

CREATE TRIGGER live_requests_leave AFTER UPDATE OF state ON requests
WHEN OLD.state IN ('pending_approval', 'pending', 'active') AND NEW.state NOT IN ('pending_approval', 'pending', 'active')
BEGIN
    UPDATE live_requests SET n = n - 1 WHERE target = OLD.target AND requester IN (OLD.requester, '');
    DELETE FROM live_requests WHERE target = OLD.target AND requester IN (OLD.requester, '') AND n <= 0;
END;

CREATE TRIGGER live_requests_delete AFTER DELETE ON requests
WHEN OLD.state IN ('pending_approval', 'pending', 'active')
BEGIN
    UPDATE live_requests SET n = n - 1 WHERE target = OLD.target AND requester IN (OLD.requester, '');
    DELETE FROM live_requests WHERE target = OLD.target AND requester IN (OLD.requester, '') AND n <= 0;
END;

-- The pruner deletes expired tokens (and console sessions) in batches.
CREATE INDEX tokens_expires ON tokens(expires_at) WHERE expires_at IS NOT NULL;
