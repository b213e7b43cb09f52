-- Kakeya control plane schema (SQLite). Times are epoch milliseconds; booleans are 0/1 BIGINT
-- so the same queries and decoders work on SQLite and PostgreSQL through sqlx::Any.
CREATE TABLE IF NOT EXISTS pcs_dedup (
    tenant        TEXT   NOT NULL,
    pcs_id        TEXT   NOT NULL,
    status        BIGINT NOT NULL,
    body          TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, pcs_id)
);
CREATE INDEX IF NOT EXISTS pcs_dedup_expires_at_ms ON pcs_dedup (expires_at_ms);

CREATE TABLE IF NOT EXISTS decision_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id     TEXT   NOT NULL UNIQUE,
    tenant        TEXT   NOT NULL,
    pcs_id        TEXT   NOT NULL,
    d_hat         DOUBLE PRECISION NOT NULL,
    coh_star      DOUBLE PRECISION NOT NULL,
    r             DOUBLE PRECISION NOT NULL,
    budget        DOUBLE PRECISION NOT NULL,
    regime        TEXT   NOT NULL,
    accepted      BIGINT NOT NULL,
    escalated     BIGINT NOT NULL,
    reason        TEXT,
    status        BIGINT NOT NULL,
    cacheable     BIGINT NOT NULL,
    verify_ns     BIGINT,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS decision_log_tenant_id ON decision_log (tenant, id);
