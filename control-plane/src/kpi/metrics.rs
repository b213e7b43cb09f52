//! The KPI gauges `kakeya_kpi_*{window,...}` (set from [`super::compute`] for every
//! [`Window`]), and two histograms observed live at ingest, one sample per fresh decision:
//! `kakeya_decision_risk` (the served risk: the dashboard's confidence distribution) and
//! `kakeya_decision_verify_seconds` (the gate's verify + score time, `x-kakeya-verify-ns`:
//! the HRS prediction latency). Process-wide like the ensemble's gauges, registered into every
//! [`crate::metrics::Metrics`] registry.

use super::{Kpis, Window};
use crate::cost::options::CostOptions;
use crate::store::Db;
use prometheus::{GaugeVec, Histogram, HistogramOpts, Opts, Registry};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often a scrape recomputes the KPIs (each refresh reads the store once per window).
pub const REFRESH: Duration = Duration::from_secs(15);

pub struct Gauges {
    decisions: GaugeVec,
    escalation_rate: GaugeVec,
    high_risk_rate: GaugeVec,
    containment_rate: GaugeVec,
    containment_by_arm: GaugeVec,
    containment_delta: GaugeVec,
    hrs_auroc: GaugeVec,
    roc_tpr: GaugeVec,
    roc_fpr: GaugeVec,
    pr_precision: GaugeVec,
    agreement_rate: GaugeVec,
    disagreements: GaugeVec,
    model_version_share: GaugeVec,
    cost: GaugeVec,
    cost_per_trusted_task: GaugeVec,
    savings: GaugeVec,
    risk: Histogram,
    verify_seconds: Histogram,
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).expect("a valid metric name and labels")
}

/// The process-wide set.
pub fn gauges() -> &'static Gauges {
    static G: OnceLock<Gauges> = OnceLock::new();
    G.get_or_init(Gauges::new)
}

impl Default for Gauges {
    fn default() -> Self {
        Gauges::new()
    }
}

