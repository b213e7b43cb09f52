-- Ed25519 signature (standard base64) of the SHA-256 digest of each model artifact's canonical
-- bytes, by the control plane's bundle signing key. Nullable: rows registered before this
-- migration are signed by `kakeya serve` at start.
ALTER TABLE models ADD COLUMN signature TEXT;
