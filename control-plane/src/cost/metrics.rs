//! `kakeya_cost_*` metrics. Gauges of the month to date are set by the budget job (every
//! `[cost] budget_every`) and by the routes that compute them.

use super::billing::Provider;
use super::budgets::BudgetStatus;
use super::import::ImportResult;
use super::usage::{DayCost, SERVICES};
use super::{CostForecast, ReconciliationReport};
use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct CostMetrics {
    spend: GaugeVec,
    per_trusted_task: GaugeVec,
    budget_utilisation: GaugeVec,
    drift: GaugeVec,
    forecast_mape: GaugeVec,
    import_lines: IntCounterVec,
    budget_served: IntCounterVec,
}

impl CostMetrics {
    pub fn new(reg: &Registry) -> prometheus::Result<Self> {
        let g = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<GaugeVec> {
            let v = GaugeVec::new(Opts::new(name, help), labels)?;
            reg.register(Box::new(v.clone()))?;
            Ok(v)
        };
        let import_lines = IntCounterVec::new(
            Opts::new(
                "kakeya_cost_import_lines_total",
                "Billing lines read by imports, by outcome (written, unchanged, malformed)",
            ),
            &["provider", "outcome"],
        )?;
        reg.register(Box::new(import_lines.clone()))?;
        let budget_served = IntCounterVec::new(
            Opts::new(
                "kakeya_cost_budget_served_total",
                "Submissions the gate served under a tenant's budget action (alert, degrade), \
                 from its x-kakeya-budget header; throttled and denied ones are the filter's \
                 kakeya_gate_budget_*_total",
            ),
            &["tenant", "action"],
        )?;
        reg.register(Box::new(budget_served.clone()))?;
        Ok(CostMetrics {
            budget_served,
            spend: g(
                "kakeya_cost_spend",
                "Internal cost of the current UTC month so far, in the price book's currency",
                &["tenant", "service"],
            )?,
            per_trusted_task: g(
                "kakeya_cost_per_trusted_task",
                "Cost of the month's decisions per decision accepted without escalation",
                &["tenant"],
            )?,
            budget_utilisation: g(
                "kakeya_cost_budget_utilisation",
                "Month-to-date spend over the hard cap",
                &["tenant"],
            )?,
            drift: g(
                "kakeya_cost_reconciliation_drift_pct",
                "Signed symmetric drift of billed against internal cost, per service, of the \
                 last reconciliation's last month",
                &["service"],
            )?,
            forecast_mape: g(
                "kakeya_cost_forecast_mape",
                "Rolling-origin backtest MAPE (percent) of the last total forecast",
                &["horizon"],
            )?,
            import_lines,
        })
    }

    /// A submission served under budget action `action` (`x-kakeya-budget`); other values are
    /// not the gate's and are not counted.
    pub fn budget_served(&self, tenant: &str, action: &str) {
        if matches!(action, "alert" | "degrade") {
            self.budget_served
                .with_label_values(&[tenant, action])
                .inc();
        }
    }

    /// Month-to-date roll-up rows of every tenant.
    pub fn month(&self, days: &[DayCost]) {
        let rows = super::summarise("", 0, 0, days.to_vec());
        for t in &rows.tenants {
            for s in SERVICES {
                self.spend
                    .with_label_values(&[t.tenant.as_str(), s])
                    .set(t.cost.get(s).unwrap_or(0.0));
            }
            if let Some(c) = t.cost_per_trusted_task {
                self.per_trusted_task
                    .with_label_values(&[t.tenant.as_str()])
                    .set(c);
            }
        }
    }

    pub fn budgets(&self, list: &[BudgetStatus]) {
        for b in list {
            if let Some(u) = b.utilisation {
                self.budget_utilisation
                    .with_label_values(&[b.budget.tenant.as_str()])
                    .set(u);
            }
        }
    }

    pub fn reconciled(&self, r: &ReconciliationReport) {
        let Some(last) = r.months.iter().map(|c| c.period.clone()).max() else {
            return;
        };
        for c in r.months.iter().filter(|c| c.period == last) {
            if let Some(d) = c.drift_pct {
                self.drift.with_label_values(&[c.service.as_str()]).set(d);
            }
        }
    }

    pub fn forecasted(&self, f: &CostForecast) {
        for b in f.total.iter().flat_map(|t| &t.backtest) {
            if let Some(m) = b.mape {
                self.forecast_mape
                    .with_label_values(&[b.horizon.to_string().as_str()])
                    .set(m);
            }
        }
    }

    pub fn imported(&self, p: Provider, r: &ImportResult) {
        for (outcome, n) in [
            ("written", r.written),
            ("unchanged", r.unchanged),
            ("malformed", r.malformed),
        ] {
            self.import_lines
                .with_label_values(&[p.as_str(), outcome])
                .inc_by(n);
        }
    }
}

/// The budget job: recompute every budget (republishing the bundle when an action changed)
/// and refresh the month-to-date gauges.
pub async fn run_periodic(
    db: &crate::store::Db,
    seed: &[u8; 32],
    opts: &super::options::CostOptions,
    m: &CostMetrics,
) {
    let now = crate::now_ms();
    match super::budgets::recompute(db, opts, now).await {
        Ok((list, _)) => {
            m.budgets(&list);
            if super::budgets::needs_publish(db, now)
                .await
                .unwrap_or(false)
            {
                match crate::registry::republish(db, seed, now).await {
                    Ok(p) => tracing::info!(bundle = p.bundle_version, "budget state published"),
                    Err(crate::registry::RegistryError::Conflict(_)) => {}
                    Err(e) => tracing::warn!(error = %e, "publishing the budget state failed"),
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "budget recomputation failed"),
    }
    let today = super::prices::day_of_ms(now);
    let (_, first, _) = super::budgets::month_of(today);
    let sel = super::record::Selection {
        from_day: first,
        to_day: today + 1,
        ..Default::default()
    };
    match super::rollup(db, opts, &sel).await {
        Ok(days) => m.month(&days),
        Err(e) => tracing::warn!(error = %e, "cost roll-up for the metrics failed"),
    }
}
