//! The canary's gates, each evaluated for the canary arm against the control arm over one
//! step's window, from the decision log: escalation rate and the filter's latency of every
//! decision, and the labels of those decisions for containment and escaped hallucinations.
//!
//! "No data" fails a gate (it never passes one). The cost gate reads no figures yet (the cost
//! issue records them): it reports `no_data` unless the canary skips it explicitly.

use crate::store::Db;
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// Containment below this rolls the canary back at once, whatever the other gates say.
pub const CRITICAL_CONTAINMENT: f64 = 0.95;
/// A gate whose measured value beats its threshold by more than this share counts towards
/// acceleration (every evaluated gate must).
pub const ACCELERATION_MARGIN: f64 = 0.2;
/// The next step's duration after an accelerated step, as a share of its own.
pub const ACCELERATION_FACTOR: f64 = 0.75;

/// `latency`: the canary's p95 of the filter's decision time, absolute and against control.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyGate {
    /// Largest p95 (ms) of the canary arm.
    pub p95_threshold_ms: f64,
    /// Largest p95 increase over the control arm, in percent.
    pub max_degradation_pct: f64,
    /// Increases of the p95 smaller than this (ms) are not degradation (noise of a loaded
    /// host at microsecond decision times). Default 1 ms.
    #[serde(default = "default_min_delta_ms")]
    pub min_delta_ms: f64,
}

fn default_min_delta_ms() -> f64 {
    1.0
}

/// `error_budget`: the canary's escalation rate, absolute and its extra burn over control.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBudgetGate {
    /// Largest escalation rate (escalated / scored) of the canary arm, within [0, 1].
    pub escalation_rate_threshold: f64,
    /// Largest extra burn: (canary rate − control rate) / escalation_rate_threshold, the share
    /// of the whole budget the canary spends beyond what the control spends.
    pub burn_rate_threshold: f64,
}

/// `containment`: labelled hallucinations the canary escalates, against control.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainmentGate {
    /// Smallest containment rate: the canary's recall on labelled hallucinations (escalated
    /// / labelled hallucinated) over the control's. Below 0.95 is critical (rollback at once).
    pub min_containment_rate: f64,
    /// Most escaped hallucinations (labelled hallucinated, not escalated) of the canary arm
    /// per hour of the window.
    pub max_escaped_per_hour: f64,
    /// Fewest labelled hallucinations per arm for a measurement (else `no_data`). Default 20.
    #[serde(default = "default_min_labelled")]
    pub min_labelled: u64,
}

fn default_min_labelled() -> u64 {
    20
}

/// `cost`: the canary's cost per trusted task against control (figures from the cost issue).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CostGate {
    pub max_cost_increase_pct: f64,
    pub max_cost_per_trusted_task: f64,
}

/// The four gates' names.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum GateName {
    Latency,
    ErrorBudget,
    Containment,
    Cost,
}

impl GateName {
    pub fn as_str(self) -> &'static str {
        match self {
            GateName::Latency => "latency",
            GateName::ErrorBudget => "error_budget",
            GateName::Containment => "containment",
            GateName::Cost => "cost",
        }
    }
}

/// The seed's gates body; every gate has defaults, `skip` names gates not evaluated (only an
/// explicit skip passes a gate without data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Gates {
    pub latency: LatencyGate,
    pub error_budget: ErrorBudgetGate,
    pub containment: ContainmentGate,
    pub cost: CostGate,
    pub skip: Vec<GateName>,
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            latency: LatencyGate {
                p95_threshold_ms: 50.0,
                max_degradation_pct: 20.0,
                min_delta_ms: default_min_delta_ms(),
            },
            error_budget: ErrorBudgetGate {
                escalation_rate_threshold: 0.25,
                burn_rate_threshold: 0.5,
            },
            containment: ContainmentGate {
                min_containment_rate: CRITICAL_CONTAINMENT,
                max_escaped_per_hour: 1000.0,
                min_labelled: default_min_labelled(),
            },
            cost: CostGate {
                max_cost_increase_pct: 7.0,
                max_cost_per_trusted_task: 0.01,
            },
            skip: Vec::new(),
        }
    }
}

fn finite_nonneg(what: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(format!(
            "gates.{what} must be a finite number ≥ 0 (got {v})"
        ))
    }
}

