-- PostgreSQL counterpart of migrations/0011_limits.sql: the live request
-- counts kept by triggers (PL/pgSQL functions instead of SQLite's trigger
-- bodies; INSERT ... ON CONFLICT DO NOTHING instead of INSERT OR IGNORE).
CREATE TABLE live_requests (
    target    TEXT NOT NULL,
    requester TEXT NOT NULL,
    n         BIGINT NOT NULL,
    PRIMARY KEY (target, requester)
);
INSERT INTO live_requests (target, requester, n)
    SELECT target, requester, count(*) FROM requests WHERE state IN ('pending_approval', 'pending', 'active') GROUP BY target, requester;
INSERT INTO live_requests (target, requester, n)
    SELECT target, '', count(*) FROM requests WHERE state IN ('pending_approval', 'pending', 'active') GROUP BY target;

CREATE FUNCTION live_requests_enter() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO live_requests (target, requester, n) VALUES (NEW.target, NEW.requester, 0), (NEW.target, '', 0)
        ON CONFLICT (target, requester) DO NOTHING;
    UPDATE live_requests SET n = n + 1 WHERE target = NEW.target AND requester IN (NEW.requester, '');
    RETURN NULL;
END $$;

CREATE FUNCTION live_requests_leave() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE live_requests SET n = n - 1 WHERE target = OLD.target AND requester IN (OLD.requester, '');
    DELETE FROM live_requests WHERE target = OLD.target AND requester IN (OLD.requester, '') AND n <= 0;
    RETURN NULL;
END $$;

CREATE TRIGGER live_requests_insert AFTER INSERT ON requests FOR EACH ROW
WHEN (NEW.state IN ('pending_approval', 'pending', 'active'))
EXECUTE FUNCTION live_requests_enter();

CREATE TRIGGER live_requests_enter AFTER UPDATE OF state ON requests FOR EACH ROW
WHEN (NEW.state IN ('pending_approval', 'pending', 'active') AND OLD.state NOT IN ('pending_approval', 'pending', 'active'))
EXECUTE FUNCTION live_requests_enter();

CREATE TRIGGER live_requests_leave AFTER UPDATE OF state ON requests FOR EACH ROW
WHEN (OLD.state IN ('pending_approval', 'pending', 'active') AND NEW.state NOT IN ('pending_approval', 'pending', 'active'))
EXECUTE FUNCTION live_requests_leave();

CREATE TRIGGER live_requests_delete AFTER DELETE ON requests FOR EACH ROW
WHEN (OLD.state IN ('pending_approval', 'pending', 'active'))
EXECUTE FUNCTION live_requests_leave();

CREATE INDEX tokens_expires ON tokens(expires_at) WHERE expires_at IS NOT NULL;
