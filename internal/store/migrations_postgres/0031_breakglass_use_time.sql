-- An offline break-glass alert records when the use happened (the agent's
-- clock, milliseconds), and a use is one per (token, target, time): a host
-- that lost its log (restored from before a use, cut off since) and used a
-- token a second time made a second access, which the index on (token,
-- target) swallowed as a retry of the first (no audit, no alert). Existing
-- offline alerts take their token's first use time.
DROP INDEX breakglass_alerts_use;
ALTER TABLE breakglass_alerts ADD COLUMN used_at BIGINT NOT NULL DEFAULT 0;
UPDATE breakglass_alerts SET used_at = COALESCE((SELECT t.used_at FROM breakglass_tokens t
    WHERE t.id = breakglass_alerts.token_id AND t.used_target = breakglass_alerts.target), 0)
    WHERE token_id <> '';
CREATE UNIQUE INDEX breakglass_alerts_use ON breakglass_alerts(token_id, target, used_at) WHERE token_id <> '';