impl Gates {
    pub fn validate(&self) -> Result<(), String> {
        finite_nonneg("latency.p95_threshold_ms", self.latency.p95_threshold_ms)?;
        finite_nonneg(
            "latency.max_degradation_pct",
            self.latency.max_degradation_pct,
        )?;
        finite_nonneg("latency.min_delta_ms", self.latency.min_delta_ms)?;
        finite_nonneg(
            "error_budget.escalation_rate_threshold",
            self.error_budget.escalation_rate_threshold,
        )?;
        if !(self.error_budget.escalation_rate_threshold > 0.0
            && self.error_budget.escalation_rate_threshold <= 1.0)
        {
            return Err(
                "gates.error_budget.escalation_rate_threshold must be within (0, 1]".into(),
            );
        }
        finite_nonneg(
            "error_budget.burn_rate_threshold",
            self.error_budget.burn_rate_threshold,
        )?;
        if !(0.0..=1.0).contains(&self.containment.min_containment_rate) {
            return Err("gates.containment.min_containment_rate must be within [0, 1]".into());
        }
        finite_nonneg(
            "containment.max_escaped_per_hour",
            self.containment.max_escaped_per_hour,
        )?;
        if self.containment.min_labelled == 0 {
            return Err("gates.containment.min_labelled must be at least 1".into());
        }
        finite_nonneg(
            "cost.max_cost_increase_pct",
            self.cost.max_cost_increase_pct,
        )?;
        finite_nonneg(
            "cost.max_cost_per_trusted_task",
            self.cost.max_cost_per_trusted_task,
        )?;
        Ok(())
    }

    fn skipped(&self, g: GateName) -> bool {
        self.skip.contains(&g)
    }
}

/// What one arm did in the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = CanaryArmStats)]
pub struct ArmStats {
    /// Scored decisions of the arm's model.
    pub requests: u64,
    pub escalated: u64,
    pub escalation_rate: Option<f64>,
    /// p95 of the filter's decision time (ms), over the decisions that carry one.
    pub p95_ms: Option<f64>,
    /// Labelled decisions (by their effective label).
    pub labelled: u64,
    pub labelled_hallucinated: u64,
    /// Labelled hallucinated and escalated.
    pub contained: u64,
    /// Labelled hallucinated and not escalated.
    pub escaped: u64,
    /// contained / labelled_hallucinated.
    pub recall: Option<f64>,
}

/// A gate's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GateStatus {
    Pass,
    Fail,
    NoData,
    Skipped,
}

/// One gate's evaluation: the values it compared and what it concluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GateResult {
    pub gate: GateName,
    pub status: GateStatus,
    /// Containment measured below [`CRITICAL_CONTAINMENT`].
    pub critical: bool,
    /// The measured values and their thresholds.
    #[schema(value_type = Object)]
    pub values: serde_json::Value,
    /// Smallest relative margin by which a passing gate beats its thresholds (1 = far, 0 = at
    /// the threshold); the acceleration rule needs > [`ACCELERATION_MARGIN`] on every gate.
    pub margin: Option<f64>,
    /// Why the gate did not pass, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What the controller should do after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = GateRecommendation)]
pub enum Recommendation {
    /// Every evaluated gate passes.
    Continue,
    /// One gate fails or lacks data: the step may not pass yet.
    Hold,
    /// A critical gate, or at least two measured failures.
    Rollback,
}

/// One health check of a step's window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthCheck {
    pub at_ms: i64,
    pub since_ms: i64,
    pub until_ms: i64,
    pub canary: ArmStats,
    pub control: ArmStats,
    pub gates: Vec<GateResult>,
    /// Gates that failed or had no data.
    pub failed_gates: Vec<GateName>,
    pub recommendation: Recommendation,
    /// Every evaluated gate beat its thresholds by more than the acceleration margin.
    pub excellent: bool,
}

/// Relative margin of `value` under the upper bound `max` (negative when above).
fn under(value: f64, max: f64) -> f64 {
    if max > 0.0 {
        (max - value) / max
    } else if value <= 0.0 {
        1.0
    } else {
        -1.0
    }
}

fn result(
    gate: GateName,
    values: serde_json::Value,
    outcome: Result<f64, String>,
    critical: bool,
) -> GateResult {
    match outcome {
        Ok(margin) if margin >= 0.0 => GateResult {
            gate,
            status: GateStatus::Pass,
            critical,
            values,
            margin: Some(margin),
            detail: None,
        },
        Ok(_) => GateResult {
            gate,
            status: GateStatus::Fail,
            critical,
            values,
            margin: None,
            detail: Some("a threshold is exceeded".into()),
        },
        Err(why) => GateResult {
            gate,
            status: GateStatus::NoData,
            critical: false,
            values,
            margin: None,
            detail: Some(why),
        },
    }
}

