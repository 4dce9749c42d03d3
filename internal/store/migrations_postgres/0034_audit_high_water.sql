-- Removing the newest audit events left a shorter chain that still verified:
-- on SQLite, AUTOINCREMENT's sqlite_sequence keeps the greatest id the trail
-- ever held, which a DELETE does not lower, so verification compares it with
-- the newest event left; PostgreSQL had nothing of the kind (a sequence would
-- not do: nextval is not rolled back, so a rolled-back write would read as a
-- removed event). audit_high_water is that mark: one row, raised by a trigger
-- in the transaction of every insert into audit (so a rollback takes it back),
-- never lowered, never removed: the triggers below refuse an UPDATE that
-- lowers it and any DELETE or TRUNCATE, so rows removed from the end of the
-- trail, with or without an UPDATE of the mark in the same transaction, leave
-- the mark above the newest event (store.VerifyAudit). The role that owns the
-- tables can still drop or disable these triggers: keep the head hash
-- elsewhere too (docs/design.md, "Tamper-evident audit").
CREATE TABLE audit_high_water (
    one     BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    last_id BIGINT NOT NULL
);
INSERT INTO audit_high_water (one, last_id) SELECT true, coalesce(max(id), 0) FROM audit;

CREATE FUNCTION audit_high_water_raise() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE audit_high_water SET last_id = NEW.id WHERE last_id < NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER audit_high_water_raise AFTER INSERT ON audit FOR EACH ROW EXECUTE FUNCTION audit_high_water_raise();

CREATE FUNCTION audit_high_water_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.one AND NEW.last_id >= OLD.last_id THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'the audit high-water mark is only ever raised (by writing audit events)';
END $$;
CREATE TRIGGER audit_high_water_keep BEFORE UPDATE OR DELETE ON audit_high_water
    FOR EACH ROW EXECUTE FUNCTION audit_high_water_keep();
CREATE TRIGGER audit_high_water_no_truncate BEFORE TRUNCATE ON audit_high_water
    FOR EACH STATEMENT EXECUTE FUNCTION audit_high_water_keep();

-- A new event written after the newest were removed gets the id above the
-- mark, as AUTOINCREMENT gives on SQLite: the gap stays visible.
CREATE OR REPLACE FUNCTION audit_next_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id IS NULL THEN
        SELECT greatest(coalesce(max(id), 0), (SELECT last_id FROM audit_high_water)) + 1 INTO NEW.id FROM audit;
    END IF;
    RETURN NEW;
END $$;
