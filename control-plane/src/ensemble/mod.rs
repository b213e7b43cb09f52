//! Adaptive per-tenant ensemble policies: labelled strategy outcomes in, a tuned
//! [`EnsemblePolicy`] per tenant out, published in the next signed bundle
//! (`bundle.ensemble.tenants`), which the filter applies.
//!
//! * **Outcomes** ([`outcomes`]): per decision, every strategy's vote (`POST
//!   /v1/ensemble/feedback`, later also the decision log's own votes: the seam is documented
//!   there), the serving policy's decision and its propensity, and the decision's label.
//! * **Arms** ([`arms`]): a small documented space of candidate (strategies, N, weights,
//!   `min_confidence`) policies over the strategies that actually vote for the tenant, each
//!   replayed on the labelled outcomes with the filter's exact `decide`. Reward: the decision
//!   was right (ground truth: accept faithful, escalate or reject hallucinated), never
//!   agreement, which rewards leniency. Feasibility: honest-escalation rate, latency and
//!   callout caps (hard SLO caps).
//! * **Selection** ([`thompson`]): Thompson sampling with real Beta draws and a decaying ε over
//!   the feasible arms; the selection's propensities are stored with the policy (the logging
//!   policy of later replays).
//! * **Replay** ([`replay`]): IPS and SNIPS estimates of the chosen policy against the logged
//!   decisions; a candidate worse than the logged policy beyond its interval is refused.
//! * **Stack** ([`stack`]): logistic stacking of the votes fitted on the labelled outcomes.
//! * **Publication**: a tuned policy is stored with its history and the bundle is republished
//!   ([`crate::registry::republish`]); every publication reads the stored policies
//!   ([`store::section`]). `[ensemble.default]`, when configured, is published as
//!   `ensemble.default`.
//! * **Cadence** ([`run_periodic`]): with `auto_tune`, the `ensemble-tune` lease holder tunes
//!   every tenant with `tune_every_labels` new labelled outcomes since its last run.

pub mod api;
pub mod arms;
pub mod options;
pub mod outcomes;
pub mod replay;
pub mod stack;
pub mod store;
#[cfg(test)]
mod tests;
pub mod thompson;

use crate::registry::{self, RegistryError};
use crate::store::Db;
use arms::{ArmRecord, Caps};
use kakeya_core::ensemble_policy::{decide, Decision, EnsemblePolicy};
pub use options::EnsembleOptions;
use outcomes::{Outcome, StrategyResult};
use rand::rngs::StdRng;
use rand::SeedableRng;
use replay::{Estimate, Replay};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, Row};
use std::collections::BTreeMap;
use std::sync::RwLock;
use store::{LoggedArm, PolicyRow, Reason};

