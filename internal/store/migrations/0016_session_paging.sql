-- The sessions list pages newest first (started_at, id) with filters in SQL:
-- by state and by target (0014's indexes), by principal, or by none.
CREATE INDEX sessions_principal ON sessions(principal, started_at);
CREATE INDEX sessions_started ON sessions(started_at, id);
