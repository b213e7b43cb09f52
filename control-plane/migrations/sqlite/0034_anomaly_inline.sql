-- Inline anomaly scoring (issue 9). anomaly_active: the one VAE artifact the bundle carries,
-- chosen by POST /v1/anomaly/activate (row id 1 only). anomaly_modes: each tenant's mode in
-- the bundle (off / shadow / guardrail / blocking) and its optional blocking threshold; the
-- tenant '*' is the default for tenants not listed. The flag threshold is not stored here: it
-- is the optimiser's current threshold (anomaly_thresholds), 0.98 before any run.
CREATE TABLE IF NOT EXISTS anomaly_active (
    id              INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    version         TEXT    NOT NULL REFERENCES anomaly_models (version),
    activated_at_ms BIGINT  NOT NULL
);
CREATE TABLE IF NOT EXISTS anomaly_modes (
    tenant          TEXT    NOT NULL PRIMARY KEY,
    mode            TEXT    NOT NULL CHECK (mode IN ('off', 'shadow', 'guardrail', 'blocking')),
    block_threshold DOUBLE PRECISION,
    updated_at_ms   BIGINT  NOT NULL
);
