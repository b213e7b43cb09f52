-- Tenant statistics of every bundle publication read each tenant's recent decision log by
-- (tenant, created_at_ms); without this index each publication scans the whole table.
CREATE INDEX IF NOT EXISTS decision_log_tenant_created ON decision_log (tenant, created_at_ms);
