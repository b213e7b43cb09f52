-- The PCS version of each decision ('0.2' when the PCS bound its evidence by evidence_sha256,
-- '0.1' otherwise; core::features::pcs_version). Tenant statistics are kept per version, from
-- '0.2' rows only; rows from before this migration (NULL) are left out of them.
ALTER TABLE decision_log ADD COLUMN pcs_version TEXT;
