-- Reconciliation reports (with the SHA-256 of both inputs), advisor recommendations and
-- budgets (cost/).
CREATE TABLE IF NOT EXISTS cost_reconciliations (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at_ms   BIGINT NOT NULL,
    from_day        BIGINT NOT NULL,
    to_day          BIGINT NOT NULL,
    status          TEXT   NOT NULL CHECK (status IN ('within_target', 'alert', 'no_data')),
    internal_sha256 TEXT   NOT NULL,
    billed_sha256   TEXT   NOT NULL,
    report          TEXT   NOT NULL
);
CREATE TABLE IF NOT EXISTS cost_recommendations (
    id                       TEXT   NOT NULL PRIMARY KEY,
    kind                     TEXT   NOT NULL,
    tenant                   TEXT,
    status                   TEXT   NOT NULL CHECK (status IN ('pending', 'applied', 'superseded')),
    created_at_ms            BIGINT NOT NULL,
    applied_at_ms            BIGINT,
    projected_monthly_saving DOUBLE PRECISION NOT NULL,
    body                     TEXT   NOT NULL
);
-- Per-tenant monthly caps and their actions (alert|degrade|throttle|deny).
CREATE TABLE IF NOT EXISTS cost_budgets (
    tenant        TEXT   NOT NULL PRIMARY KEY,
    soft_cap      DOUBLE PRECISION NOT NULL,
    hard_cap      DOUBLE PRECISION NOT NULL,
    soft_action   TEXT   NOT NULL,
    hard_action   TEXT   NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
-- The last computed state of each budget: what the bundle publishes.
CREATE TABLE IF NOT EXISTS cost_budget_state (
    tenant         TEXT   NOT NULL PRIMARY KEY,
    month          TEXT   NOT NULL,
    spent          DOUBLE PRECISION NOT NULL,
    action         TEXT   NOT NULL,
    computed_at_ms BIGINT NOT NULL
);
