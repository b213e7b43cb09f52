-- Model registry, aliases and signed bundles (PostgreSQL); risk columns of the decision log.
CREATE TABLE IF NOT EXISTS models (
    version       TEXT   NOT NULL PRIMARY KEY,
    sha256        TEXT   NOT NULL,
    artifact      TEXT   NOT NULL,
    card          TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS model_aliases (
    alias         TEXT   NOT NULL PRIMARY KEY,
    version       TEXT   NOT NULL REFERENCES models (version),
    weight        DOUBLE PRECISION NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- version = MAX(version) + 1, computed in the transaction that changes the aliases.
CREATE TABLE IF NOT EXISTS bundles (
    version       BIGINT NOT NULL PRIMARY KEY,
    sha256        TEXT   NOT NULL,
    signature     TEXT   NOT NULL,
    bytes         TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL
);

ALTER TABLE decision_log ADD COLUMN risk DOUBLE PRECISION;
ALTER TABLE decision_log ADD COLUMN risk_band TEXT;
ALTER TABLE decision_log ADD COLUMN model_version TEXT;
ALTER TABLE decision_log ADD COLUMN arm TEXT;
ALTER TABLE decision_log ADD COLUMN bundle_version BIGINT;
