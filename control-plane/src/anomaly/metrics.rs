//! `kakeya_anomaly_*` metrics.
//!
//! The feedback counter, the rates, the threshold and the cluster count move here, from stored
//! labels (every feedback, optimisation and confusion request refreshes the tenant's gauges).
//! `flagged_total`, `blocked_total` and the score histogram are registered now so dashboards
//! can use them; the control plane's ingest increments them for each scored decision with
//! [`AnomalyMetrics::observe_decision`] once inline scoring records scores. Their `tenant` label
//! is the gate's tenant header, as for `kakeya_ingest_total`: the gate only forwards tenants of
//! its keyring (or `default`), so the label is bounded by the keyring; `cluster` is a rule label
//! of [`super::cluster::RULES`] (or `mixed_anomaly`, `none`), a fixed set.

use super::threshold::Confusion;
use super::Action;
use prometheus::{GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct AnomalyMetrics {
    /// `kakeya_anomaly_feedback_total{source,label}`.
    pub feedback_total: IntCounterVec,
    /// `kakeya_anomaly_fpr{tenant}`, from labels at the current threshold.
    pub fpr: GaugeVec,
    /// `kakeya_anomaly_tpr{tenant}`, from labels at the current threshold.
    pub tpr: GaugeVec,
    /// `kakeya_anomaly_threshold{tenant}`: the current threshold.
    pub threshold: GaugeVec,
    /// `kakeya_anomaly_clusters`: stored clusters.
    pub clusters: IntGauge,
    /// `kakeya_anomaly_flagged_total{tenant,cluster}`.
    pub flagged_total: IntCounterVec,
    /// `kakeya_anomaly_blocked_total{tenant,cluster}`.
    pub blocked_total: IntCounterVec,
    /// `kakeya_anomaly_score`: scores of scored decisions.
    pub score: Histogram,
}

impl AnomalyMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<AnomalyMetrics> {
        let feedback_total = IntCounterVec::new(
            Opts::new(
                "kakeya_anomaly_feedback_total",
                "Anomaly feedback stored, by source (gold, silver, bronze) and label \
                 (anomalous, normal)",
            ),
            &["source", "label"],
        )?;
        let gauge = |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), &["tenant"]);
        let fpr = gauge(
            "kakeya_anomaly_fpr",
            "Share of labelled normal decisions at or above the tenant's current anomaly threshold",
        )?;
        let tpr = gauge(
            "kakeya_anomaly_tpr",
            "Share of labelled anomalous decisions at or above the tenant's current anomaly threshold",
        )?;
        let threshold = gauge(
            "kakeya_anomaly_threshold",
            "The tenant's current anomaly threshold (newest feasible optimisation)",
        )?;
        let clusters = IntGauge::new(
            "kakeya_anomaly_clusters",
            "Stored clusters of flagged anomalies",
        )?;
        let per_cluster = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["tenant", "cluster"])
        };
        let flagged_total = per_cluster(
            "kakeya_anomaly_flagged_total",
            "Decisions whose anomaly score reached the threshold (shadow, guardrail or blocked)",
        )?;
        let blocked_total = per_cluster(
            "kakeya_anomaly_blocked_total",
            "Decisions refused with anomaly_blocked",
        )?;
        let score = Histogram::with_opts(
            HistogramOpts::new(
                "kakeya_anomaly_score",
                "Anomaly scores of scored decisions (ECDF of normal traffic, 0..1)",
            )
            .buckets(vec![
                0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0,
            ]),
        )?;
        registry.register(Box::new(feedback_total.clone()))?;
        registry.register(Box::new(fpr.clone()))?;
        registry.register(Box::new(tpr.clone()))?;
        registry.register(Box::new(threshold.clone()))?;
        registry.register(Box::new(clusters.clone()))?;
        registry.register(Box::new(flagged_total.clone()))?;
        registry.register(Box::new(blocked_total.clone()))?;
        registry.register(Box::new(score.clone()))?;
        Ok(AnomalyMetrics {
            feedback_total,
            fpr,
            tpr,
            threshold,
            clusters,
            flagged_total,
            blocked_total,
            score,
        })
    }

    /// The tenant's gauges from its confusion matrix at the current threshold (a rate without
    /// labels of its class is removed rather than shown as 0).
    pub fn set_rates(&self, tenant: &str, c: &Confusion) {
        self.threshold.with_label_values(&[tenant]).set(c.threshold);
        for (g, v) in [(&self.fpr, c.fpr), (&self.tpr, c.tpr)] {
            match v {
                Some(v) => g.with_label_values(&[tenant]).set(v),
                None => {
                    let _ = g.remove_label_values(&[tenant]);
                }
            }
        }
    }

    /// One scored decision: its score, and flagged / blocked under its cluster's label.
    pub fn observe_decision(&self, tenant: &str, cluster: &str, score: f64, action: Action) {
        self.score.observe(score);
        if action.flagged() {
            self.flagged_total
                .with_label_values(&[tenant, cluster])
                .inc();
        }
        if action == Action::Blocked {
            self.blocked_total
                .with_label_values(&[tenant, cluster])
                .inc();
        }
    }
}
