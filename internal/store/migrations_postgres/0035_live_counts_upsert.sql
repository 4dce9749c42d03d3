-- PostgreSQL counterpart of migrations/0035_live_counts_upsert.sql: a new
-- live request (or one entering a live state) is counted with one upsert
-- instead of an insert of the missing rows and an update of both. The
-- triggers stay as they are: PostgreSQL evaluates a trigger's WHEN before
-- running its function, so two triggers on a change of state cost nothing
-- on a change that moves no count. Requester '' is the target's total; a
-- request with an empty requester counts once in it, as before (a
-- multi-row upsert touching one row twice would fail).
CREATE OR REPLACE FUNCTION live_requests_enter() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO live_requests (target, requester, n)
        SELECT NEW.target, NEW.requester, 1 WHERE NEW.requester <> ''
        UNION ALL SELECT NEW.target, '', 1
        ON CONFLICT (target, requester) DO UPDATE SET n = live_requests.n + 1;
    RETURN NULL;
END $$;
