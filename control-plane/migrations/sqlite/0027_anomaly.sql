-- Anomaly detection (issue 9; anomaly/ owns these columns and tables).
--
-- The decision log's anomaly columns, filled by inline scoring (NULL while a decision was not
-- scored): the detector's score in [0, 1] (the ECDF of held-out normal traffic), its
-- uncertainty, the feature vector in the anomaly schema's order (JSON array) and that schema.
-- anomaly_action says what the gate did with the score:
--   none      the score was below the tenant's threshold (whatever the mode);
--   shadow    at or above the threshold in shadow mode: recorded only, the answer unchanged;
--   guardrail at or above the threshold in guardrail mode: a vote in the ensemble;
--   blocked   refused with code anomaly_blocked.
-- A decision is *flagged* when its action is shadow, guardrail or blocked (clusters use these).
-- anomaly_queued marks decisions the active-learning job sent to the review queue
-- (queued_for anomaly_uncertain).
ALTER TABLE decision_log ADD COLUMN anomaly_score DOUBLE PRECISION;
ALTER TABLE decision_log ADD COLUMN anomaly_uncertainty DOUBLE PRECISION;
ALTER TABLE decision_log ADD COLUMN anomaly_action TEXT
    CHECK (anomaly_action IN ('none', 'shadow', 'guardrail', 'blocked'));
ALTER TABLE decision_log ADD COLUMN anomaly_features TEXT;
ALTER TABLE decision_log ADD COLUMN anomaly_schema TEXT;
ALTER TABLE decision_log ADD COLUMN anomaly_queued BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS decision_log_anomaly_action ON decision_log (anomaly_action, id);

-- Feedback on anomaly scores: one per (tenant, pcs_id, submitted_by), never changed. source is
-- the label store's vocabulary (gold: a reviewer, silver: the agent's owner, bronze: a rule);
-- predicted_score is the score the optimiser uses (the decision's recorded score when it has one).
CREATE TABLE IF NOT EXISTS anomaly_feedback (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant          TEXT   NOT NULL,
    pcs_id          TEXT   NOT NULL,
    submitted_by    TEXT   NOT NULL,
    source          TEXT   NOT NULL CHECK (source IN ('gold', 'silver', 'bronze')),
    user_label      TEXT   NOT NULL CHECK (user_label IN ('anomalous', 'normal')),
    predicted_score DOUBLE PRECISION NOT NULL,
    comment         TEXT,
    created_at_ms   BIGINT NOT NULL,
    UNIQUE (tenant, pcs_id, submitted_by)
);
CREATE INDEX IF NOT EXISTS anomaly_feedback_tenant ON anomaly_feedback (tenant, id);

-- Every threshold the optimiser chose (or failed to: feasible = 0), newest last; the current
-- threshold of a tenant is its newest feasible row. origin: api, cli or feedback (every 100 new
-- labels).
CREATE TABLE IF NOT EXISTS anomaly_thresholds (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant        TEXT   NOT NULL,
    threshold     DOUBLE PRECISION NOT NULL,
    fpr           DOUBLE PRECISION NOT NULL,
    tpr           DOUBLE PRECISION NOT NULL,
    feasible      BIGINT NOT NULL,
    target_fpr    DOUBLE PRECISION NOT NULL,
    n_labels      BIGINT NOT NULL,
    origin        TEXT   NOT NULL CHECK (origin IN ('api', 'cli', 'feedback')),
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS anomaly_thresholds_tenant ON anomaly_thresholds (tenant, id);

-- Clusters of flagged decisions (k-means++ rebuilds, then online assignment): the centroid in
-- raw feature units (JSON array in the schema's order), its rule label, how many decisions it
-- holds and when the first and the last of them were decided.
CREATE TABLE IF NOT EXISTS anomaly_clusters (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    feature_schema TEXT NOT NULL,
    label         TEXT   NOT NULL,
    centroid      TEXT   NOT NULL,
    sample_count  BIGINT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms  BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
