-- Canaries per target (canary/ owns this; issue 7). One active deployment per target instead of
-- one overall: the scoring canary (target NULL, the registry's `canary` alias) and each upstream
-- route (`upstream:<name>`) independently.
DROP INDEX IF EXISTS canary_deployments_one_active;
CREATE UNIQUE INDEX IF NOT EXISTS canary_deployments_one_active_per_target
    ON canary_deployments ((COALESCE(target, '')))
    WHERE status IN ('pending', 'running', 'paused');
-- Which of an upstream route's two clusters serves as its stable one: `stable` as rendered, or
-- `canary` once a canary of the route was promoted (blue/green: the promoted cluster is the
-- route's stable one at weight 0 for the other, whose backend takes the next canary).
ALTER TABLE upstream_weights ADD COLUMN stable_cluster TEXT NOT NULL DEFAULT 'stable'
    CHECK (stable_cluster IN ('stable', 'canary'));
-- The policy simulator joins a window's decisions with their labels on (tenant, pcs_id). With
-- bound parameters and no statistics SQLite chose decision_log_tenant_created for that join
-- (every decision of the tenant in the window per label: quadratic, > 12 min for a million
-- decisions). This index serves the join with both keys and the window; it covers every
-- (tenant, pcs_id) lookup the narrower decision_log_tenant_pcs served, which it replaces.
CREATE INDEX IF NOT EXISTS decision_log_tenant_pcs_created
    ON decision_log (tenant, pcs_id, created_at_ms);
DROP INDEX IF EXISTS decision_log_tenant_pcs;
