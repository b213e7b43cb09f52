-- The canary alias (registry/ owns these tables): model_aliases holds it like the champion and
-- the challenger, with its weight; arm_key says what its consistent hash is keyed by ('tenant':
-- sticky per tenant, the default; 'request': tenant/pcs_id). NULL for the other aliases, which
-- have none of their own (the challenger split follows the bundle's policy).
ALTER TABLE model_aliases ADD COLUMN arm_key TEXT CHECK (arm_key IN ('tenant', 'request'));
-- Every canary move records the key it left the alias with (NULL for the other aliases and on
-- removal).
ALTER TABLE alias_history ADD COLUMN arm_key TEXT CHECK (arm_key IN ('tenant', 'request'));
