-- Runs of the retraining scheduler (scheduler/ owns this table). A run trains a candidate on
-- the decisions of [started_at − train_window, started_at) through a training job (job_id),
-- then evaluates the auto-deploy gate against the champion. triggered_by: 'schedule' (the
-- leader's periodic run of the period that starts at period_start_ms, unique: one run per
-- period however many replicas or restarts) or 'manual' (POST /v1/hrs/scheduler/run,
-- kakeya hrs schedule run; period_start_ms NULL). status: 'running' (at most one at a time,
-- a unique partial index) then 'finished' with an outcome. A running run writes
-- heartbeat_at_ms; one whose heartbeat is stale was interrupted (its process died) and is
-- finished as 'interrupted' by the next sweep. params, gate, detail: JSON.
CREATE TABLE IF NOT EXISTS scheduler_runs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    triggered_by      TEXT   NOT NULL CHECK (triggered_by IN ('schedule', 'manual')),
    period_start_ms   BIGINT,
    status            TEXT   NOT NULL CHECK (status IN ('running', 'finished')),
    outcome           TEXT CHECK (outcome IN ('deployed', 'gate_passed', 'gate_failed',
                                              'dataset_error', 'training_failed', 'error',
                                              'interrupted')),
    params            TEXT   NOT NULL,
    job_id            BIGINT,
    candidate_version TEXT,
    champion_version  TEXT,
    gate              TEXT,
    detail            TEXT,
    started_at_ms     BIGINT NOT NULL,
    heartbeat_at_ms   BIGINT NOT NULL,
    finished_at_ms    BIGINT
);
-- One scheduled run per period (NULLs, the manual runs, are distinct).
CREATE UNIQUE INDEX IF NOT EXISTS scheduler_runs_period ON scheduler_runs (period_start_ms);
-- One run in progress at a time.
CREATE UNIQUE INDEX IF NOT EXISTS scheduler_runs_one_running
    ON scheduler_runs (status) WHERE status = 'running';
