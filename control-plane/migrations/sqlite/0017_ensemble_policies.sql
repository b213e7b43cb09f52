-- Adaptive per-tenant ensemble policies (ensemble/ owns these tables). policy: the JSON of a
-- kakeya_core::ensemble_policy::EnsemblePolicy as published in bundle.ensemble.tenants.
-- arm_propensities: JSON {policy_id: probability} of the Thompson draw that chose it (the
-- logging policy of the off-policy replay; {policy_id: 1} for a policy set by hand).
CREATE TABLE IF NOT EXISTS ensemble_policies (
    tenant           TEXT   NOT NULL PRIMARY KEY,
    policy_id        TEXT   NOT NULL,
    policy           TEXT   NOT NULL,
    arm_propensities TEXT   NOT NULL,
    run_id           BIGINT,
    updated_at_ms    BIGINT NOT NULL
);
-- Every change of a tenant's policy, with why (reason: tuned | manual | removed).
CREATE TABLE IF NOT EXISTS ensemble_policy_history (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant        TEXT   NOT NULL,
    policy_id     TEXT,
    policy        TEXT,
    reason        TEXT   NOT NULL CHECK (reason IN ('tuned', 'manual', 'removed')),
    run_id        BIGINT,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS ensemble_policy_history_tenant ON ensemble_policy_history (tenant, id);
-- Tuning runs: triggered_by api | schedule; outcome published | refused | insufficient_data |
-- error; labelled: labelled outcomes at the start of the run (the cadence counts from it);
-- report: JSON (arms, posterior, chosen arm, IPS/SNIPS estimates, stack).
CREATE TABLE IF NOT EXISTS ensemble_tune_runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant         TEXT   NOT NULL,
    triggered_by   TEXT   NOT NULL CHECK (triggered_by IN ('api', 'schedule')),
    outcome        TEXT   NOT NULL CHECK (outcome IN ('published', 'refused', 'insufficient_data',
                                                      'error')),
    labelled       BIGINT NOT NULL,
    policy_id      TEXT,
    report         TEXT   NOT NULL,
    started_at_ms  BIGINT NOT NULL,
    finished_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS ensemble_tune_runs_tenant ON ensemble_tune_runs (tenant, id);
-- Per-decision strategy outcomes (POST /v1/ensemble/feedback): one row per decision of the
-- decision log, the latest feedback wins. votes: JSON [{strategy_name, accepted, confidence}].
-- policy_id, decision, propensity: the serving policy, what it decided on these votes and the
-- probability that the logging policy (the Thompson mixture of arm_propensities) decides so.
CREATE TABLE IF NOT EXISTS ensemble_outcomes (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant        TEXT   NOT NULL,
    pcs_id        TEXT   NOT NULL,
    agreed        BIGINT NOT NULL,
    votes         TEXT   NOT NULL,
    policy_id     TEXT,
    decision      TEXT   NOT NULL CHECK (decision IN ('accept', 'escalate', 'reject')),
    propensity    DOUBLE PRECISION NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (tenant, pcs_id)
);
