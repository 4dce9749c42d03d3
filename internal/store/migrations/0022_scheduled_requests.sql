-- Scheduled requests (issue 15, item 1).
--
-- starts_at: when a request asks for access from (NULL: at approval). A
-- request approved before it waits as 'scheduled', holding no grant; the
-- scheduler starts it, re-checking its requester's roles and the policy.
-- subject: the requester's principals and token limit (JSON of
-- authz.Subject) as they were at the ask, for that re-check.
ALTER TABLE requests ADD COLUMN starts_at INTEGER;
ALTER TABLE requests ADD COLUMN subject TEXT NOT NULL DEFAULT '';
CREATE INDEX requests_scheduled ON requests(starts_at) WHERE state = 'scheduled';

-- A scheduled request is live: it counts toward the caps on live requests
-- (migration 0011), so the triggers learn the new state. No row is
-- scheduled yet, so the counts need no rebuild.
DROP TRIGGER live_requests_insert;
DROP TRIGGER live_requests_enter;
DROP TRIGGER live_requests_leave;
DROP TRIGGER live_requests_delete;

CREATE TRIGGER live_requests_insert AFTER INSERT ON requests
WHEN NEW.state IN ('pending_approval', 'scheduled', 'pending', 'active')
BEGIN
    INSERT OR IGNORE INTO live_requests (target, requester, n) VALUES (NEW.target, NEW.requester, 0), (NEW.target, '', 0);
    UPDATE live_requests SET n = n + 1 WHERE target = NEW.target AND requester IN (NEW.requester, '');
END;

CREATE TRIGGER live_requests_enter AFTER UPDATE OF state ON requests
WHEN NEW.state IN ('pending_approval', 'scheduled', 'pending', 'active') AND OLD.state NOT IN ('pending_approval', 'scheduled', 'pending', 'active')
BEGIN
    INSERT OR IGNORE INTO live_requests (target, requester, n) VALUES (NEW.target, NEW.requester, 0), (NEW.target, '', 0);
    UPDATE live_requests SET n = n + 1 WHERE target = NEW.target AND requester IN (NEW.requester, '');
END;

CREATE TRIGGER live_requests_leave AFTER UPDATE OF state ON requests
WHEN OLD.state IN ('pending_approval', 'scheduled', 'pending', 'active') AND NEW.state NOT IN ('pending_approval', 'scheduled', 'pending', 'active')
BEGIN
    UPDATE live_requests SET n = n - 1 WHERE target = OLD.target AND requester IN (OLD.requester, '');
    DELETE FROM live_requests WHERE target = OLD.target AND requester IN (OLD.requester, '') AND n <= 0;
END;

CREATE TRIGGER live_requests_delete AFTER DELETE ON requests
WHEN OLD.state IN ('pending_approval', 'scheduled', 'pending', 'active')
BEGIN
    UPDATE live_requests SET n = n - 1 WHERE target = OLD.target AND requester IN (OLD.requester, '');
    DELETE FROM live_requests WHERE target = OLD.target AND requester IN (OLD.requester, '') AND n <= 0;
END;
