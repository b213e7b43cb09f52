//! SQL of the adaptive ensemble (migration 0017), `$n` placeholders through `sqlx::Any`, the
//! same on SQLite and PostgreSQL.

use super::outcomes::StrategyResult;
use kakeya_core::ensemble_policy::{Decision, EnsemblePolicy, EnsembleSection};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AnyPool, Row};
use std::collections::BTreeMap;

/// One arm of the draw that chose a tenant's policy, with its probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedArm {
    pub policy: EnsemblePolicy,
    pub propensity: f64,
}

/// A tenant's current policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRow {
    pub tenant: String,
    pub policy: EnsemblePolicy,
    /// The Thompson mixture the policy was drawn from (itself with probability 1 when set by
    /// hand).
    pub arms: Vec<LoggedArm>,
    pub run_id: Option<i64>,
    pub updated_at_ms: i64,
}

fn decode<T: serde::de::DeserializeOwned>(col: &str, s: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(s).map_err(|e| sqlx::Error::ColumnDecode {
        index: col.into(),
        source: Box::new(e),
    })
}

fn row_to_policy(r: &sqlx::any::AnyRow) -> Result<PolicyRow, sqlx::Error> {
    Ok(PolicyRow {
        tenant: r.try_get("tenant")?,
        policy: decode("policy", &r.try_get::<String, _>("policy")?)?,
        arms: decode(
            "arm_propensities",
            &r.try_get::<String, _>("arm_propensities")?,
        )?,
        run_id: r.try_get("run_id")?,
        updated_at_ms: r.try_get("updated_at_ms")?,
    })
}

const POLICY_COLUMNS: &str = "tenant, policy, arm_propensities, run_id, updated_at_ms";

pub async fn policy(pool: &AnyPool, tenant: &str) -> Result<Option<PolicyRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {POLICY_COLUMNS} FROM ensemble_policies WHERE tenant = $1"
    ))
    .bind(tenant)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(row_to_policy)
    .transpose()
}

/// The `ensemble` section of the next bundle: every stored tenant policy, and `default`.
/// A stored row that does not parse or validate is left out and logged (it was validated when
/// written; only a hand-edited database gets here) rather than blocking every publication.
pub async fn section(
    conn: &mut AnyConnection,
    default: Option<EnsemblePolicy>,
) -> Result<EnsembleSection, sqlx::Error> {
    let rows = sqlx::query("SELECT tenant, policy FROM ensemble_policies ORDER BY tenant")
        .fetch_all(&mut *conn)
        .await?;
    let mut tenants = BTreeMap::new();
    for r in rows {
        let tenant: String = r.try_get("tenant")?;
        let policy: String = r.try_get("policy")?;
        match serde_json::from_str::<EnsemblePolicy>(&policy) {
            Ok(p) if p.validate().is_ok() => {
                tenants.insert(tenant, p);
            }
            _ => {
                tracing::error!(%tenant, "stored ensemble policy is invalid: left out of the bundle")
            }
        }
    }
    Ok(EnsembleSection { default, tenants })
}

/// Why a policy changed (`ensemble_policy_history.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = EnsembleReason)]
pub enum Reason {
    Tuned,
    Manual,
    Removed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Tuned => "tuned",
            Reason::Manual => "manual",
            Reason::Removed => "removed",
        }
    }
}

