-- Evidence retention for reviewers (per-tenant opt-in, off by default; evidence/ owns this
-- table): the question, context and response of a queued decision, encrypted with the control
-- plane's evidence key (ChaCha20-Poly1305, associated data = tenant and pcs_id), until the
-- decision is labelled or expires_at_ms passes. Never the WAL, never decision_log.
CREATE TABLE IF NOT EXISTS review_evidence (
    tenant        TEXT   NOT NULL,
    pcs_id        TEXT   NOT NULL,
    nonce         BLOB   NOT NULL,
    ciphertext    BLOB   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, pcs_id)
);
-- The periodic purge deletes by expiry.
CREATE INDEX IF NOT EXISTS review_evidence_expires ON review_evidence (expires_at_ms);
