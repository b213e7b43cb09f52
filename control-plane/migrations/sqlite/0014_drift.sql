-- Drift monitoring (drift/ owns these tables; registry/reference.rs writes drift_references).
-- drift_references: the training reference of a model version trained with its data (per
-- feature PSI bins and a bounded quantile sample for KS; ml/drift_reference.rs), its canonical
-- JSON and the SHA-256 of those bytes, which the version's model card also records. Uploaded
-- artifacts have none. Written once, never updated.
CREATE TABLE IF NOT EXISTS drift_references (
    model_version TEXT   NOT NULL PRIMARY KEY REFERENCES models (version),
    sha256        TEXT   NOT NULL,
    reference     TEXT   NOT NULL,
    n             BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
-- One row per drift check (the route, the CLI or the periodic job): its window
-- [since_ms, until_ms), who ran it, the outcome and the whole report (JSON).
CREATE TABLE IF NOT EXISTS drift_checks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at_ms BIGINT NOT NULL,
    since_ms      BIGINT NOT NULL,
    until_ms      BIGINT NOT NULL,
    actor         TEXT   NOT NULL,
    outcome       TEXT   NOT NULL CHECK (outcome IN ('ok', 'drift', 'insufficient_data')),
    report        TEXT   NOT NULL
);
-- The alerts a check raised. test: 'ks' (statistic D, p_value the BH-adjusted p, threshold q),
-- 'psi' (statistic PSI, threshold the level crossed) or 'auroc' (statistic the rolling AUROC,
-- p_value the DeLong test against the card's, threshold card AUROC − allowed drop). action:
-- what the auto-revert did about a performance alert of the champion (NULL: nothing to do).
CREATE TABLE IF NOT EXISTS drift_alerts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    check_id      BIGINT NOT NULL REFERENCES drift_checks (id),
    created_at_ms BIGINT NOT NULL,
    alert_type    TEXT   NOT NULL CHECK (alert_type IN ('feature_drift', 'performance_drift')),
    test          TEXT   NOT NULL CHECK (test IN ('ks', 'psi', 'auroc')),
    model_version TEXT   NOT NULL,
    alias         TEXT   NOT NULL,
    feature       TEXT,
    statistic     DOUBLE PRECISION NOT NULL,
    p_value       DOUBLE PRECISION,
    threshold     DOUBLE PRECISION NOT NULL,
    severity      TEXT   NOT NULL CHECK (severity IN ('warning', 'critical')),
    action        TEXT,
    action_detail TEXT
);
CREATE INDEX IF NOT EXISTS drift_alerts_created ON drift_alerts (created_at_ms, id);
-- Auto-reverts: at most one per champion position (champion_move_id = the alias_history row
-- that made the reverted version champion), so concurrent checks on several replicas never
-- revert twice. outcome 'reverted' (to_version, the publication's bundle and history row) or
-- 'nothing_to_revert' (no last good champion: recorded, nothing moved).
CREATE TABLE IF NOT EXISTS drift_reverts (
    champion_move_id BIGINT NOT NULL PRIMARY KEY,
    alert_id         BIGINT NOT NULL REFERENCES drift_alerts (id),
    from_version     TEXT   NOT NULL,
    to_version       TEXT,
    outcome          TEXT   NOT NULL CHECK (outcome IN ('pending', 'reverted', 'nothing_to_revert')),
    bundle_version   BIGINT,
    history_id       BIGINT,
    created_at_ms    BIGINT NOT NULL
);
-- A check reads one model's decisions of a time window.
CREATE INDEX IF NOT EXISTS decision_log_model_time ON decision_log (model_version, created_at_ms);
