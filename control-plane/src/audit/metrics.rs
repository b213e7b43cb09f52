//! `kakeya_audit_*`: process-wide, because appends also happen in CLI commands that have no
//! [`crate::metrics::Metrics`]; every `Metrics` registry exports them.

use prometheus::{IntCounter, IntCounterVec, Opts};
use std::sync::OnceLock;

/// `kakeya_audit_entries_total{kind}`: entries this process appended.
pub fn entries_total() -> &'static IntCounterVec {
    static C: OnceLock<IntCounterVec> = OnceLock::new();
    C.get_or_init(|| {
        IntCounterVec::new(
            Opts::new(
                "kakeya_audit_entries_total",
                "Audit-log entries appended by this process, by event kind",
            ),
            &["kind"],
        )
        .expect("a valid metric name and label")
    })
}

/// `kakeya_audit_checkpoints_total`: signed checkpoints this process sealed.
pub fn checkpoints_total() -> &'static IntCounter {
    static C: OnceLock<IntCounter> = OnceLock::new();
    C.get_or_init(|| {
        IntCounter::new(
            "kakeya_audit_checkpoints_total",
            "Audit-log segments sealed with a signed checkpoint by this process",
        )
        .expect("a valid metric name")
    })
}

/// `kakeya_audit_verify_failures_total`: verifications that found a broken chain or checkpoint.
pub fn verify_failures_total() -> &'static IntCounter {
    static C: OnceLock<IntCounter> = OnceLock::new();
    C.get_or_init(|| {
        IntCounter::new(
            "kakeya_audit_verify_failures_total",
            "Audit-log verifications that found a broken link or a bad checkpoint",
        )
        .expect("a valid metric name")
    })
}

/// Registers the three in `reg` (each [`crate::metrics::Metrics`]).
pub fn register(reg: &prometheus::Registry) -> prometheus::Result<()> {
    reg.register(Box::new(entries_total().clone()))?;
    reg.register(Box::new(checkpoints_total().clone()))?;
    reg.register(Box::new(verify_failures_total().clone()))
}