fn latency(g: &LatencyGate, c: &ArmStats, k: &ArmStats) -> GateResult {
    let values = serde_json::json!({
        "canary_p95_ms": c.p95_ms, "control_p95_ms": k.p95_ms,
        "p95_threshold_ms": g.p95_threshold_ms, "max_degradation_pct": g.max_degradation_pct,
        "min_delta_ms": g.min_delta_ms,
    });
    let outcome = match (c.p95_ms, k.p95_ms) {
        (Some(cp), Some(kp)) => {
            let delta = cp - kp;
            let degradation_pct = if kp > 0.0 { delta / kp * 100.0 } else { 0.0 };
            let m1 = under(cp, g.p95_threshold_ms);
            // A difference below min_delta_ms never counts as degradation.
            let m2 = if delta < g.min_delta_ms {
                1.0
            } else {
                under(degradation_pct, g.max_degradation_pct)
            };
            let mut values = values;
            values["degradation_pct"] = degradation_pct.into();
            return result(GateName::Latency, values, Ok(m1.min(m2)), false);
        }
        _ => Err("no timed decisions in one of the arms".to_string()),
    };
    result(GateName::Latency, values, outcome, false)
}

fn error_budget(g: &ErrorBudgetGate, c: &ArmStats, k: &ArmStats) -> GateResult {
    let (Some(cr), Some(kr)) = (c.escalation_rate, k.escalation_rate) else {
        return result(
            GateName::ErrorBudget,
            serde_json::json!({"canary_requests": c.requests, "control_requests": k.requests}),
            Err("no scored decisions in one of the arms".into()),
            false,
        );
    };
    let burn = (cr - kr) / g.escalation_rate_threshold;
    let values = serde_json::json!({
        "canary_escalation_rate": cr, "control_escalation_rate": kr, "extra_burn_rate": burn,
        "escalation_rate_threshold": g.escalation_rate_threshold,
        "burn_rate_threshold": g.burn_rate_threshold,
    });
    let m = under(cr, g.escalation_rate_threshold).min(under(burn, g.burn_rate_threshold));
    result(GateName::ErrorBudget, values, Ok(m), false)
}

fn containment(g: &ContainmentGate, c: &ArmStats, k: &ArmStats, hours: f64) -> GateResult {
    let escaped_per_hour = c.escaped as f64 / hours.max(1.0 / 3600.0);
    let mut values = serde_json::json!({
        "canary_recall": c.recall, "control_recall": k.recall,
        "canary_labelled_hallucinated": c.labelled_hallucinated,
        "control_labelled_hallucinated": k.labelled_hallucinated,
        "escaped_per_hour": escaped_per_hour,
        "min_containment_rate": g.min_containment_rate,
        "max_escaped_per_hour": g.max_escaped_per_hour, "min_labelled": g.min_labelled,
    });
    if c.labelled_hallucinated < g.min_labelled || k.labelled_hallucinated < g.min_labelled {
        return result(
            GateName::Containment,
            values,
            Err(format!(
                "fewer than {} labelled hallucinations in one of the arms",
                g.min_labelled
            )),
            false,
        );
    }
    let (cr, kr) = (c.recall.unwrap_or(0.0), k.recall.unwrap_or(0.0));
    // The control caught nothing: the canary contains as much when it catches nothing too.
    let rate = if kr > 0.0 { (cr / kr).min(1.0) } else { 1.0 };
    values["containment_rate"] = rate.into();
    // Lower bound: the margin is the share of the allowed shortfall left.
    let allowed = 1.0 - g.min_containment_rate;
    let m1 = if allowed > 0.0 {
        (rate - g.min_containment_rate) / allowed
    } else if rate >= 1.0 {
        1.0
    } else {
        -1.0
    };
    let m = m1.min(under(escaped_per_hour, g.max_escaped_per_hour));
    result(
        GateName::Containment,
        values,
        Ok(m),
        rate < CRITICAL_CONTAINMENT,
    )
}

fn cost(_g: &CostGate) -> GateResult {
    result(
        GateName::Cost,
        serde_json::json!({}),
        Err("no cost figures are recorded per decision yet; skip the gate explicitly (gates.skip: [\"cost\"]) to run without it".into()),
        false,
    )
}

