//! The advisor: recommendations computed from the data, each with its projected monthly
//! saving (modelled on the last 30 days), its risk and the policy diff it applies; after
//! apply, the realised saving is the tenant's daily cost since the apply against the
//! same-length window before it.
//!
//! Rules:
//! * `budget_cap`: a tenant whose forecast month-end spend exceeds its hard cap with
//!   probability above one half, while its hard action lets traffic through (`alert`,
//!   `degrade`): throttle at the hard cap. Saving = the forecast overrun.
//! * `micro_vote_off`, `rag_off`: a tenant whose policy enables the micro-vote (RAG
//!   grounding) where that vote, cast in at least [`vote_value::MIN_VOTES`] of the last 30
//!   days' decisions, changed none of them when the N-of-M rule is re-run without it
//!   ([`vote_value`]): drop the strategy from the tenant's policy. Saving = the tenant's
//!   model-call cost of the last 30 days for the micro-vote; for RAG, the filter CPU time its
//!   vote took in those days (`cost_records.rag_cpu_ns`, the pipeline's `x-kakeya-rag-ns`)
//!   priced by each day's `per_cpu_second`. `no_data` when no decision carries votes.
//! * `micro_vote_deadline`, `dedup_ttl`: from the recorded callout waits and resubmission
//!   ages ([`timing_rules`]); `no_data` while none are recorded.

use super::budgets::{self, Budget};
use super::options::CostOptions;
use super::prices::{day_of_ms, DAY_MS};
use super::{record, timing_rules, vote_value, CostError};
use crate::ensemble::store::{self as policies, LoggedArm, PolicyRow, Reason};
use crate::store::Db;
use kakeya_core::ensemble_policy::EnsemblePolicy;
use serde::{Deserialize, Serialize};
use sqlx::{Connection, Row};

