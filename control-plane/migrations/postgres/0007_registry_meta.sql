-- Registry facts recorded once per database (key/value). `model_signatures_backfilled`: the
-- one-time signing of model rows registered before migration 0004 (NULL signature) is done;
-- from then on an unsigned or badly signed model row is an integrity failure, never signed.
-- A database with no unsigned row when it reaches this migration needs no backfill at all.
CREATE TABLE registry_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
INSERT INTO registry_meta (key, value, updated_at_ms)
SELECT 'model_signatures_backfilled', 'no unsigned model row at migration 0007', 0
WHERE NOT EXISTS (SELECT 1 FROM models WHERE signature IS NULL);
