//! Prometheus metrics of the control plane (explicit registry, text exposition).
//!
//! Only what this process observes is exported here. Signature failures happen in the gate
//! filter and appear in Envoy's stats as `kakeya_gate_*{tenant=...}`, not here: a counter
//! that nothing increments would be a lie.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub ingest_total: IntCounterVec,
    pub accepted_total: IntCounterVec,
    pub escalated_total: IntCounterVec,
    pub dedup_hits_total: IntCounterVec,
    pub idempotency_conflicts_total: IntCounterVec,
    pub wal_errors_total: IntCounterVec,
    /// `kakeya_feature_rejects_total{reason}`: forwarded feature vectors not stored
    /// ([`crate::decision_features`]); the decision itself is stored.
    pub feature_rejects_total: IntCounterVec,
    pub evidence_retained_total: IntCounterVec,
    pub evidence_retention_errors_total: IntCounterVec,
    pub wal_fsync_seconds: Histogram,
    pub wal_batch_size: Histogram,
    pub ingest_duration_seconds: HistogramVec,
    /// `kakeya_leader{lease}`: 1 while this replica holds the lease (runs its job), else 0
    /// (see `crate::lease`).
    pub leader: IntGaugeVec,
    /// `kakeya_cost_*` ([`crate::cost::metrics`]).
    pub cost: crate::cost::metrics::CostMetrics,
    /// `kakeya_anomaly_*` ([`crate::anomaly::metrics`]).
    pub anomaly: crate::anomaly::metrics::AnomalyMetrics,
}

/// `kakeya_registry_integrity_failures_total{what="model"|"bundle"}`: stored registry rows
/// refused because they are not what the registry wrote (see `registry::IntegrityError`).
/// Process-wide, because the registry also runs in CLI commands with no [`Metrics`]; every
/// [`Metrics`] registry exports it.
pub fn integrity_failures_total() -> &'static IntCounterVec {
    static C: std::sync::OnceLock<IntCounterVec> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        IntCounterVec::new(
            Opts::new(
                "kakeya_registry_integrity_failures_total",
                "Stored model or bundle rows refused by the registry's integrity check \
                 (SHA-256, version or signature mismatch)",
            ),
            &["what"],
        )
        .expect("a valid metric name and label")
    })
}

fn counter(reg: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), &["tenant"])?;
    reg.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let wal_fsync_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "kakeya_wal_fsync_seconds",
                "Latency of one WAL fsync (one per group-commit batch)",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        )?;
        registry.register(Box::new(wal_fsync_seconds.clone()))?;
        let wal_batch_size = Histogram::with_opts(
            HistogramOpts::new("kakeya_wal_batch_size", "Records per group-commit batch").buckets(
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
            ),
        )?;
        registry.register(Box::new(wal_batch_size.clone()))?;
        let ingest_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "kakeya_ingest_duration_seconds",
                "Time from request to answer on the ingest listener",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["tenant"],
        )?;
        registry.register(Box::new(ingest_duration_seconds.clone()))?;
        registry.register(Box::new(integrity_failures_total().clone()))?;
        crate::audit::metrics::register(&registry)?;
        registry.register(Box::new(
            crate::registry::task_models::attached_total().clone(),
        ))?;
        registry.register(Box::new(crate::scheduler::runs_total().clone()))?;
        registry.register(Box::new(crate::scheduler::gate_checks_total().clone()))?;
        let feature_rejects_total = IntCounterVec::new(
            Opts::new(
                "kakeya_feature_rejects_total",
                "Feature vectors forwarded by the gate and not stored (unknown schema, wrong \
                 length, non-finite value, malformed encoding, or sent for an unscored \
                 decision); the decision is stored without them",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(feature_rejects_total.clone()))?;
        registry.register(Box::new(crate::evidence::decrypt_failures_total().clone()))?;
        crate::drift::register_metrics(&registry)?;
        crate::ensemble::register_metrics(&registry)?;
        crate::canary::register_metrics(&registry)?;
        crate::simulator::register_metrics(&registry)?;
        crate::kpi::metrics::register_metrics(&registry)?;
        let leader = IntGaugeVec::new(
            Opts::new(
                "kakeya_leader",
                "1 while this replica holds the background-job lease, else 0",
            ),
            &["lease"],
        )?;
        registry.register(Box::new(leader.clone()))?;
        let cost = crate::cost::metrics::CostMetrics::new(&registry)?;
        let anomaly = crate::anomaly::metrics::AnomalyMetrics::new(&registry)?;
        Ok(Metrics {
            cost,
            anomaly,
            ingest_total: counter(
                &registry,
                "kakeya_ingest_total",
                "Submissions received from the gate",
            )?,
            accepted_total: counter(
                &registry,
                "kakeya_accepted_total",
                "Fresh decisions accepted and not escalated",
            )?,
            escalated_total: counter(
                &registry,
                "kakeya_escalated_total",
                "Fresh decisions escalated",
            )?,
            dedup_hits_total: counter(
                &registry,
                "kakeya_dedup_hits_total",
                "Answers served from the dedup table",
            )?,
            idempotency_conflicts_total: counter(
                &registry,
                "kakeya_idempotency_conflicts_total",
                "Submissions refused with 409: their pcs_id is taken by other signed content",
            )?,
            wal_errors_total: counter(
                &registry,
                "kakeya_wal_errors_total",
                "Submissions refused because the WAL failed",
            )?,
            feature_rejects_total,
            evidence_retained_total: counter(
                &registry,
                "kakeya_evidence_retained_total",
                "Queued decisions whose evidence was stored encrypted for review (opted-in tenants)",
            )?,
            evidence_retention_errors_total: counter(
                &registry,
                "kakeya_evidence_retention_errors_total",
                "Queued decisions of opted-in tenants whose evidence could not be stored (the \
                 submission was answered all the same)",
            )?,
            wal_fsync_seconds,
            wal_batch_size,
            ingest_duration_seconds,
            leader,
            registry,
        })
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            return format!("# encode error: {e}\n");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
