-- Labels: one per (decision, labeller), immutable once written (review/ owns this table).
-- A label is about a decision (tenant, pcs_id) of decision_log; source says who produced it
-- (gold: human review, silver: owner feedback, bronze: weak rule), confidence follows from it.
CREATE TABLE IF NOT EXISTS labels (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant        TEXT   NOT NULL,
    pcs_id        TEXT   NOT NULL,
    labeller      TEXT   NOT NULL,
    source        TEXT   NOT NULL CHECK (source IN ('gold', 'silver', 'bronze')),
    label         TEXT   NOT NULL CHECK (label IN ('hallucinated', 'faithful')),
    confidence    DOUBLE PRECISION NOT NULL,
    comment       TEXT,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (tenant, pcs_id, labeller)
);
-- A label must name a logged decision: looked up by (tenant, pcs_id) on every write.
CREATE INDEX IF NOT EXISTS decision_log_tenant_pcs ON decision_log (tenant, pcs_id);
-- The review queue pages through escalated decisions, newest (highest id) first.
CREATE INDEX IF NOT EXISTS decision_log_escalated_id ON decision_log (escalated, id);