/// The gates over the two arms' stats of a window of `hours`, and what to do.
pub fn evaluate(
    gates: &Gates,
    c: &ArmStats,
    k: &ArmStats,
    hours: f64,
) -> (Vec<GateResult>, Recommendation, bool) {
    let all = [
        (GateName::Latency, latency(&gates.latency, c, k)),
        (
            GateName::ErrorBudget,
            error_budget(&gates.error_budget, c, k),
        ),
        (
            GateName::Containment,
            containment(&gates.containment, c, k, hours),
        ),
        (GateName::Cost, cost(&gates.cost)),
    ];
    let results: Vec<GateResult> = all
        .into_iter()
        .map(|(name, r)| {
            if gates.skipped(name) {
                GateResult {
                    gate: name,
                    status: GateStatus::Skipped,
                    critical: false,
                    values: r.values,
                    margin: None,
                    detail: None,
                }
            } else {
                r
            }
        })
        .collect();
    let measured_fails = results
        .iter()
        .filter(|r| r.status == GateStatus::Fail)
        .count();
    let not_passing = results
        .iter()
        .filter(|r| matches!(r.status, GateStatus::Fail | GateStatus::NoData))
        .count();
    let critical = results
        .iter()
        .any(|r| r.critical && r.status != GateStatus::Skipped);
    let rec = if critical || measured_fails >= 2 {
        Recommendation::Rollback
    } else if not_passing > 0 {
        Recommendation::Hold
    } else {
        Recommendation::Continue
    };
    let excellent = rec == Recommendation::Continue
        && results
            .iter()
            .filter(|r| r.status == GateStatus::Pass)
            .all(|r| r.margin.is_some_and(|m| m > ACCELERATION_MARGIN));
    (results, rec, excellent)
}

/// Which rows an arm is: its name in the decision log and its model version.
pub struct ArmOf<'a> {
    pub arm: &'a str,
    pub version: &'a str,
}

/// `sql` (over [`window_stats`]'s `WHERE`) with the window's eight parameters bound.
fn window_query<'q>(
    sql: &'q str,
    canary: &ArmOf<'_>,
    control: &ArmOf<'_>,
    (since, control_since): (i64, i64),
    until: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    sqlx::query(sql)
        .bind(canary.arm.to_string())
        .bind(canary.version.to_string())
        .bind(since)
        .bind(control.arm.to_string())
        .bind(control.version.to_string())
        .bind(control_since)
        .bind(since.min(control_since))
        .bind(until)
}

