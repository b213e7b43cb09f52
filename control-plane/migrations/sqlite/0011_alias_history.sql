-- Alias history: one row per alias move (registry/ owns this table), written in the transaction
-- that moves the alias and publishes the bundle, so the history never disagrees with the
-- bundles. new_version NULL = the alias was removed; previous_version NULL = it was unset.
-- actor: who moved it ('admin-api', 'cli:<os user>', 'scheduler', 'kakeya-serve',
-- 'migration-0011'); reason: 'manual' (an operator), 'gate' (the auto-deploy gate),
-- 'auto_revert' (the scheduler after a performance-drift alert), 'initial' (its first recorded
-- position: the default model at first start, or the alias as this migration found it).
-- Rows are never updated or deleted.
CREATE TABLE IF NOT EXISTS alias_history (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    alias            TEXT   NOT NULL,
    previous_version TEXT,
    new_version      TEXT,
    weight           DOUBLE PRECISION,
    actor            TEXT   NOT NULL,
    reason           TEXT   NOT NULL CHECK (reason IN ('manual', 'gate', 'auto_revert', 'initial')),
    comment          TEXT,
    bundle_version   BIGINT NOT NULL,
    created_at_ms    BIGINT NOT NULL
);
-- Pages of one alias's history, newest (highest id) first.
CREATE INDEX IF NOT EXISTS alias_history_alias_id ON alias_history (alias, id);
-- The history starts with the aliases as they are.
INSERT INTO alias_history
    (alias, previous_version, new_version, weight, actor, reason, comment, bundle_version,
     created_at_ms)
SELECT alias, NULL, version, weight, 'migration-0011', 'initial',
       'the alias as it stood when the history began',
       (SELECT COALESCE(MAX(version), 0) FROM bundles), updated_at_ms
FROM model_aliases ORDER BY alias DESC;
