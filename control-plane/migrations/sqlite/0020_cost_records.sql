-- Cost attribution (cost/ owns these tables).
-- cost_records: what each fresh decision used, as the control plane measured it (one row per
-- decision-log row, same record_id, written in the same transaction). Quantities only: money
-- comes from the price book at roll-up time. filter_cpu_ns and model_calls are NULL until the
-- filter and the micro-vote report them. day = created_at_ms / 86400000 (UTC day number).
CREATE TABLE IF NOT EXISTS cost_records (
    record_id          TEXT   NOT NULL PRIMARY KEY,
    tenant             TEXT   NOT NULL,
    created_at_ms      BIGINT NOT NULL,
    day                BIGINT NOT NULL,
    trusted            BIGINT NOT NULL,
    request_bytes      BIGINT NOT NULL,
    response_bytes     BIGINT NOT NULL,
    wal_bytes          BIGINT NOT NULL,
    decision_log_bytes BIGINT NOT NULL,
    filter_cpu_ns      BIGINT,
    model_calls        BIGINT,
    arm                TEXT,
    model_version      TEXT
);
CREATE INDEX IF NOT EXISTS cost_records_day_tenant ON cost_records (day, tenant);
-- Price book entries added through the API (the [[cost.prices]] of kakeya.toml come first).
CREATE TABLE IF NOT EXISTS cost_prices (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    effective_from      TEXT   NOT NULL,
    tenant              TEXT,
    per_request         DOUBLE PRECISION NOT NULL,
    per_cpu_second      DOUBLE PRECISION NOT NULL,
    per_gib_stored      DOUBLE PRECISION NOT NULL,
    per_gib_transferred DOUBLE PRECISION NOT NULL,
    per_model_call      DOUBLE PRECISION NOT NULL,
    created_at_ms       BIGINT NOT NULL
);
