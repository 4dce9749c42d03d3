-- PostgreSQL counterpart of migrations/0005_gateway_inventory.sql.
ALTER TABLE targets ADD COLUMN gateway TEXT NOT NULL DEFAULT '';
ALTER TABLE targets ADD COLUMN address TEXT NOT NULL DEFAULT '';
ALTER TABLE targets ADD COLUMN mode TEXT NOT NULL DEFAULT '';
ALTER TABLE targets ADD COLUMN public_address TEXT NOT NULL DEFAULT '';
ALTER TABLE targets ADD COLUMN inventory TEXT;
CREATE INDEX targets_gateway ON targets(gateway);

CREATE TABLE mappings (
    gateway     TEXT NOT NULL,
    target      TEXT NOT NULL,
    protocol    TEXT NOT NULL,
    port        BIGINT NOT NULL,
    mapped_port BIGINT NOT NULL,
    PRIMARY KEY (target, protocol, port),
    UNIQUE (gateway, protocol, mapped_port)
);

CREATE TABLE blocked_counters (
    target      TEXT NOT NULL,
    destination TEXT NOT NULL,
    protocol    TEXT NOT NULL,
    port        BIGINT NOT NULL,
    packets     BIGINT NOT NULL,
    connections BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (target, destination, protocol, port)
);

CREATE TABLE blocked_sources (
    target      TEXT NOT NULL,
    destination TEXT NOT NULL,
    protocol    TEXT NOT NULL,
    port        BIGINT NOT NULL,
    source      TEXT NOT NULL,
    hour        BIGINT NOT NULL,
    count       BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    PRIMARY KEY (target, destination, protocol, port, source, hour)
);
CREATE TABLE brute_force_alerts (
    target  TEXT NOT NULL,
    source  TEXT NOT NULL,
    at      BIGINT NOT NULL,
    PRIMARY KEY (target, source)
);
