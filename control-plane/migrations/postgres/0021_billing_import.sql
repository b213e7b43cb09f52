-- Billing import (cost/import.rs). billing_lines: one row per provider line item, keyed by its
-- identity, so re-importing a file changes nothing. service: compute|storage|network|
-- model_calls from the service tag, else unallocated. day: UTC day number of the usage start.
CREATE TABLE IF NOT EXISTS billing_lines (
    provider         TEXT   NOT NULL,
    line_id          TEXT   NOT NULL,
    day              BIGINT NOT NULL,
    tenant           TEXT,
    service          TEXT   NOT NULL,
    provider_service TEXT   NOT NULL,
    cost             DOUBLE PRECISION NOT NULL,
    currency         TEXT   NOT NULL,
    job_id           TEXT   NOT NULL,
    PRIMARY KEY (provider, line_id)
);
CREATE INDEX IF NOT EXISTS billing_lines_day ON billing_lines (day, service);
-- Import jobs: POST /v1/cost/import answers 202 with the id; result is the job's JSON.
CREATE TABLE IF NOT EXISTS cost_import_jobs (
    id             TEXT   NOT NULL PRIMARY KEY,
    provider       TEXT   NOT NULL,
    from_day       BIGINT NOT NULL,
    to_day         BIGINT NOT NULL,
    status         TEXT   NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    created_at_ms  BIGINT NOT NULL,
    finished_at_ms BIGINT,
    result         TEXT,
    error          TEXT
);
