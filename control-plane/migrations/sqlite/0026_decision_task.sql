-- The task kind of each decision (enseval, issue 14): `qa`, `dialogue`, `summarization`, `rag`
-- or `other`, from the PCS's signed evidence (NULL when it carries none, or no task). Per-task
-- figures and the tuner read it; GET /v1/decisions returns it.
ALTER TABLE decision_log ADD COLUMN task TEXT;
CREATE INDEX IF NOT EXISTS decision_log_tenant_task ON decision_log (tenant, task);
