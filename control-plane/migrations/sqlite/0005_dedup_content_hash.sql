-- Idempotency by content: the SHA-256 of the first submission's canonical signed payload
-- (kakeya_core::ids::content_sha256). A later submission with the same (tenant, pcs_id) gets the
-- stored answer only when its hash is equal; otherwise 409 idempotency_conflict. Nullable: rows
-- written before this migration have no hash and keep answering with their stored result.
ALTER TABLE pcs_dedup ADD COLUMN content_sha256 TEXT;