/// The lease of the periodic tuning.
pub const LEASE: &str = "ensemble-tune";
/// Longest tenant id and pcs_id accepted.
pub const MAX_ID_LEN: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum EnsembleError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Ambiguous(String),
    #[error("tenant {tenant:?} has {count} labelled outcomes; a tune needs at least {needed} (label more decisions, or lower [ensemble] min_samples)")]
    InsufficientSamples {
        tenant: String,
        count: usize,
        needed: usize,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// The `[ensemble]` settings of this process, set once at start-up by `kakeya serve`
/// ([`configure`]; like `tenant_stats_days`, a process setting every publication reads).
static OPTIONS: RwLock<Option<EnsembleOptions>> = RwLock::new(None);

/// Sets this process's `[ensemble]` settings (the routes' and the publications').
pub fn configure(o: EnsembleOptions) {
    if let Ok(mut d) = OPTIONS.write() {
        *d = Some(o);
    }
}

/// This process's settings (the defaults until [`configure`]).
pub fn options() -> EnsembleOptions {
    OPTIONS
        .read()
        .ok()
        .and_then(|o| o.clone())
        .unwrap_or_default()
}

/// The configured default policy (`[ensemble.default]`).
pub fn default_policy() -> Option<EnsemblePolicy> {
    options().default
}

/// The `ensemble` section of the next bundle ([`store::section`] with the configured default).
pub async fn publication_section(
    conn: &mut sqlx::AnyConnection,
) -> Result<kakeya_core::ensemble_policy::EnsembleSection, sqlx::Error> {
    store::section(conn, default_policy()).await
}

fn check_id(what: &str, s: &str) -> Result<(), EnsembleError> {
    if s.is_empty() || s.len() > MAX_ID_LEN || s.chars().any(char::is_control) {
        return Err(EnsembleError::Invalid(format!(
            "{what} must be 1 to {MAX_ID_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

/// `POST /v1/ensemble/feedback`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// A decision of the decision log.
    #[schema(max_length = 256)]
    pub pcs_id: String,
    /// Needed only when two tenants logged the same pcs_id.
    #[schema(max_length = 256)]
    pub tenant_id: Option<String>,
    /// Whether the strategies agreed.
    pub agreed: bool,
    /// The strategies that voted (an abstaining one is left out); at most one per strategy.
    pub strategy_results: Vec<StrategyResult>,
}

/// The logging policy's probability of `decision` on `votes`: the share of the Thompson
/// mixture (`arms`) whose policy decides so; 1 for a policy without a mixture.
pub fn logged_propensity(arms: &[LoggedArm], votes: &[StrategyResult], decision: Decision) -> f64 {
    if arms.is_empty() {
        return 1.0;
    }
    arms.iter()
        .filter(|a| decide(&a.policy, votes.iter().map(StrategyResult::vote)) == decision)
        .map(|a| a.propensity)
        .sum::<f64>()
        .min(1.0)
}

/// Stores one decision's strategy outcomes. The decision the serving policy took is recomputed
/// from the votes with the tenant's stored (or the default) policy, with the logging policy's
/// propensity of it; with no policy it is the decision log's (propensity 1: deterministic).
pub async fn feedback(
    db: &Db,
    req: &FeedbackRequest,
    now_ms: i64,
) -> Result<String, EnsembleError> {
    check_id("pcs_id", &req.pcs_id)?;
    outcomes::check_results(&req.strategy_results).map_err(EnsembleError::Invalid)?;
    let tenant = match &req.tenant_id {
        Some(t) => {
            check_id("tenant_id", t)?;
            t.clone()
        }
        None => {
            let mut ts = store::tenants_of(&db.pool, &req.pcs_id).await?;
            match ts.len() {
                0 => String::new(),
                1 => ts.remove(0),
                _ => {
                    return Err(EnsembleError::Ambiguous(format!(
                        "pcs_id {:?} was logged for several tenants: name one with tenant_id",
                        req.pcs_id
                    )))
                }
            }
        }
    };
    let Some(logged) = store::logged_decision(&db.pool, &tenant, &req.pcs_id).await? else {
        return Err(EnsembleError::NotFound(format!(
            "no decision {:?} in the decision log{}: feedback is about a logged decision",
            req.pcs_id,
            req.tenant_id
                .as_ref()
                .map(|t| format!(" of tenant {t:?}"))
                .unwrap_or_default()
        )));
    };
    let serving = store::policy(&db.pool, &tenant).await?;
    let (policy_id, decision, propensity) = match (&serving, default_policy()) {
        (Some(row), _) => {
            let d = decide(
                &row.policy,
                req.strategy_results.iter().map(StrategyResult::vote),
            );
            (
                Some(row.policy.policy_id.clone()),
                d,
                logged_propensity(&row.arms, &req.strategy_results, d),
            )
        }
        (None, Some(p)) => {
            let d = decide(&p, req.strategy_results.iter().map(StrategyResult::vote));
            (Some(p.policy_id.clone()), d, 1.0)
        }
        (None, None) => (None, logged, 1.0),
    };
    store::upsert_outcome(
        &db.pool,
        &store::NewOutcome {
            tenant: &tenant,
            pcs_id: &req.pcs_id,
            agreed: req.agreed,
            votes: &req.strategy_results,
            policy_id: policy_id.as_deref(),
            decision,
            propensity,
        },
        now_ms,
    )
    .await?;
    Ok(tenant)
}

/// Who started a tune.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Api,
    Schedule,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Api => "api",
            Trigger::Schedule => "schedule",
        }
    }
}

/// What a tune did (`outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TuneOutcome {
    /// The chosen policy is live (stored; in the next bundle).
    Published,
    /// Not published: `reason` says why (no feasible arm, or the replay estimate is worse
    /// than the logged policy beyond its interval).
    Refused,
}

impl TuneOutcome {
    fn as_str(self) -> &'static str {
        match self {
            TuneOutcome::Published => "published",
            TuneOutcome::Refused => "refused",
        }
    }
}

