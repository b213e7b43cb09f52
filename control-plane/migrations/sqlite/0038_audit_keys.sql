-- Retired audit-checkpoint signing keys (audit/keyring.rs): public halves only, never a
-- private key. Insert-only. A row is trusted only when `endorsement` (standard base64 Ed25519,
-- by the successor key, over the retirement message of docs/AUDIT.md) verifies with a key
-- already trusted, starting from the control plane's current key.
CREATE TABLE IF NOT EXISTS audit_keys (
    key_id           TEXT   NOT NULL PRIMARY KEY,
    public_key       TEXT   NOT NULL,
    retired_at_ms    BIGINT NOT NULL,
    successor_key_id TEXT   NOT NULL,
    endorsement      TEXT   NOT NULL
);