/// Stores `row` as the tenant's policy (replacing any) and records it in the history.
pub async fn set_policy(
    conn: &mut AnyConnection,
    row: &PolicyRow,
    reason: Reason,
) -> Result<(), sqlx::Error> {
    let policy = serde_json::to_string(&row.policy).unwrap_or_default();
    let arms = serde_json::to_string(&row.arms).unwrap_or_default();
    sqlx::query(
        "INSERT INTO ensemble_policies (tenant, policy_id, policy, arm_propensities, run_id, \
         updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant) DO UPDATE SET \
         policy_id = excluded.policy_id, policy = excluded.policy, \
         arm_propensities = excluded.arm_propensities, run_id = excluded.run_id, \
         updated_at_ms = excluded.updated_at_ms",
    )
    .bind(&row.tenant)
    .bind(&row.policy.policy_id)
    .bind(&policy)
    .bind(&arms)
    .bind(row.run_id)
    .bind(row.updated_at_ms)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO ensemble_policy_history (tenant, policy_id, policy, reason, run_id, \
         created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&row.tenant)
    .bind(&row.policy.policy_id)
    .bind(&policy)
    .bind(reason.as_str())
    .bind(row.run_id)
    .bind(row.updated_at_ms)
    .execute(&mut *conn)
    .await?;
    // audit: the policy applied, in the caller's transaction.
    let e = crate::audit::Event::PolicyApplied {
        tenant: row.tenant.clone(),
        policy_id: row.policy.policy_id.to_string(),
        reason: reason.as_str().into(),
        run_id: row.run_id,
    };
    crate::audit::append(conn, &e, row.updated_at_ms).await?;
    Ok(())
}

/// The decision-log tenants that hold `pcs_id` (at most two: one is the answer, two is
/// ambiguous).
pub async fn tenants_of(pool: &AnyPool, pcs_id: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query("SELECT DISTINCT tenant FROM decision_log WHERE pcs_id = $1 LIMIT 2")
        .bind(pcs_id)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.try_get("tenant"))
        .collect()
}

/// The decision the decision log recorded for (tenant, pcs_id): accepted and not escalated =
/// accept, escalated = escalate, otherwise reject.
pub async fn logged_decision(
    pool: &AnyPool,
    tenant: &str,
    pcs_id: &str,
) -> Result<Option<Decision>, sqlx::Error> {
    let r = sqlx::query(
        "SELECT accepted, escalated FROM decision_log WHERE tenant = $1 AND pcs_id = $2 \
         ORDER BY id LIMIT 1",
    )
    .bind(tenant)
    .bind(pcs_id)
    .fetch_optional(pool)
    .await?;
    r.map(|r| {
        let (a, e): (i64, i64) = (r.try_get("accepted")?, r.try_get("escalated")?);
        Ok(match (a != 0, e != 0) {
            (_, true) => Decision::Escalate,
            (true, false) => Decision::Accept,
            (false, false) => Decision::Reject,
        })
    })
    .transpose()
}

/// A feedback row to store.
pub struct NewOutcome<'a> {
    pub tenant: &'a str,
    pub pcs_id: &'a str,
    pub agreed: bool,
    pub votes: &'a [StrategyResult],
    pub policy_id: Option<&'a str>,
    pub decision: Decision,
    pub propensity: f64,
}

/// Stores the outcome of one decision; a later feedback on the same decision replaces it.
pub async fn upsert_outcome(
    pool: &AnyPool,
    o: &NewOutcome<'_>,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ensemble_outcomes (tenant, pcs_id, agreed, votes, policy_id, decision, \
         propensity, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (tenant, pcs_id) DO UPDATE SET agreed = excluded.agreed, \
         votes = excluded.votes, policy_id = excluded.policy_id, decision = excluded.decision, \
         propensity = excluded.propensity, created_at_ms = excluded.created_at_ms",
    )
    .bind(o.tenant)
    .bind(o.pcs_id)
    .bind(i64::from(o.agreed))
    .bind(serde_json::to_string(o.votes).unwrap_or_default())
    .bind(o.policy_id)
    .bind(o.decision.as_str())
    .bind(o.propensity)
    .bind(now_ms)
    .execute(pool)
    .await?;
    Ok(())
}