impl Gauges {
    pub fn new() -> Gauges {
        let w = &["window"];
        Gauges {
            decisions: gauge("kakeya_kpi_decisions", "Decisions logged in the window", w),
            escalation_rate: gauge(
                "kakeya_kpi_escalation_rate",
                "Escalated decisions over all decisions of the window",
                w,
            ),
            high_risk_rate: gauge(
                "kakeya_kpi_high_risk_rate",
                "Scored decisions with risk >= 0.7 over all scored decisions of the window",
                w,
            ),
            containment_rate: gauge(
                "kakeya_kpi_containment_rate",
                "Decisions labelled hallucinated that were escalated or not accepted, over all \
                 decisions labelled hallucinated in the window",
                w,
            ),
            containment_by_arm: gauge(
                "kakeya_kpi_containment_rate_by_arm",
                "kakeya_kpi_containment_rate of the decisions scored by one arm",
                &["window", "arm"],
            ),
            containment_delta: gauge(
                "kakeya_kpi_containment_delta",
                "An arm's containment rate minus the champion's (the control arm)",
                &["window", "arm"],
            ),
            hrs_auroc: gauge(
                "kakeya_kpi_hrs_auroc",
                "Online AUROC of the served risk against the effective labels (model_version \
                 \"all\": every version)",
                &["window", "model_version"],
            ),
            roc_tpr: gauge(
                "kakeya_kpi_hrs_roc_tpr",
                "True-positive rate of risk >= threshold against the labels",
                &["window", "threshold"],
            ),
            roc_fpr: gauge(
                "kakeya_kpi_hrs_roc_fpr",
                "False-positive rate of risk >= threshold against the labels",
                &["window", "threshold"],
            ),
            pr_precision: gauge(
                "kakeya_kpi_hrs_pr_precision",
                "Precision of risk >= threshold against the labels",
                &["window", "threshold"],
            ),
            agreement_rate: gauge(
                "kakeya_kpi_ensemble_agreement_rate",
                "1 - ensemble disagreements / decisions with ensemble votes, in the window",
                w,
            ),
            disagreements: gauge(
                "kakeya_kpi_ensemble_disagreements",
                "Ensemble disagreement events of the window, by kind (split, abstention)",
                &["window", "kind"],
            ),
            model_version_share: gauge(
                "kakeya_kpi_model_version_share",
                "Share of the window's scored decisions scored by each model version",
                &["window", "model_version"],
            ),
            cost: gauge(
                "kakeya_kpi_cost",
                "Internal cost of the window's UTC days (today included), per tenant and service, \
                 in the price book's currency",
                &["window", "tenant", "service"],
            ),
            cost_per_trusted_task: gauge(
                "kakeya_kpi_cost_per_trusted_task",
                "Cost of the window's UTC days per decision accepted without escalation",
                &["window", "tenant"],
            ),
            savings: gauge(
                "kakeya_kpi_savings_monthly",
                "Monthly savings of the cost advisor: kind=projected (pending \
                 recommendations) or realised (applied ones)",
                &["kind"],
            ),
            risk: Histogram::with_opts(
                HistogramOpts::new(
                    "kakeya_decision_risk",
                    "Risk score the gate served, one sample per fresh scored decision",
                )
                .buckets((1..=20).map(|i| f64::from(i) * 0.05).collect()),
            )
            .expect("valid buckets"),
            verify_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "kakeya_decision_verify_seconds",
                    "Time the gate filter spent verifying and scoring a fresh decision \
                     (x-kakeya-verify-ns)",
                )
                .buckets(vec![
                    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                    0.01, 0.025, 0.05, 0.1,
                ]),
            )
            .expect("valid buckets"),
        }
    }

    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        for v in self.vecs() {
            registry.register(Box::new(v.clone()))?;
        }
        registry.register(Box::new(self.risk.clone()))?;
        registry.register(Box::new(self.verify_seconds.clone()))
    }

    fn vecs(&self) -> [&GaugeVec; 16] {
        [
            &self.decisions,
            &self.escalation_rate,
            &self.high_risk_rate,
            &self.containment_rate,
            &self.containment_by_arm,
            &self.containment_delta,
            &self.hrs_auroc,
            &self.roc_tpr,
            &self.roc_fpr,
            &self.pr_precision,
            &self.agreement_rate,
            &self.disagreements,
            &self.model_version_share,
            &self.cost,
            &self.cost_per_trusted_task,
            &self.savings,
        ]
    }

    /// Replaces every series by those of `all` (one [`Kpis`] per window): a figure that
    /// became undefined disappears instead of keeping a stale value.
    pub fn set(&self, all: &[Kpis]) {
        for v in self.vecs() {
            v.reset();
        }
        let put = |g: &GaugeVec, labels: &[&str], v: Option<f64>| {
            if let Some(v) = v {
                g.with_label_values(labels).set(v);
            }
        };
        for k in all {
            let w = k.window.as_str();
            put(&self.decisions, &[w], Some(k.decisions as f64));
            put(&self.escalation_rate, &[w], k.escalation_rate);
            put(&self.high_risk_rate, &[w], k.high_risk_rate);
            put(&self.containment_rate, &[w], k.containment_rate);
            put(&self.agreement_rate, &[w], k.ensemble.agreement_rate);
            for (a, c) in &k.containment_by_arm {
                put(&self.containment_by_arm, &[w, a], Some(*c));
            }
            for (a, d) in &k.containment_delta_vs_control {
                put(&self.containment_delta, &[w, a], Some(*d));
            }
            for (v, a) in &k.hrs_auroc {
                put(&self.hrs_auroc, &[w, v], Some(*a));
            }
            for p in &k.roc {
                let t = format!("{:.1}", p.threshold);
                put(&self.roc_tpr, &[w, &t], Some(p.tpr));
                put(&self.roc_fpr, &[w, &t], Some(p.fpr));
                put(&self.pr_precision, &[w, &t], p.precision);
            }
            for (kind, n) in &k.ensemble.disagreements {
                put(&self.disagreements, &[w, kind], Some(*n as f64));
            }
            for (v, s) in &k.model_versions {
                put(&self.model_version_share, &[w, v], Some(*s));
            }
            for t in k.cost.iter().flat_map(|c| &c.tenants) {
                for s in crate::cost::usage::SERVICES {
                    put(&self.cost, &[w, &t.tenant, s], t.cost.get(s));
                }
                put(
                    &self.cost_per_trusted_task,
                    &[w, &t.tenant],
                    t.cost_per_trusted_task,
                );
            }
        }
        if let Some(k) = all.first() {
            put(
                &self.savings,
                &["projected"],
                Some(k.savings.projected_monthly),
            );
            put(
                &self.savings,
                &["realised"],
                Some(k.savings.realised_monthly),
            );
        }
    }
}

pub fn register_metrics(registry: &Registry) -> prometheus::Result<()> {
    gauges().register(registry)
}

/// Recomputes every window's KPIs and sets the gauges.
pub async fn refresh(db: &Db, cost: &CostOptions) -> Result<(), super::KpiError> {
    let now = crate::now_ms();
    let mut all = Vec::with_capacity(Window::ALL.len());
    for w in Window::ALL {
        all.push(super::compute(db, cost, w, now).await?);
    }
    gauges().set(&all);
    Ok(())
}

/// [`refresh`] at most every [`REFRESH`] (what `/metrics` calls on a scrape).
pub async fn refresh_throttled(db: &Db, cost: &CostOptions) -> Result<(), super::KpiError> {
    static LAST: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    if let Ok(mut last) = LAST.lock() {
        if last.is_some_and(|t| t.elapsed() < REFRESH) {
            return Ok(());
        }
        *last = Some(Instant::now());
    }
    refresh(db, cost).await
}

/// The served risk of a gate result (`x-kakeya-result`), if scored.
pub(super) fn served_risk(result: &str) -> Option<f64> {
    #[derive(serde::Deserialize)]
    struct Risk {
        score: f64,
    }
    #[derive(serde::Deserialize)]
    struct Head {
        risk: Option<Risk>,
    }
    let h: Head = serde_json::from_str(result).ok()?;
    h.risk.map(|r| r.score).filter(|s| s.is_finite())
}

/// One fresh decision: its risk and the gate's verify time into the histograms.
pub fn decided(rec: &crate::wal::WalRecord) {
    let g = gauges();
    if let Some(r) = served_risk(&rec.result) {
        g.risk.observe(r);
    }
    if let Some(ns) = rec.verify_ns {
        g.verify_seconds.observe(ns as f64 / 1e9);
    }
}
