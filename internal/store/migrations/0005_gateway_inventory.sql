-- Gateway mode, inventory and blocked attempts.
ALTER TABLE targets ADD COLUMN gateway TEXT NOT NULL DEFAULT '';        -- the gateway target that enforces for this one
ALTER TABLE targets ADD COLUMN address TEXT NOT NULL DEFAULT '';        -- this target's address behind its gateway
ALTER TABLE targets ADD COLUMN mode TEXT NOT NULL DEFAULT '';           -- the mode its agent reports: host | gateway
ALTER TABLE targets ADD COLUMN public_address TEXT NOT NULL DEFAULT ''; -- gateways: the address clients reach DNAT mappings on
ALTER TABLE targets ADD COLUMN inventory TEXT;                          -- the agent's last inventory (JSON)
CREATE INDEX targets_gateway ON targets(gateway);

-- Stable DNAT mapped ports: one per (target, protocol, port), unique per gateway.
CREATE TABLE mappings (
    gateway     TEXT NOT NULL,
    target      TEXT NOT NULL,
    protocol    TEXT NOT NULL,
    port        INTEGER NOT NULL,
    mapped_port INTEGER NOT NULL,
    PRIMARY KEY (target, protocol, port),
    UNIQUE (gateway, protocol, mapped_port)
);

-- Kernel counters of what each gate dropped on its protected ports.
CREATE TABLE blocked_counters (
    target      TEXT NOT NULL,   -- the reporting agent's target
    destination TEXT NOT NULL,   -- '' in host mode
    protocol    TEXT NOT NULL,
    port        INTEGER NOT NULL,
    packets     INTEGER NOT NULL,
    connections INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (target, destination, protocol, port)
);

-- Sampled sources of blocked attempts, kept for a day.
CREATE TABLE blocked_sources (
    target      TEXT NOT NULL,
    destination TEXT NOT NULL,
    protocol    TEXT NOT NULL,
    port        INTEGER NOT NULL,
    source      TEXT NOT NULL,
    hour        INTEGER NOT NULL,  -- UTC ms of the hour the samples fall in
    count       INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    PRIMARY KEY (target, destination, protocol, port, source, hour)
);
CREATE TABLE brute_force_alerts (
    target  TEXT NOT NULL,
    source  TEXT NOT NULL,
    at      INTEGER NOT NULL,
    PRIMARY KEY (target, source)
);
