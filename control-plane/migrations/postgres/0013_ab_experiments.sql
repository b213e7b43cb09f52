-- A/B experiments (ab/ owns this table). An experiment makes `treatment` the challenger with
-- weight traffic_split next to `control` (the champion) and salts the bundle's tenant split
-- with its id (kakeya_core::bundle::Policy::experiment). status: 'pending' while its start
-- publishes, 'running', then 'completed' (ends_at reached) or 'stopped' (an operator, or an
-- alias change outside the experiment). stop_reason: 'manual', 'expired' or
-- 'aliases_changed'; set on a running row when a stop is requested, kept when it ends.
-- first_bundle_version: the bundle its start published (the first one that carries its salt);
-- end_bundle_version: the bundle that ended it (the first one without). Its decisions are the
-- decision-log rows scored by bundles in [first, end). Times epoch ms.
CREATE TABLE IF NOT EXISTS ab_experiments (
    id                   TEXT   NOT NULL PRIMARY KEY,
    name                 TEXT   NOT NULL,
    scope                TEXT   NOT NULL,
    control              TEXT   NOT NULL REFERENCES models (version),
    treatment            TEXT   NOT NULL REFERENCES models (version),
    traffic_split        DOUBLE PRECISION NOT NULL,
    status               TEXT   NOT NULL
        CHECK (status IN ('pending', 'running', 'completed', 'stopped')),
    started_at_ms        BIGINT NOT NULL,
    ends_at_ms           BIGINT NOT NULL,
    stop_reason          TEXT CHECK (stop_reason IN ('manual', 'expired', 'aliases_changed')),
    stopped_at_ms        BIGINT,
    first_bundle_version BIGINT,
    end_bundle_version   BIGINT
);
-- At most one pending or running experiment per scope (one scope, 'global', for now).
CREATE UNIQUE INDEX IF NOT EXISTS ab_experiments_one_active
    ON ab_experiments (scope) WHERE status IN ('pending', 'running');
-- Listing, newest first.
CREATE INDEX IF NOT EXISTS ab_experiments_started ON ab_experiments (started_at_ms);
-- An experiment's statistics read its decisions by the bundles that scored them.
CREATE INDEX IF NOT EXISTS decision_log_bundle_version ON decision_log (bundle_version);