/// Both arms' stats up to `until`, the canary's from `since`, the control's from
/// `control_since` (earlier when the canary takes all traffic and the control has none in the
/// step), aggregated in the database: one pass over the window's scored decisions (counts,
/// escalations), one over its labelled decisions, and per arm one indexed read of its p95.
pub async fn window_stats(
    db: &Db,
    canary: &ArmOf<'_>,
    control: &ArmOf<'_>,
    (since, control_since): (i64, i64),
    until: i64,
) -> Result<(ArmStats, ArmStats), sqlx::Error> {
    // Placeholders in order of appearance (SQLite numbers `$n` as it meets them).
    const WHERE: &str = "((d.arm = $1 AND d.model_version = $2 AND d.created_at_ms >= $3) \
         OR (d.arm = $4 AND d.model_version = $5 AND d.created_at_ms >= $6)) \
         AND d.created_at_ms >= $7 AND d.created_at_ms < $8 AND d.risk IS NOT NULL";
    let mut stats = [ArmStats::default(), ArmStats::default()];
    let mut timed = [0i64; 2];
    let slot = |arm: &str| usize::from(arm != canary.arm);
    let counts = format!(
        "SELECT d.arm AS arm, COUNT(*) AS n, CAST(SUM(d.escalated) AS BIGINT) AS esc, \
             COUNT(d.verify_ns) AS timed FROM decision_log d WHERE {WHERE} GROUP BY d.arm"
    );
    for r in window_query(&counts, canary, control, (since, control_since), until)
        .fetch_all(&db.pool)
        .await?
    {
        let i = slot(&r.try_get::<String, _>("arm")?);
        stats[i].requests = u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0);
        stats[i].escalated =
            u64::try_from(r.try_get::<Option<i64>, _>("esc")?.unwrap_or(0)).unwrap_or(0);
        timed[i] = r.try_get("timed")?;
    }
    // The effective label of each decision (review::effective_label: the highest source, then
    // the newest, then hallucinated, then the first labeller), chosen in SQL so the window's
    // labels never leave the database.
    let labelled = format!(
            "SELECT arm, COUNT(*) AS labelled, CAST(SUM(h) AS BIGINT) AS hallucinated, CAST(SUM(h * esc) AS BIGINT) AS contained \
             FROM (SELECT d.arm AS arm, d.escalated AS esc, \
               CASE WHEN l.label = 'hallucinated' THEN 1 ELSE 0 END AS h, \
               ROW_NUMBER() OVER (PARTITION BY d.id ORDER BY \
                 CASE l.source WHEN 'gold' THEN 3 WHEN 'silver' THEN 2 ELSE 1 END DESC, \
                 l.created_at_ms DESC, CASE WHEN l.label = 'hallucinated' THEN 1 ELSE 0 END DESC, \
                 l.labeller ASC) AS rn \
               FROM decision_log d JOIN labels l ON l.tenant = d.tenant AND l.pcs_id = d.pcs_id \
               WHERE {WHERE}) x WHERE rn = 1 GROUP BY arm"
        );
    for r in window_query(&labelled, canary, control, (since, control_since), until)
        .fetch_all(&db.pool)
        .await?
    {
        let s = &mut stats[slot(&r.try_get::<String, _>("arm")?)];
        let n = |c: &str| -> Result<u64, sqlx::Error> {
            Ok(u64::try_from(r.try_get::<Option<i64>, _>(c)?.unwrap_or(0)).unwrap_or(0))
        };
        s.labelled = n("labelled")?;
        s.labelled_hallucinated = n("hallucinated")?;
        s.contained = n("contained")?;
        s.escaped = s.labelled_hallucinated - s.contained.min(s.labelled_hallucinated);
    }
    // Nearest-rank p95: the value at rank ⌈0.95·n⌉ of the arm's timed decisions.
    let p95 = format!(
        "SELECT d.verify_ns AS ns FROM decision_log d WHERE {WHERE} AND d.arm = $9 \
             AND d.verify_ns IS NOT NULL ORDER BY d.verify_ns LIMIT 1 OFFSET $10"
    );
    for (i, arm) in [canary.arm, control.arm].into_iter().enumerate() {
        let n = timed[i];
        if n <= 0 {
            continue;
        }
        let rank = ((n as f64) * 0.95).ceil() as i64;
        let row = window_query(&p95, canary, control, (since, control_since), until)
            .bind(arm.to_string())
            .bind(rank.clamp(1, n) - 1)
            .fetch_optional(&db.pool)
            .await?;
        if let Some(r) = row {
            stats[i].p95_ms = Some(r.try_get::<i64, _>("ns")? as f64 / 1e6);
        }
    }
    for s in stats.iter_mut() {
        s.escalation_rate = (s.requests > 0).then(|| s.escalated as f64 / s.requests as f64);
        s.recall = (s.labelled_hallucinated > 0)
            .then(|| s.contained as f64 / s.labelled_hallucinated as f64);
    }
    let [c, k] = stats;
    Ok((c, k))
}

/// A health check of the window `[since, until)` (the control's from `control_since`, see
/// [`window_stats`]).
pub async fn check(
    db: &Db,
    gates: &Gates,
    canary: &ArmOf<'_>,
    control: &ArmOf<'_>,
    (since, control_since): (i64, i64),
    until: i64,
) -> Result<HealthCheck, sqlx::Error> {
    let (c, k) = window_stats(db, canary, control, (since, control_since), until).await?;
    Ok(health_check(gates, c, k, since, until))
}

/// The gates over both arms' stats of the window `[since, until)` (from the decision log, or
/// from Envoy's stats for an upstream route: [`super::envoy_stats::check`]).
pub fn health_check(
    gates: &Gates,
    c: ArmStats,
    k: ArmStats,
    since: i64,
    until: i64,
) -> HealthCheck {
    let hours = (until - since).max(1) as f64 / 3_600_000.0;
    let (gates, recommendation, excellent) = evaluate(gates, &c, &k, hours);
    let failed_gates = gates
        .iter()
        .filter(|g| matches!(g.status, GateStatus::Fail | GateStatus::NoData))
        .map(|g| g.gate)
        .collect();
    HealthCheck {
        at_ms: until,
        since_ms: since,
        until_ms: until,
        canary: c,
        control: k,
        gates,
        failed_gates,
        recommendation,
        excellent,
    }
}
