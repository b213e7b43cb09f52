//! The audit sample: a configurable share of *accepted, non-escalated* decisions is also queued
//! for review (`decision_log.audit_sample = 1`, migration 0009), so labels are not drawn only
//! from what the model already flagged; otherwise retraining would learn only from its own
//! escalations and never see the answers it let through.
//!
//! The choice is a hash of (tenant, pcs_id), not a random draw: WAL replay, which re-applies
//! the same records, reaches the same choice, a resubmission of one PCS is sampled or not as
//! its first submission was, and the share is the rate exactly in expectation (the position
//! is uniform on [0, 1) with 2⁻⁵³ steps). The hash is SHA-256 under its own domain tag, so the
//! sample is independent of the A/B arm, which hashes `tenant/pcs_id` with FNV
//! (`kakeya_core::bundle::bucket`): reusing that hash would put every sampled decision on the
//! challenger arm whenever its weight exceeds the rate.

use sha2::{Digest, Sha256};

/// Default of `[review] audit_sample_rate` (`KAKEYA_AUDIT_SAMPLE_RATE`).
pub const DEFAULT_AUDIT_SAMPLE_RATE: f64 = 0.02;

const DOMAIN: &[u8] = b"kakeya-audit-sample-v1";

/// Position of (tenant, pcs_id) in [0, 1).
pub fn position(tenant: &str, pcs_id: &str) -> f64 {
    // Tenants are [A-Za-z0-9_-], so a NUL separator keeps (tenant, pcs_id) pairs apart.
    let d = Sha256::new()
        .chain_update(DOMAIN)
        .chain_update([0])
        .chain_update(tenant.as_bytes())
        .chain_update([0])
        .chain_update(pcs_id.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether a decision is drawn into the audit sample at `rate` (within [0, 1]): accepted, not
/// escalated (escalated ones are queued anyway), and its position below the rate.
pub fn sampled(rate: f64, tenant: &str, pcs_id: &str, accepted: bool, escalated: bool) -> bool {
    accepted && !escalated && position(tenant, pcs_id) < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over 20,000 synthetic ids the share is within 4 standard deviations of the rate
    /// (binomial: σ = √(p(1−p)/n), 0.099 percentage points at p = 0.02), and stable.
    #[test]
    fn the_share_follows_the_rate() {
        let n = 20_000;
        let ids: Vec<String> = (0..n)
            .map(|i| kakeya_core::ids::sha256_hex(format!("pcs-{i}").as_bytes()))
            .collect();
        for rate in [0.02, 0.1, 0.5] {
            let hits = ids
                .iter()
                .enumerate()
                .filter(|(i, id)| sampled(rate, &format!("tenant-{}", i % 7), id, true, false))
                .count();
            let share = hits as f64 / n as f64;
            let sigma = (rate * (1.0 - rate) / n as f64).sqrt();
            assert!(
                (share - rate).abs() <= 4.0 * sigma,
                "rate {rate}: share {share} (σ {sigma})"
            );
        }
        let count = |rate: f64| {
            ids.iter()
                .filter(|id| sampled(rate, "acme", id, true, false))
                .count()
        };
        assert_eq!(count(0.0), 0);
        assert_eq!(count(1.0), n);
        // Deterministic, and a higher rate keeps every decision a lower one sampled.
        assert_eq!(count(0.02), count(0.02));
        assert!(ids
            .iter()
            .filter(|id| sampled(0.02, "acme", id, true, false))
            .all(|id| sampled(0.05, "acme", id, true, false)));
    }

    #[test]
    fn only_accepted_non_escalated_decisions_and_independent_of_the_arm() {
        assert!(sampled(1.0, "a", "p", true, false));
        assert!(!sampled(1.0, "a", "p", true, true));
        assert!(!sampled(1.0, "a", "p", false, false));
        // The tenant is part of the key.
        let ids: Vec<String> = (0..2000).map(|i| format!("id-{i}")).collect();
        assert!(ids.iter().any(|id| position("a", id) != position("b", id)));
        // Among sampled ids, the arm hash (challenger below 0.5) splits about evenly.
        let sampled_ids: Vec<&String> = ids
            .iter()
            .filter(|id| position("default", id) < 0.25)
            .collect();
        let challenger = sampled_ids
            .iter()
            .filter(|id| kakeya_core::bundle::bucket(&format!("default/{id}")) < 0.5)
            .count() as f64
            / sampled_ids.len() as f64;
        assert!((challenger - 0.5).abs() < 0.08, "{challenger}");
    }
}