/// Days the saving is modelled on.
pub const MODEL_DAYS: i64 = 30;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = CostRecommendation)]
pub struct Recommendation {
    pub id: String,
    /// `budget_cap`, `micro_vote_off`, `rag_off`, `micro_vote_deadline` or `dedup_ttl`.
    pub kind: String,
    pub tenant: Option<String>,
    /// `pending`, `applied` or `superseded`.
    pub status: String,
    pub created_at: String,
    pub applied_at: Option<String>,
    pub projected_monthly_saving: f64,
    /// `low`, `medium`, `high`.
    pub risk: String,
    pub rationale: String,
    /// The policy change: `{path, from, to}`.
    pub diff: serde_json::Value,
    /// After apply: cost per day before and after, and the monthly saving they imply.
    pub realised: Option<Realised>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Realised {
    pub window_days: i64,
    pub cost_per_day_before: f64,
    pub cost_per_day_after: f64,
    pub monthly_saving: f64,
}

/// A rule that could not run, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Skipped {
    pub rule: String,
    /// `no_data`.
    pub status: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Recommendations {
    pub currency: String,
    pub recommendations: Vec<Recommendation>,
    pub skipped: Vec<Skipped>,
}

/// Standard normal CDF.
fn phi(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// P(month-end spend > hard cap) and the forecast overrun, from `spent` so far and the
/// forecast of the remaining `days_left` days (errors summed as fully correlated: the
/// conservative width).
pub fn overrun(spent: f64, hard_cap: f64, fc: &[super::forecast::Point]) -> (f64, f64) {
    let mean: f64 = spent + fc.iter().map(|p| p.point).sum::<f64>();
    let sd: f64 = fc.iter().map(|p| (p.hi95 - p.point) / 1.959_963_985).sum();
    let p = if sd > 0.0 {
        1.0 - phi((hard_cap - mean) / sd)
    } else {
        f64::from(u8::from(mean > hard_cap))
    };
    (p, (mean - hard_cap).max(0.0))
}

async fn tenant_days(
    db: &Db,
    opts: &CostOptions,
    tenant: &str,
    from: i64,
    to: i64,
) -> Result<Vec<f64>, CostError> {
    let sel = record::Selection {
        from_day: from,
        to_day: to,
        tenant: Some(tenant.to_string()),
        ..Default::default()
    };
    let rows = super::rollup(db, opts, &sel).await?;
    Ok(super::daily_series(&rows, from, to)
        .into_iter()
        .next()
        .map(|(_, _, y)| y)
        .unwrap_or_default())
}

/// A recommendation before it is stored.
pub struct Fresh {
    pub kind: &'static str,
    /// `None` for a deployment-wide one (`dedup_ttl`).
    pub tenant: Option<String>,
    pub saving: f64,
    pub risk: &'static str,
    pub rationale: String,
    pub diff: serde_json::Value,
}

fn no_data(rule: &str, reason: &str) -> Skipped {
    Skipped {
        rule: rule.into(),
        status: "no_data".into(),
        reason: reason.into(),
    }
}

/// `budget_cap` for every budget whose forecast overruns its hard cap.
async fn budget_rule(db: &Db, opts: &CostOptions, today: i64) -> Result<Vec<Fresh>, CostError> {
    let (_, first, next) = budgets::month_of(today);
    let mut fresh = Vec::new();
    for b in budgets::list(db).await? {
        let t = &b.budget.tenant;
        if matches!(b.budget.hard_action.as_str(), "throttle" | "deny") {
            continue;
        }
        let y = tenant_days(db, opts, t, today - super::FORECAST_HISTORY_DAYS, today).await?;
        let Some(fit) = super::forecast::fit(&y) else {
            continue;
        };
        let spent: f64 = tenant_days(db, opts, t, first, today + 1)
            .await?
            .iter()
            .sum();
        let left = usize::try_from(next - today - 1).unwrap_or(0);
        let (p, over) = overrun(spent, b.budget.hard_cap, &fit.forecast(left));
        if p > 0.5 {
            fresh.push(Fresh {
                kind: "budget_cap",
                tenant: Some(t.clone()),
                saving: over,
                risk: "medium",
                rationale: format!(
                    "month-end spend forecast above the hard cap {} with probability {:.2}; \
                     its hard action {} lets traffic through",
                    b.budget.hard_cap, p, b.budget.hard_action
                ),
                diff: serde_json::json!({"path": format!("budgets.{t}.hard_action"),
                                         "from": b.budget.hard_action, "to": "throttle"}),
            });
        }
    }
    Ok(fresh)
}

/// The strategies the vote rule may turn off, with the kind of their recommendation.
pub const VOTE_RULES: [(&str, &str); 2] = [
    ("micro_vote", "micro_vote_off"),
    ("rag_grounding", "rag_off"),
];

/// The policy without `strategy` (its stacking terms too), under a derived id.
fn without(policy: &EnsemblePolicy, strategy: &str) -> EnsemblePolicy {
    let mut p = policy.clone();
    p.strategies.remove(strategy);
    p.stack.coef.remove(strategy);
    p.stack.abstain.remove(strategy);
    p.policy_id = format!("{}-no-{strategy}", policy.policy_id);
    p
}

/// The cost of `tenant`'s RAG votes over days `[from, to)`: their recorded in-filter time,
/// priced per day by the `per_cpu_second` in force for the tenant (an unpriced day costs
/// nothing here; the RAG time is part of the filter's, already in the compute cost).
async fn rag_cost(
    db: &Db,
    opts: &CostOptions,
    tenant: &str,
    (from, to): (i64, i64),
) -> Result<f64, CostError> {
    let book = super::book(db, opts).await?;
    Ok(record::rag_sums(db, tenant, from, to)
        .await?
        .iter()
        .filter_map(|&(day, ns)| {
            book.resolve(tenant, day)
                .map(|p| ns as f64 / 1e9 * p.per_cpu_second)
        })
        .sum())
}

/// `micro_vote_off` / `rag_off` over the last [`MODEL_DAYS`] days before `now_ms`.
async fn vote_rule(
    db: &Db,
    opts: &CostOptions,
    now_ms: i64,
) -> Result<(Vec<Fresh>, Vec<Skipped>), CostError> {
    let (from_ms, to_ms) = (now_ms - MODEL_DAYS * DAY_MS, now_ms);
    let tenants = vote_value::tenants(db, from_ms, to_ms).await?;
    if tenants.is_empty() {
        let reason = "no decision of the last 30 days carries votes (only tenants with an \
                      ensemble policy record them)";
        return Ok((
            Vec::new(),
            VOTE_RULES.iter().map(|(_, k)| no_data(k, reason)).collect(),
        ));
    }
    let mut fresh = Vec::new();
    for t in tenants {
        let Some(view) = crate::ensemble::policy_view(db, &t)
            .await
            .map_err(|e| CostError::Invalid(format!("the ensemble policy of {t}: {e}")))?
        else {
            continue;
        };
        let policy = view.policy;
        let (decisions, other) =
            vote_value::decisions(db, &t, &policy.policy_id, from_ms, to_ms).await?;
        for (strategy, kind) in VOTE_RULES {
            if !policy.strategies.contains_key(strategy) {
                continue;
            }
            let imp = vote_value::impact(&policy, &decisions, strategy);
            let next = without(&policy, strategy);
            if imp.voted < vote_value::MIN_VOTES || imp.changed > 0 || next.validate().is_err() {
                continue;
            }
            let today = day_of_ms(now_ms);
            let spent = if strategy == "micro_vote" {
                let sel = record::Selection {
                    from_day: today - MODEL_DAYS,
                    to_day: today,
                    tenant: Some(t.clone()),
                    ..Default::default()
                };
                let days = super::rollup(db, opts, &sel).await?;
                days.iter()
                    .filter_map(|d| d.cost.map(|c| c.model_calls))
                    .sum::<f64>()
            } else {
                rag_cost(db, opts, &t, (today - MODEL_DAYS, today)).await?
            };
            let saving = spent * 30.0 / MODEL_DAYS as f64;
            fresh.push(Fresh {
                kind,
                tenant: Some(t.clone()),
                saving,
                risk: "low",
                rationale: format!(
                    "{strategy} voted in {} of the {} decisions of the last {MODEL_DAYS} days \
                     under policy {} and changed none of them (re-decided by its N-of-M rule \
                     without the vote; {other} decisions under other policies not replayed)",
                    imp.voted, imp.decisions, policy.policy_id
                ),
                diff: serde_json::json!({"path": format!("ensemble.{t}.strategies.{strategy}"),
                                         "from": policy.strategies.get(strategy), "to": null,
                                         "policy_id": {"from": policy.policy_id, "to": next.policy_id}}),
            });
        }
    }
    Ok((fresh, Vec::new()))
}

/// Computes the recommendations now (pending ones of earlier runs are superseded), then lists
/// them with the applied ones and their realised savings.
pub async fn recommend(
    db: &Db,
    opts: &CostOptions,
    now_ms: i64,
) -> Result<Recommendations, CostError> {
    let today = day_of_ms(now_ms);
    let mut fresh = budget_rule(db, opts, today).await?;
    let (votes, mut skipped) = vote_rule(db, opts, now_ms).await?;
    fresh.extend(votes);
    for (rule, (recs, missing)) in [
        (
            "micro_vote_deadline",
            timing_rules::deadline_rule(db, now_ms).await?,
        ),
        ("dedup_ttl", timing_rules::ttl_rule(db, opts, now_ms).await?),
    ] {
        fresh.extend(recs);
        skipped.extend(missing.map(|reason| no_data(rule, &reason)));
    }
    sqlx::query("UPDATE cost_recommendations SET status = 'superseded' WHERE status = 'pending'")
        .execute(&db.pool)
        .await?;
    for f in fresh {
        let body = serde_json::json!({"risk": f.risk, "rationale": f.rationale, "diff": f.diff});
        sqlx::query(
            "INSERT INTO cost_recommendations (id, kind, tenant, status, created_at_ms, \
             projected_monthly_saving, body) VALUES ($1, $2, $3, 'pending', $4, $5, $6)",
        )
        .bind(format!(
            "{}-{}-{now_ms}",
            f.kind,
            f.tenant.as_deref().unwrap_or("all")
        ))
        .bind(f.kind)
        .bind(f.tenant)
        .bind(now_ms)
        .bind(f.saving)
        .bind(body.to_string())
        .execute(&db.pool)
        .await?;
    }
    let mut recommendations = Vec::new();
    for mut r in list(db).await? {
        if let (Some(t), Some(at)) = (&r.tenant, r.applied_at.as_deref()) {
            let at_ms = crate::learn::parse_rfc3339(at).unwrap_or(now_ms);
            r.realised = Some(realised(db, opts, t, day_of_ms(at_ms), today).await?);
        }
        recommendations.push(r);
    }
    Ok(Recommendations {
        currency: opts.currency.clone(),
        recommendations,
        skipped,
    })
}

async fn realised(
    db: &Db,
    opts: &CostOptions,
    tenant: &str,
    applied_day: i64,
    today: i64,
) -> Result<Realised, CostError> {
    let n = (today - applied_day).max(1);
    let per_day = |y: Vec<f64>| y.iter().sum::<f64>() / n as f64;
    let before = per_day(tenant_days(db, opts, tenant, applied_day - n, applied_day).await?);
    let after = per_day(tenant_days(db, opts, tenant, applied_day, applied_day + n).await?);
    Ok(Realised {
        window_days: n,
        cost_per_day_before: before,
        cost_per_day_after: after,
        monthly_saving: (before - after) * 30.0,
    })
}

const COLUMNS: &str =
    "id, kind, tenant, status, created_at_ms, applied_at_ms, projected_monthly_saving, body";

fn row_to(r: &sqlx::any::AnyRow) -> Result<Recommendation, sqlx::Error> {
    let body = crate::store::json_column(r, "body")?.unwrap_or_default();
    let s = |k: &str| {
        body.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let applied: Option<i64> = r.try_get("applied_at_ms")?;
    Ok(Recommendation {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        tenant: r.try_get("tenant")?,
        status: r.try_get("status")?,
        created_at: crate::learn::rfc3339(r.try_get("created_at_ms")?),
        applied_at: applied.map(crate::learn::rfc3339),
        projected_monthly_saving: r.try_get("projected_monthly_saving")?,
        risk: s("risk"),
        rationale: s("rationale"),
        diff: body.get("diff").cloned().unwrap_or_default(),
        realised: None,
    })
}

/// Pending and applied recommendations, newest first.
pub async fn list(db: &Db) -> Result<Vec<Recommendation>, CostError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM cost_recommendations WHERE status <> 'superseded' \
         ORDER BY created_at_ms DESC, id LIMIT 1000"
    ))
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.iter().map(row_to).collect::<Result<_, _>>()?)
}