/// The answer of `POST /v1/ensemble/tune`: the seed's shape (`tenant_id, n, m,
/// strategy_weights, agreement_rate, updated_at`) of the chosen policy, plus what it rests on.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TuneReport {
    pub tenant_id: String,
    pub n: u32,
    pub m: u32,
    pub strategy_weights: BTreeMap<String, f64>,
    /// Share of the tenant's outcomes whose strategies agreed (reported, never rewarded).
    pub agreement_rate: f64,
    /// RFC 3339 time of the run.
    pub updated_at: String,
    pub outcome: TuneOutcome,
    /// Why it was refused.
    pub reason: Option<String>,
    pub run_id: i64,
    /// The chosen policy's id (`tuned-<tenant>-<run number>`) and arm.
    pub policy_id: String,
    pub arm: String,
    pub min_confidence: f64,
    /// Labelled outcomes the run learnt from.
    pub labelled: usize,
    /// The chosen arm's reward (share of right decisions): posterior mean and 95 % interval.
    pub reward: Estimate,
    pub honest_escalation_rate: f64,
    pub containment_rate: f64,
    /// Off-policy replay against the logged decisions.
    pub replay: Replay,
    /// Probability of the chosen arm under this run's selection, and its ε.
    pub propensity: f64,
    pub epsilon: f64,
    pub arms: usize,
    pub feasible_arms: usize,
    /// A stack fitted on the outcomes (else the default stack).
    pub stack_fitted: bool,
    /// The bundle that carries it (none while no champion exists: it goes into the first).
    pub bundle_version: Option<i64>,
}

