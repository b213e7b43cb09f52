-- Canaries of upstream routes (canary/ owns this; issue 7). `target` of a deployment: NULL for a
-- scoring canary (a registered model), `upstream:<route>` for an upstream route's canary
-- cluster. `upstream_base`: Envoy's cumulative per-cluster counters (summed over the Envoys)
-- when the run and the current step started, JSON, so a step's window is a difference of two
-- scrapes and survives a control-plane restart.
ALTER TABLE canary_deployments ADD COLUMN target TEXT;
ALTER TABLE canary_deployments ADD COLUMN upstream_base TEXT;
-- The canary weight of each upstream route, carried in every published bundle (`upstreams`):
-- written only by the canary controller; a route without a row sends everything to stable.
CREATE TABLE IF NOT EXISTS upstream_weights (
    name          TEXT   NOT NULL PRIMARY KEY,
    canary_weight DOUBLE PRECISION NOT NULL,
    arm_key       TEXT   NOT NULL CHECK (arm_key IN ('tenant', 'request')),
    updated_at_ms BIGINT NOT NULL
);