/// Applies a pending recommendation: its diff changes the policy, then it is `applied`.
pub async fn apply(db: &Db, id: &str, now_ms: i64) -> Result<Recommendation, CostError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM cost_recommendations WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?
    .ok_or_else(|| CostError::NotFound(format!("no recommendation {id:?}")))?;
    let r = row_to(&row)?;
    if r.status != "pending" {
        return Err(CostError::Conflict(format!(
            "recommendation {id} is {}, not pending: fetch GET /v1/cost/recommendations again",
            r.status
        )));
    }
    if r.kind == "budget_cap" {
        let tenant = r.tenant.clone().unwrap_or_default();
        let b = budgets::list(db)
            .await?
            .into_iter()
            .find(|b| b.budget.tenant == tenant)
            .ok_or_else(|| {
                CostError::Conflict(format!("tenant {tenant} has no budget any more"))
            })?;
        let to = r
            .diff
            .get("to")
            .and_then(|v| v.as_str())
            .unwrap_or("throttle");
        let nb = Budget {
            hard_action: to.to_string(),
            ..b.budget
        };
        budgets::set(db, &nb, now_ms).await?;
    }
    if let Some((strategy, _)) = VOTE_RULES.iter().find(|(_, k)| *k == r.kind) {
        let tenant = r.tenant.as_deref().unwrap_or_default();
        change_policy(db, tenant, strategy, now_ms, |p| without(p, strategy)).await?;
    }
    if r.kind == "micro_vote_deadline" {
        let tenant = r.tenant.as_deref().unwrap_or_default();
        let ms = r
            .diff
            .get("to")
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| CostError::Invalid(format!("recommendation {id} has no deadline")))?;
        change_policy(db, tenant, "micro_vote", now_ms, |p| {
            timing_rules::with_deadline(p, ms)
        })
        .await?;
    }
    if r.kind == "dedup_ttl" {
        return Err(CostError::Conflict(format!(
            "dedup_ttl_secs is read from kakeya.toml at start: set dedup_ttl_secs = {} there \
             and restart (the recommendation stays pending)",
            r.diff.get("to").cloned().unwrap_or_default()
        )));
    }
    let n = sqlx::query(
        "UPDATE cost_recommendations SET status = 'applied', applied_at_ms = $1 \
         WHERE id = $2 AND status = 'pending'",
    )
    .bind(now_ms)
    .bind(id)
    .execute(&db.pool)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(CostError::Conflict(format!(
            "recommendation {id} is no longer pending"
        )));
    }
    Ok(Recommendation {
        status: "applied".into(),
        applied_at: Some(crate::learn::rfc3339(now_ms)),
        ..r
    })
}