/// One tuning run for `tenant` (the one function behind the route, the CLI and the cadence).
/// `rng_seed` makes the draws reproducible (tests); `None` seeds from the OS.
pub async fn tune(
    db: &Db,
    seed: Option<&[u8; 32]>,
    opts: &EnsembleOptions,
    tenant: &str,
    by: Trigger,
    rng_seed: Option<u64>,
    now_ms: i64,
) -> Result<TuneReport, EnsembleError> {
    check_id("tenant_id", tenant)?;
    let rows = outcomes::labelled(db, tenant).await?;
    if rows.len() < opts.min_samples {
        let report = serde_json::json!({"labelled": rows.len(), "needed": opts.min_samples});
        store::insert_run(
            &mut *db.pool.acquire().await?,
            tenant,
            by.as_str(),
            "insufficient_data",
            rows.len() as i64,
            None,
            &report,
            now_ms,
            crate::now_ms(),
        )
        .await?;
        tune_runs_total()
            .with_label_values(&["insufficient_data"])
            .inc();
        return Err(EnsembleError::InsufficientSamples {
            tenant: tenant.into(),
            count: rows.len(),
            needed: opts.min_samples,
        });
    }
    match tune_rows(db, seed, opts, tenant, by, rng_seed, &rows, now_ms).await {
        Ok(r) => {
            tune_runs_total()
                .with_label_values(&[r.outcome.as_str()])
                .inc();
            Ok(r)
        }
        Err(e) => {
            tune_runs_total().with_label_values(&["error"]).inc();
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn tune_rows(
    db: &Db,
    seed: Option<&[u8; 32]>,
    opts: &EnsembleOptions,
    tenant: &str,
    by: Trigger,
    rng_seed: Option<u64>,
    rows: &[Outcome],
    now_ms: i64,
) -> Result<TuneReport, EnsembleError> {
    let current = store::policy(&db.pool, tenant).await?;
    let base = current
        .as_ref()
        .map(|c| c.policy.clone())
        .or_else(default_policy)
        .unwrap_or_else(arms::base_policy);
    let strategies = arms::voting_strategies(rows);
    let candidates = arms::arms(&base, &strategies, tenant);
    let caps = Caps {
        max_honest_escalation: opts.max_honest_escalation,
        max_latency_ms: opts.max_latency_ms,
        max_callouts: opts.max_callouts,
    };
    let records: Vec<ArmRecord> = candidates
        .iter()
        .map(|a| arms::record(a, rows, &caps))
        .collect();
    let posteriors: Vec<thompson::Posterior> = records
        .iter()
        .map(|r| thompson::Posterior::from_counts(r.successes, r.failures))
        .collect();
    let feasible: Vec<usize> = (0..records.len())
        .filter(|&i| records[i].feasible)
        .collect();
    let (runs, _) = store::run_count_and_last_labelled(&db.pool, tenant).await?;
    let t = u64::try_from(runs).unwrap_or(0) + 1;
    let eps = thompson::epsilon(opts.epsilon0, t);
    let mut rng = match rng_seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_entropy(),
    };
    let chosen = thompson::select(&posteriors, &feasible, eps, &mut rng);
    let props = thompson::propensities(
        &posteriors,
        &feasible,
        eps,
        thompson::PROPENSITY_DRAWS,
        &mut rng,
    );
    let (agreed, total) = store::agreement(&db.pool, tenant).await?;
    let agreement_rate = if total > 0 {
        agreed as f64 / total as f64
    } else {
        0.0
    };
    let updated_at = crate::ab::rfc3339(now_ms);
    let policy_id = format!("tuned-{tenant}-{t}");
    // The chosen arm (or, with none feasible, the best infeasible one, reported and refused).
    let best_any =
        (0..records.len()).max_by(|&a, &b| posteriors[a].mean().total_cmp(&posteriors[b].mean()));
    let Some(pick) = chosen.or(best_any) else {
        return Err(EnsembleError::Invalid(format!(
            "no strategy voted at least {} times among tenant {tenant:?}'s labelled outcomes: nothing to tune",
            arms::MIN_VOTES
        )));
    };
    let arm = &candidates[pick];
    let rec = &records[pick];
    let fitted = stack::fit(arm, rows, opts.stack_min_rows);
    let policy = EnsemblePolicy {
        policy_id: policy_id.clone(),
        stack: fitted.clone().unwrap_or_else(|| base.stack.clone()),
        ..arm.clone()
    };
    let rp = replay::replay(&policy, rows);
    let reason = if chosen.is_none() {
        Some(format!(
            "no feasible arm: none of the {} arms keeps honest escalation ≤ {}, latency ≤ {} ms and callouts ≤ {}",
            records.len(),
            caps.max_honest_escalation,
            caps.max_latency_ms,
            caps.max_callouts
        ))
    } else {
        match (rp.snips, rp.logged) {
            (None, _) => Some(
                "no logged decision matches the candidate's: no off-policy evidence for it".into(),
            ),
            (Some(s), Some(l)) if s.hi < l.value => Some(format!(
                "replay estimate {:.4} (SNIPS, 95 % interval {:.4}–{:.4}) is below the logged policy's {:.4}",
                s.value, s.lo, s.hi, l.value
            )),
            _ => None,
        }
    };
    let outcome = if reason.is_some() {
        TuneOutcome::Refused
    } else {
        TuneOutcome::Published
    };
    let (lo, hi) = posteriors[pick].interval();
    let mut report = TuneReport {
        tenant_id: tenant.into(),
        n: policy.n,
        m: policy.strategies.len() as u32,
        strategy_weights: policy
            .strategies
            .iter()
            .map(|(k, v)| (k.clone(), v.weight))
            .collect(),
        agreement_rate,
        updated_at,
        outcome,
        reason,
        run_id: 0,
        policy_id: policy_id.clone(),
        arm: arm.policy_id.clone(),
        min_confidence: policy.min_confidence,
        labelled: rows.len(),
        reward: Estimate {
            value: posteriors[pick].mean(),
            lo,
            hi,
        },
        honest_escalation_rate: rec.honest_escalation_rate,
        containment_rate: rec.containment_rate,
        replay: rp,
        propensity: props.get(pick).copied().unwrap_or(0.0),
        epsilon: eps,
        arms: records.len(),
        feasible_arms: feasible.len(),
        stack_fitted: fitted.is_some(),
        bundle_version: None,
    };
    let detail = serde_json::json!({
        "report": &report,
        "policy": &policy,
        "arms": records,
        "propensities": props,
    });
    let mut conn = db.pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let run_id = store::insert_run(
        &mut tx,
        tenant,
        by.as_str(),
        outcome.as_str(),
        rows.len() as i64,
        Some(&policy_id),
        &detail,
        now_ms,
        crate::now_ms(),
    )
    .await?;
    report.run_id = run_id;
    if outcome == TuneOutcome::Published {
        let logged: Vec<LoggedArm> = feasible
            .iter()
            .filter(|&&i| props[i] > 0.0)
            .map(|&i| LoggedArm {
                policy: candidates[i].clone(),
                propensity: props[i],
            })
            .collect();
        let row = PolicyRow {
            tenant: tenant.into(),
            policy,
            arms: logged,
            run_id: Some(run_id),
            updated_at_ms: now_ms,
        };
        store::set_policy(&mut tx, &row, Reason::Tuned).await?;
    }
    tx.commit().await?;
    if outcome == TuneOutcome::Published {
        report.bundle_version = publish(db, seed, now_ms).await?;
    }
    Ok(report)
}

/// Republishes the bundle after a policy change; `None` when there is no key (a CLI without
/// the seed) or no champion yet (the policy goes into the first bundle).
async fn publish(
    db: &Db,
    seed: Option<&[u8; 32]>,
    now_ms: i64,
) -> Result<Option<i64>, EnsembleError> {
    let Some(seed) = seed else {
        return Ok(None);
    };
    match registry::republish(db, seed, now_ms).await {
        Ok(p) => Ok(Some(p.bundle_version)),
        Err(RegistryError::Conflict(m)) => {
            tracing::info!(reason = %m, "ensemble policy stored; no bundle published yet");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/ensemble/policy`: the tenant's policy in the seed's shape, with the policy itself.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PolicyView {
    pub tenant_id: String,
    pub n: u32,
    pub m: u32,
    pub strategy_weights: BTreeMap<String, f64>,
    pub agreement_rate: f64,
    pub updated_at: String,
    pub policy_id: String,
    /// `tenant` (stored for it) or `default` (`[ensemble.default]`).
    pub source: String,
    pub run_id: Option<i64>,
    /// The full policy as the bundle carries it.
    #[schema(value_type = Object)]
    pub policy: EnsemblePolicy,
}

/// The tenant's policy (its own, else the configured default); `None` without either.
pub async fn policy_view(db: &Db, tenant: &str) -> Result<Option<PolicyView>, EnsembleError> {
    check_id("tenant_id", tenant)?;
    let (policy, source, run_id, at) = match store::policy(&db.pool, tenant).await? {
        Some(r) => (r.policy, "tenant", r.run_id, Some(r.updated_at_ms)),
        None => match default_policy() {
            Some(p) => (p, "default", None, None),
            None => return Ok(None),
        },
    };
    let (agreed, total) = store::agreement(&db.pool, tenant).await?;
    Ok(Some(PolicyView {
        tenant_id: tenant.into(),
        n: policy.n,
        m: policy.strategies.len() as u32,
        strategy_weights: policy
            .strategies
            .iter()
            .map(|(k, v)| (k.clone(), v.weight))
            .collect(),
        agreement_rate: if total > 0 {
            agreed as f64 / total as f64
        } else {
            0.0
        },
        updated_at: at.map(crate::ab::rfc3339).unwrap_or_default(),
        policy_id: policy.policy_id.clone(),
        source: source.into(),
        run_id,
        policy,
    }))
}

/// Labelled outcomes of `tenant` (the cadence's count): exactly the rows a tune would learn
/// from, both sources, each pcs_id once.
pub async fn labelled_count(db: &Db, tenant: &str) -> Result<i64, sqlx::Error> {
    let n = outcomes::labelled(db, tenant).await?.len();
    Ok(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The cadence (`auto_tune`): every tenant with at least `min_samples` labelled outcomes and
/// `tune_every_labels` more than at its last run is tuned.
pub async fn run_periodic(db: &Db, seed: &[u8; 32], opts: &EnsembleOptions) {
    let tenants = match store::tenants(&db.pool).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "ensemble tune: cannot list tenants");
            return;
        }
    };
    for tenant in tenants {
        let due = async {
            let n = labelled_count(db, &tenant).await?;
            let (_, last) = store::run_count_and_last_labelled(&db.pool, &tenant).await?;
            Ok::<bool, sqlx::Error>(
                n >= opts.min_samples as i64
                    && last.is_none_or(|l| n - l >= opts.tune_every_labels as i64),
            )
        };
        match due.await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(%tenant, error = %e, "ensemble tune: cannot read the cadence");
                continue;
            }
        }
        match tune(
            db,
            Some(seed),
            opts,
            &tenant,
            Trigger::Schedule,
            None,
            crate::now_ms(),
        )
        .await
        {
            Ok(r) => {
                tracing::info!(%tenant, run = r.run_id, outcome = r.outcome.as_str(), policy = %r.policy_id, "ensemble tune")
            }
            Err(e) => tracing::warn!(%tenant, error = %e, "ensemble tune failed"),
        }
    }
}

fn counter(name: &str, help: &str, labels: &[&str]) -> prometheus::IntCounterVec {
    prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), labels)
        .expect("a valid metric name and labels")
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> prometheus::GaugeVec {
    prometheus::GaugeVec::new(prometheus::Opts::new(name, help), labels)
        .expect("a valid metric name and labels")
}

/// `kakeya_ensemble_tune_runs_total{outcome}`: `published`, `refused`, `insufficient_data`,
/// `error`. Process-wide, like the gauges below.
pub fn tune_runs_total() -> &'static prometheus::IntCounterVec {
    static C: std::sync::OnceLock<prometheus::IntCounterVec> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        counter(
            "kakeya_ensemble_tune_runs_total",
            "Ensemble policy tuning runs, by outcome",
            &["outcome"],
        )
    })
}

/// `kakeya_ensemble_agreement_rate{tenant}`, `kakeya_ensemble_containment_rate{tenant}`
/// (labelled hallucinated outcomes the serving policy escalated or rejected) and
/// `kakeya_ensemble_policy_info{tenant, policy_id}` (1), computed from the stored outcomes
/// and policies by [`refresh_gauges`].
pub fn gauges() -> &'static [prometheus::GaugeVec; 3] {
    static G: std::sync::OnceLock<[prometheus::GaugeVec; 3]> = std::sync::OnceLock::new();
    G.get_or_init(|| {
        [
            gauge(
                "kakeya_ensemble_agreement_rate",
                "Share of the tenant's ensemble outcomes whose strategies agreed",
                &["tenant"],
            ),
            gauge(
                "kakeya_ensemble_containment_rate",
                "Share of the tenant's labelled hallucinated outcomes escalated or rejected",
                &["tenant"],
            ),
            gauge(
                "kakeya_ensemble_policy_info",
                "1 for the ensemble policy each tenant is served",
                &["tenant", "policy_id"],
            ),
        ]
    })
}

pub fn register_metrics(registry: &prometheus::Registry) -> prometheus::Result<()> {
    registry.register(Box::new(tune_runs_total().clone()))?;
    for g in gauges() {
        registry.register(Box::new(g.clone()))?;
    }
    Ok(())
}

/// [`refresh_gauges`] at most every [`GAUGE_REFRESH`] (what `/metrics` calls on a scrape).
pub async fn refresh_gauges_throttled(db: &Db) -> Result<(), sqlx::Error> {
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    if let Ok(mut last) = LAST.lock() {
        if last.is_some_and(|t| t.elapsed() < GAUGE_REFRESH) {
            return Ok(());
        }
        *last = Some(std::time::Instant::now());
    }
    refresh_gauges(db).await
}

/// Recomputes the per-tenant gauges from the stored outcomes and policies.
pub async fn refresh_gauges(db: &Db) -> Result<(), sqlx::Error> {
    let [agreement, containment, info] = gauges();
    for tenant in store::tenants(&db.pool).await? {
        let (a, n) = store::agreement(&db.pool, &tenant).await?;
        if n > 0 {
            agreement
                .with_label_values(&[&tenant])
                .set(a as f64 / n as f64);
        }
        let rows = outcomes::labelled(db, &tenant).await?;
        let h: Vec<&Outcome> = rows.iter().filter(|o| o.hallucinated).collect();
        if !h.is_empty() {
            let c = h.iter().filter(|o| o.decision != Decision::Accept).count();
            containment
                .with_label_values(&[&tenant])
                .set(c as f64 / h.len() as f64);
        }
    }
    info.reset();
    for r in sqlx::query("SELECT tenant, policy_id FROM ensemble_policies")
        .fetch_all(&db.pool)
        .await?
    {
        let (t, p): (String, String) = (r.try_get("tenant")?, r.try_get("policy_id")?);
        info.with_label_values(&[&t, &p]).set(1.0);
    }
    Ok(())
}

/// How often [`refresh_gauges`] reads the store.
pub const GAUGE_REFRESH: std::time::Duration = std::time::Duration::from_secs(15);
