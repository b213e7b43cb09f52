-- cost_daily: cost_records summed per (tenant, day, arm, model_version), kept by
-- cost::record::insert in the decision's transaction (only when its record is new), so a
-- roll-up, reconciliation or forecast reads tenants x days rows instead of every decision.
-- arm and model_version are '' for unscored decisions (a primary key has no NULLs).
CREATE TABLE IF NOT EXISTS cost_daily (
    tenant             TEXT   NOT NULL,
    day                BIGINT NOT NULL,
    arm                TEXT   NOT NULL,
    model_version      TEXT   NOT NULL,
    decisions          BIGINT NOT NULL,
    trusted            BIGINT NOT NULL,
    request_bytes      BIGINT NOT NULL,
    response_bytes     BIGINT NOT NULL,
    wal_bytes          BIGINT NOT NULL,
    decision_log_bytes BIGINT NOT NULL,
    filter_cpu_ns      BIGINT NOT NULL,
    model_calls        BIGINT NOT NULL,
    PRIMARY KEY (tenant, day, arm, model_version)
);
CREATE INDEX IF NOT EXISTS cost_daily_day ON cost_daily (day);
-- The records written before this migration.
INSERT INTO cost_daily (tenant, day, arm, model_version, decisions, trusted, request_bytes,
    response_bytes, wal_bytes, decision_log_bytes, filter_cpu_ns, model_calls)
SELECT tenant, day, COALESCE(arm, ''), COALESCE(model_version, ''), COUNT(*), SUM(trusted),
    SUM(request_bytes), SUM(response_bytes), SUM(wal_bytes), SUM(decision_log_bytes),
    COALESCE(SUM(filter_cpu_ns), 0), COALESCE(SUM(model_calls), 0)
FROM cost_records GROUP BY tenant, day, COALESCE(arm, ''), COALESCE(model_version, '');