/// Agreement of the tenant's outcomes: (agreed, total).
pub async fn agreement(pool: &AnyPool, tenant: &str) -> Result<(i64, i64), sqlx::Error> {
    let r = sqlx::query(
        "SELECT CAST(COALESCE(SUM(agreed), 0) AS BIGINT) AS a, COUNT(*) AS n FROM ensemble_outcomes \
         WHERE tenant = $1",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await?;
    Ok((r.try_get("a")?, r.try_get("n")?))
}

/// Tenants with outcomes.
pub async fn tenants(pool: &AnyPool) -> Result<Vec<String>, sqlx::Error> {
    // Both sources of outcomes (see `outcomes`): feedback and the decision log's own votes.
    sqlx::query(
        "SELECT tenant FROM ensemble_outcomes UNION \
         SELECT tenant FROM decision_log WHERE votes IS NOT NULL ORDER BY tenant",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| r.try_get("tenant"))
    .collect()
}

/// A tuning run as stored.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RunRow {
    pub id: i64,
    pub tenant: String,
    pub triggered_by: String,
    pub outcome: String,
    pub labelled: i64,
    pub policy_id: Option<String>,
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
}

#[allow(clippy::too_many_arguments)]
pub async fn insert_run(
    conn: &mut AnyConnection,
    tenant: &str,
    triggered_by: &str,
    outcome: &str,
    labelled: i64,
    policy_id: Option<&str>,
    report: &serde_json::Value,
    started_at_ms: i64,
    finished_at_ms: i64,
) -> Result<i64, sqlx::Error> {
    let r = sqlx::query(
        "INSERT INTO ensemble_tune_runs (tenant, triggered_by, outcome, labelled, policy_id, \
         report, started_at_ms, finished_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         RETURNING id",
    )
    .bind(tenant)
    .bind(triggered_by)
    .bind(outcome)
    .bind(labelled)
    .bind(policy_id)
    .bind(report.to_string())
    .bind(started_at_ms)
    .bind(finished_at_ms)
    .fetch_one(&mut *conn)
    .await?;
    r.try_get("id")
}

/// Runs of `tenant`, newest first.
pub async fn runs(pool: &AnyPool, tenant: &str, limit: i64) -> Result<Vec<RunRow>, sqlx::Error> {
    sqlx::query(
        "SELECT id, tenant, triggered_by, outcome, labelled, policy_id, report, started_at_ms, \
         finished_at_ms FROM ensemble_tune_runs WHERE tenant = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(tenant)
    .bind(limit)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok(RunRow {
            id: r.try_get("id")?,
            tenant: r.try_get("tenant")?,
            triggered_by: r.try_get("triggered_by")?,
            outcome: r.try_get("outcome")?,
            labelled: r.try_get("labelled")?,
            policy_id: r.try_get("policy_id")?,
            report: decode("report", &r.try_get::<String, _>("report")?)?,
            started_at_ms: r.try_get("started_at_ms")?,
            finished_at_ms: r.try_get("finished_at_ms")?,
        })
    })
    .collect()
}

/// Runs of `tenant` so far, and the labelled count of the last scheduled or API run.
pub async fn run_count_and_last_labelled(
    pool: &AnyPool,
    tenant: &str,
) -> Result<(i64, Option<i64>), sqlx::Error> {
    let r = sqlx::query(
        "SELECT COUNT(*) AS n, MAX(labelled) AS l FROM ensemble_tune_runs WHERE tenant = $1",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await?;
    Ok((r.try_get("n")?, r.try_get("l")?))
}

/// A history entry.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HistoryRow {
    pub id: i64,
    pub policy_id: Option<String>,
    pub reason: String,
    pub run_id: Option<i64>,
    pub created_at_ms: i64,
}

pub async fn history(
    pool: &AnyPool,
    tenant: &str,
    limit: i64,
) -> Result<Vec<HistoryRow>, sqlx::Error> {
    sqlx::query(
        "SELECT id, policy_id, reason, run_id, created_at_ms FROM ensemble_policy_history \
         WHERE tenant = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(tenant)
    .bind(limit)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok(HistoryRow {
            id: r.try_get("id")?,
            policy_id: r.try_get("policy_id")?,
            reason: r.try_get("reason")?,
            run_id: r.try_get("run_id")?,
            created_at_ms: r.try_get("created_at_ms")?,
        })
    })
    .collect()
}
