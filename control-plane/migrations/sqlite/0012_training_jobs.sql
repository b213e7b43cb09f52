-- Training jobs (learn/jobs.rs): queued by POST /v1/hrs/train, claimed by one runner with a
-- conditional UPDATE (status 'queued' → 'running'), finished as 'succeeded' (result JSON, the
-- registered model_version) or 'failed' (error JSON {code, error, ...counts}). A running job
-- writes progress (0..1) and heartbeat_at_ms every second; one whose heartbeat is stale was
-- interrupted (its process died) and is marked failed by the next runner sweep.
-- params: JSON {start_time, end_time, start_ms, end_ms, model_kind, seed}.
CREATE TABLE IF NOT EXISTS training_jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    status          TEXT   NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    progress        DOUBLE PRECISION NOT NULL DEFAULT 0,
    params          TEXT   NOT NULL,
    result          TEXT,
    error           TEXT,
    model_version   TEXT,
    created_at_ms   BIGINT NOT NULL,
    started_at_ms   BIGINT,
    finished_at_ms  BIGINT,
    heartbeat_at_ms BIGINT
);
-- The runner's claim (oldest queued) and sweep (running) read by status.
CREATE INDEX IF NOT EXISTS training_jobs_status_id ON training_jobs (status, id);
-- Datasets read a time range of the decision log.
CREATE INDEX IF NOT EXISTS decision_log_created_at ON decision_log (created_at_ms);
