-- Task-aware models (registry/ owns this table): a registered model's per-task children, for
-- every tenant (tenant '') or for one tenant. A bundle whose champion is `parent_version`
-- carries its children as the champion arm's task models, so promoting or rolling back the
-- champion moves them with it.
CREATE TABLE IF NOT EXISTS model_task_children (
    parent_version TEXT   NOT NULL REFERENCES models (version),
    tenant         TEXT   NOT NULL DEFAULT '',
    task           TEXT   NOT NULL
        CHECK (task IN ('qa', 'dialogue', 'summarization', 'rag', 'other')),
    child_version  TEXT   NOT NULL REFERENCES models (version),
    created_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (parent_version, tenant, task)
);
