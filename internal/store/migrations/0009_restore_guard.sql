-- store_meta holds counters about the database as a whole.
--   generation: advanced with every change of any target's desired state
--     (bumpRevision). The server keeps its highest value in a file outside
--     the database; a database whose generation is lower than that mark is an
--     older copy put back (a restore), and its live grants are ended.
--   restore_pending: set (to the copy's time, UTC ms) in copies made by
--     `jitgate backup` and `jitgate restore`; the first server start on such
--     a copy ends every live grant in it, then clears the mark.
CREATE TABLE IF NOT EXISTS store_meta (
	key   TEXT PRIMARY KEY,
	value INTEGER NOT NULL
);
INSERT INTO store_meta (key, value) VALUES ('generation', 0) ON CONFLICT (key) DO NOTHING;
