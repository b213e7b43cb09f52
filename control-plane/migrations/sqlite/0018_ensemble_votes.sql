-- The ensemble's votes as decided (pipeline): the gate's EnsembleSummary (policy_id, verdict,
-- every vote with its outcome, confidence and reason) as compact JSON, from the VerifyResult it
-- forwarded (also sent as x-kakeya-votes). NULL when the tenant had no ensemble policy.
ALTER TABLE decision_log ADD COLUMN votes TEXT;
-- Audit events of ensemble disagreements: a fresh decision whose votes fell on both sides
-- ('split') or where a strategy abstained under a policy ('abstention'). One per decision
-- (record_id), written with its decision-log row, never updated.
CREATE TABLE IF NOT EXISTS ensemble_disagreements (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id     TEXT   NOT NULL UNIQUE,
    tenant        TEXT   NOT NULL,
    pcs_id        TEXT   NOT NULL,
    policy_id     TEXT   NOT NULL,
    verdict       TEXT   NOT NULL CHECK (verdict IN ('accept', 'escalate', 'reject')),
    kind          TEXT   NOT NULL CHECK (kind IN ('split', 'abstention')),
    votes         TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS ensemble_disagreements_tenant_id ON ensemble_disagreements (tenant, id);
