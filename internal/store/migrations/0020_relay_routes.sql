-- Several server replicas sharing one database. Each running server holds a
-- row in replicas, refreshed every few seconds (expires_at): its id (stable
-- per data directory) and the internal URL other replicas reach it at for
-- the bastion ('' when it accepts no forwarded stream). A replica whose row
-- expired is dead: its relay routes are ignored and removed, and the
-- sessions it recorded live are ended (server_lost) by whichever replica
-- notices first.
CREATE TABLE replicas (
    id         TEXT PRIMARY KEY,
    address    TEXT NOT NULL DEFAULT '',
    started_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX replicas_expires ON replicas(expires_at);

-- Which replica holds a target agent's bastion relay connection: a client
-- connected to another replica has its stream forwarded there. conn tells
-- one connection from the next of the same agent on the same replica (a
-- reconnect replaces the older one; its late removal must not remove the
-- newer route).
CREATE TABLE relay_routes (
    target       TEXT NOT NULL,
    replica      TEXT NOT NULL,
    conn         TEXT NOT NULL,
    connected_at INTEGER NOT NULL,
    PRIMARY KEY (target, replica)
);
CREATE INDEX relay_routes_replica ON relay_routes(replica);

-- The replica that relays each session ('' for sessions recorded before
-- replicas): a server starting ends its own and those of dead replicas, not
-- those another live replica relays.
ALTER TABLE sessions ADD COLUMN replica TEXT NOT NULL DEFAULT '';
CREATE INDEX sessions_replica ON sessions(replica, state);
