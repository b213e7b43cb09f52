-- Features as decided: the feature vector the gate scored this decision with, so training reads
-- it exactly as it was at decision time and never recomputes it with a newer schema.
-- feature_schema is core::features::SCHEMA_VERSION of the gate ('hrs-features-v1'); features is
-- a JSON array of finite numbers, in that schema's order (validated by the control plane before
-- it is stored). Both NULL when the decision was not scored. Never raw evidence.
ALTER TABLE decision_log ADD COLUMN feature_schema TEXT;
ALTER TABLE decision_log ADD COLUMN features TEXT;
-- 1 when an accepted decision was drawn into the review queue by the audit sample, so labels
-- are not only drawn from what the model already flagged (0/1 like the other flags).
ALTER TABLE decision_log ADD COLUMN audit_sample BIGINT NOT NULL DEFAULT 0;
