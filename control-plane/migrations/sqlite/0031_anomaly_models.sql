-- The anomaly detector's VAE artifacts (anomaly/store.rs): canonical JSON of
-- kakeya_core::vae::VaeModel, its SHA-256 and Ed25519 signature (the registry's key), and its
-- model card of computed figures. Separate from `models`, whose rows are HRS artifacts that
-- aliases and bundles serve.
CREATE TABLE IF NOT EXISTS anomaly_models (
    version       TEXT   NOT NULL PRIMARY KEY,
    sha256        TEXT   NOT NULL,
    signature     TEXT   NOT NULL,
    artifact      TEXT   NOT NULL,
    card          TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- Training jobs of POST /v1/anomaly/train: 'running' with a heartbeat every second, then
-- 'succeeded' (result JSON, model_version) or 'failed' (error JSON {code, error}); a running
-- job whose heartbeat is stale was interrupted and is marked failed when read.
CREATE TABLE IF NOT EXISTS anomaly_jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    status          TEXT   NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    params          TEXT   NOT NULL,
    result          TEXT,
    error           TEXT,
    model_version   TEXT,
    created_at_ms   BIGINT NOT NULL,
    heartbeat_at_ms BIGINT NOT NULL,
    finished_at_ms  BIGINT
);
