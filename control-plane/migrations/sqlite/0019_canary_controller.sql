-- The canary controller (canary/ owns these tables). One row per deployment: the versions it
-- compares, its schedule (steps: [{weight, duration_ms}] as JSON), gates (JSON), the state
-- machine's position (status, step, when the step started and when it is due, when it was
-- paused), an operator's request the leader applies at its next tick (pause, resume, abort),
-- and revision, bumped by every write (compare-and-set: a write based on a stale read changes
-- nothing).
CREATE TABLE IF NOT EXISTS canary_deployments (
    id                 TEXT   NOT NULL PRIMARY KEY,
    name               TEXT   NOT NULL,
    control_version    TEXT   NOT NULL,
    canary_version     TEXT   NOT NULL,
    status             TEXT   NOT NULL CHECK (status IN
                           ('pending', 'running', 'paused', 'promoted', 'rolled_back', 'aborted')),
    current_step       BIGINT NOT NULL,
    steps              TEXT   NOT NULL,
    gates              TEXT   NOT NULL,
    min_requests       BIGINT NOT NULL,
    step_started_at_ms BIGINT,
    step_due_at_ms     BIGINT,
    paused_at_ms       BIGINT,
    requested          TEXT CHECK (requested IN ('pause', 'resume', 'abort')),
    last_check         TEXT,
    revision           BIGINT NOT NULL,
    created_at_ms      BIGINT NOT NULL,
    finished_at_ms     BIGINT
);
-- At most one deployment is active (pending, running or paused) at a time.
CREATE UNIQUE INDEX IF NOT EXISTS canary_deployments_one_active ON canary_deployments ((1))
    WHERE status IN ('pending', 'running', 'paused');
-- Every transition: kind (started, step, accelerated, held, paused, resumed, promoted,
-- rolled_back, aborted), the state it left and entered, the step and weight after it, the
-- reason and the gate values that decided it (JSON, NULL when no gate was evaluated).
CREATE TABLE IF NOT EXISTS canary_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id TEXT   NOT NULL REFERENCES canary_deployments (id),
    at_ms         BIGINT NOT NULL,
    kind          TEXT   NOT NULL,
    from_status   TEXT   NOT NULL,
    to_status     TEXT   NOT NULL,
    step          BIGINT NOT NULL,
    weight        DOUBLE PRECISION NOT NULL,
    reason        TEXT   NOT NULL,
    gates         TEXT
);
CREATE INDEX IF NOT EXISTS canary_events_deployment ON canary_events (deployment_id, id);
-- The policy simulator's runs: the policy it was asked about, the structured diff, the
-- replayed window, the result (predicted deltas, risk, breached SLOs, recommendation) as JSON,
-- and, once a canary of the same change has run, how close the prediction came.
CREATE TABLE IF NOT EXISTS policy_simulations (
    id             TEXT   NOT NULL PRIMARY KEY,
    policy_id      TEXT   NOT NULL,
    diff           TEXT   NOT NULL,
    result         TEXT   NOT NULL,
    recommendation TEXT   NOT NULL CHECK (recommendation IN ('approve', 'review', 'reject')),
    created_at_ms  BIGINT NOT NULL,
    applied_at_ms  BIGINT,
    accuracy       TEXT
);
CREATE INDEX IF NOT EXISTS policy_simulations_policy ON policy_simulations (policy_id, created_at_ms);