/// Stores `change` of the tenant's current policy as its own (a manual change, in the policy
/// history); 409 when the policy no longer has `strategy` or the result would be invalid.
async fn change_policy(
    db: &Db,
    tenant: &str,
    strategy: &str,
    now_ms: i64,
    change: impl FnOnce(&EnsemblePolicy) -> EnsemblePolicy,
) -> Result<(), CostError> {
    let policy = crate::ensemble::policy_view(db, tenant)
        .await
        .map_err(|e| CostError::Invalid(format!("the ensemble policy of {tenant}: {e}")))?
        .map(|v| v.policy)
        .filter(|p| p.strategies.contains_key(strategy))
        .ok_or_else(|| {
            CostError::Conflict(format!(
                "the policy of {tenant} no longer enables {strategy}: fetch the recommendations again"
            ))
        })?;
    let next = change(&policy);
    next.validate()
        .map_err(|e| CostError::Conflict(format!("the changed policy: {e}")))?;
    let row = PolicyRow {
        tenant: tenant.to_string(),
        arms: vec![LoggedArm {
            policy: next.clone(),
            propensity: 1.0,
        }],
        policy: next,
        run_id: None,
        updated_at_ms: now_ms,
    };
    let mut conn = db.pool.acquire().await?;
    let mut tx = conn.begin().await?;
    policies::set_policy(&mut tx, &row, Reason::Manual).await?;
    tx.commit().await?;
    Ok(())
}
