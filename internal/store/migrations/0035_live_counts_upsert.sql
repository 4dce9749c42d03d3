-- The live-request counts of migration 0011 (0022 for the 'scheduled'
-- state), kept for less: they are maintained on every request's path (its
-- insert, its activation), inside the writer's transaction.
--   - A new live request is counted with one upsert (an insert of the
--     missing rows, then an update of both, before: four index seeks).
--   - The two triggers on a change of state (enter, leave) are one: SQLite
--     evaluates a trigger's WHEN inside the trigger's own program, so each
--     trigger cost a program run (a frame allocated) on every change of
--     state, the activation's (pending -> active, which moves no count)
--     included. Live states are left for ended ones only (access: ended
--     states are terminal), but a move into one is still counted.
-- The counts are the same (live_requests is not rebuilt); requester '' is
-- the target's total, as before, and a request with an empty requester
-- counts once in it, as before.
DROP TRIGGER live_requests_insert;
DROP TRIGGER live_requests_enter;
DROP TRIGGER live_requests_leave;

CREATE TRIGGER live_requests_insert AFTER INSERT ON requests
WHEN NEW.state IN ('pending_approval', 'scheduled', 'pending', 'active')
BEGIN
    INSERT INTO live_requests (target, requester, n)
        SELECT NEW.target, NEW.requester, 1 WHERE NEW.requester <> ''
        UNION ALL SELECT NEW.target, '', 1 WHERE 1
        ON CONFLICT (target, requester) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER live_requests_state AFTER UPDATE OF state ON requests
WHEN (NEW.state IN ('pending_approval', 'scheduled', 'pending', 'active')) <> (OLD.state IN ('pending_approval', 'scheduled', 'pending', 'active'))
BEGIN
    INSERT INTO live_requests (target, requester, n)
        SELECT NEW.target, NEW.requester, 1 WHERE NEW.state IN ('pending_approval', 'scheduled', 'pending', 'active') AND NEW.requester <> ''
        UNION ALL SELECT NEW.target, '', 1 WHERE NEW.state IN ('pending_approval', 'scheduled', 'pending', 'active')
        ON CONFLICT (target, requester) DO UPDATE SET n = n + 1;
    UPDATE live_requests SET n = n - 1
        WHERE OLD.state IN ('pending_approval', 'scheduled', 'pending', 'active') AND target = OLD.target AND requester IN (OLD.requester, '');
    DELETE FROM live_requests
        WHERE OLD.state IN ('pending_approval', 'scheduled', 'pending', 'active') AND target = OLD.target AND requester IN (OLD.requester, '') AND n <= 0;
END;
