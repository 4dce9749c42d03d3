-- PostgreSQL counterpart of migrations/0022_scheduled_requests.sql: the
-- start and subject of scheduled requests, and the live-request triggers
-- of 0011 counting the 'scheduled' state too (the functions stay).
ALTER TABLE requests ADD COLUMN starts_at BIGINT;
ALTER TABLE requests ADD COLUMN subject TEXT NOT NULL DEFAULT '';
CREATE INDEX requests_scheduled ON requests(starts_at) WHERE state = 'scheduled';

DROP TRIGGER live_requests_insert ON requests;
DROP TRIGGER live_requests_enter ON requests;
DROP TRIGGER live_requests_leave ON requests;
DROP TRIGGER live_requests_delete ON requests;

CREATE TRIGGER live_requests_insert AFTER INSERT ON requests FOR EACH ROW
WHEN (NEW.state IN ('pending_approval', 'scheduled', 'pending', 'active'))
EXECUTE FUNCTION live_requests_enter();

CREATE TRIGGER live_requests_enter AFTER UPDATE OF state ON requests FOR EACH ROW
WHEN (NEW.state IN ('pending_approval', 'scheduled', 'pending', 'active') AND OLD.state NOT IN ('pending_approval', 'scheduled', 'pending', 'active'))
EXECUTE FUNCTION live_requests_enter();

CREATE TRIGGER live_requests_leave AFTER UPDATE OF state ON requests FOR EACH ROW
WHEN (OLD.state IN ('pending_approval', 'scheduled', 'pending', 'active') AND NEW.state NOT IN ('pending_approval', 'scheduled', 'pending', 'active'))
EXECUTE FUNCTION live_requests_leave();

CREATE TRIGGER live_requests_delete AFTER DELETE ON requests FOR EACH ROW
WHEN (OLD.state IN ('pending_approval', 'scheduled', 'pending', 'active'))
EXECUTE FUNCTION live_requests_leave();
