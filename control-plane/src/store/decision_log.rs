//! The decision log: one row per *fresh* decision, for audit and analytics.
//!
//! Keyed by the WAL record id (`ON CONFLICT (record_id) DO NOTHING`), so replaying the WAL
//! can never double a row. It holds the PCS signals and the verdict, never the raw body.

use crate::decision_features::{parse_column, DecidedFeatures};
use crate::wal::WalRecord;
use kakeya_core::{Pcs, VerifyResult};
use serde::Serialize;
use sqlx::{AnyConnection, AnyPool, Row};

pub struct NewDecision<'a> {
    pub record_id: &'a str,
    pub tenant: &'a str,
    pub pcs_id: &'a str,
    pub d_hat: f64,
    pub coh_star: f64,
    pub r: f64,
    pub budget: f64,
    pub regime: &'a str,
    pub accepted: bool,
    pub escalated: bool,
    pub reason: Option<&'a str>,
    pub status: u16,
    pub cacheable: bool,
    pub verify_ns: Option<u64>,
    pub created_at_ms: i64,
    /// The gate's risk assessment, when the answer was scored.
    pub risk: Option<&'a kakeya_core::verify::RiskSummary>,
    /// [`kakeya_core::features::pcs_version`] of the PCS (tenant statistics are kept per
    /// version).
    pub pcs_version: &'a str,
    /// The features the gate scored with; only with a risk.
    pub features: Option<&'a DecidedFeatures>,
    /// Drawn into the audit sample ([`crate::review::audit`]).
    pub audit_sample: bool,
    /// The ensemble's verdict and votes (compact JSON), when the tenant had a policy.
    pub votes: Option<String>,
    /// The task kind of the signed evidence (`qa`, `dialogue`, …), as ingest took it from the
    /// request ([`WalRecord::task`]: the WAL body no longer holds the evidence); `None`
    /// without one.
    pub task: Option<&'a str>,
    /// The micro-vote callout's wait, ns ([`WalRecord::microvote_ns`]).
    pub microvote_ns: Option<u64>,
}

impl<'a> NewDecision<'a> {
    pub fn new(
        record_id: &'a str,
        rec: &'a WalRecord,
        vr: &'a VerifyResult,
        pcs: &'a Pcs,
        status: u16,
    ) -> Self {
        NewDecision {
            record_id,
            tenant: &rec.tenant,
            pcs_id: &pcs.pcs_id,
            d_hat: pcs.d_hat,
            coh_star: pcs.coh_star,
            r: pcs.r,
            budget: pcs.budget,
            regime: &pcs.regime,
            accepted: vr.accepted,
            escalated: vr.escalated,
            reason: vr.reason.as_deref(),
            status,
            cacheable: rec.cacheable,
            verify_ns: rec.verify_ns,
            created_at_ms: rec.ts_ms,
            risk: vr.risk.as_ref(),
            pcs_version: kakeya_core::features::pcs_version(pcs),
            features: features_of(rec, vr),
            audit_sample: false,
            votes: vr.ensemble.as_ref().map(|e| e.to_json()),
            task: rec.task.as_deref(),
            microvote_ns: rec.microvote_ns,
        }
    }
}

/// The record's features when they belong in the row: the decision was scored and they pass
/// the ingest checks again (a row never holds a vector ingest would have refused).
fn features_of<'a>(rec: &'a WalRecord, vr: &VerifyResult) -> Option<&'a DecidedFeatures> {
    let f = rec.features.as_ref()?;
    vr.risk.as_ref()?;
    match f.check() {
        Ok(()) => Some(f),
        Err(e) => {
            tracing::warn!(tenant = %rec.tenant, error = %e, "WAL record features not stored");
            None
        }
    }
}

/// Inserts the row unless this record id is already logged; true when inserted.
pub async fn insert(conn: &mut AnyConnection, d: &NewDecision<'_>) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO decision_log (record_id, tenant, pcs_id, d_hat, coh_star, r, budget, regime, accepted, \
         escalated, reason, status, cacheable, verify_ns, created_at_ms, risk, risk_band, \
         model_version, arm, bundle_version, pcs_version, feature_schema, features, audit_sample, votes, task, \
         microvote_ns) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
         $19, $20, $21, $22, $23, $24, $25, $26, $27) \
         ON CONFLICT (record_id) DO NOTHING",
    )
    .bind(d.record_id)
    .bind(d.tenant)
    .bind(d.pcs_id)
    .bind(d.d_hat)
    .bind(d.coh_star)
    .bind(d.r)
    .bind(d.budget)
    .bind(d.regime)
    .bind(i64::from(d.accepted))
    .bind(i64::from(d.escalated))
    .bind(d.reason.map(str::to_string))
    .bind(i64::from(d.status))
    .bind(i64::from(d.cacheable))
    .bind(d.verify_ns.map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
    .bind(d.created_at_ms)
    .bind(d.risk.map(|r| r.score))
    .bind(d.risk.map(|r| r.band.clone()))
    .bind(d.risk.map(|r| r.model_version.clone()))
    .bind(d.risk.map(|r| r.arm.clone()))
    .bind(d.risk.map(|r| i64::try_from(r.bundle_version).unwrap_or(i64::MAX)))
    .bind(d.pcs_version)
    .bind(d.features.map(|f| f.schema.clone()))
    .bind(d.features.map(DecidedFeatures::values_json))
    .bind(i64::from(d.audit_sample))
    .bind(d.votes.clone())
    .bind(d.task)
    .bind(d.microvote_ns.map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
    // Not a cached prepared statement: sqlx 0.8's Any driver declares a NULL f64 (an unscored
    // decision's risk) to PostgreSQL as float4, and a statement cached with that type refuses
    // every later scored row on the connection (22P03). Unnamed, each call is typed anew.
    .persistent(false)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// A decision-log row as served by `GET /v1/decisions`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DecisionRow {
    pub id: i64,
    pub record_id: String,
    pub tenant: String,
    pub pcs_id: String,
    pub d_hat: f64,
    pub coh_star: f64,
    pub r: f64,
    pub budget: f64,
    pub regime: String,
    pub accepted: bool,
    pub escalated: bool,
    pub reason: Option<String>,
    pub status: u16,
    pub cacheable: bool,
    pub verify_ns: Option<i64>,
    pub created_at_ms: i64,
    /// Calibrated hallucination risk, when the gate scored the answer.
    pub risk: Option<f64>,
    /// `low`, `medium` or `high`.
    pub risk_band: Option<String>,
    pub model_version: Option<String>,
    /// `champion`, `challenger` or `canary`.
    pub arm: Option<String>,
    pub bundle_version: Option<i64>,
    /// Feature schema of `features` (`hrs-features-v1`); `null` when not scored.
    pub feature_schema: Option<String>,
    /// The feature vector the gate scored with, in the schema's order
    /// (`kakeya_core::features::FEATURE_NAMES`); `null` when not scored.
    pub features: Option<Vec<f64>>,
    /// Queued for review by the audit sample (accepted, not escalated).
    pub audit_sample: bool,
    /// The ensemble's verdict and every vote (`policy_id`, `verdict`, `votes`); `null` when
    /// the tenant had no ensemble policy.
    #[schema(value_type = Option<Object>)]
    pub votes: Option<serde_json::Value>,
    /// The task kind of the signed evidence (`qa`, `dialogue`, `summarization`, `rag`,
    /// `other`); `null` when the PCS carried none (migration 0026).
    pub task: Option<String>,
}

const COLUMNS: &str =
    "id, record_id, tenant, pcs_id, d_hat, coh_star, r, budget, regime, accepted, escalated, \
                       reason, status, cacheable, verify_ns, created_at_ms, risk, risk_band, \
                       model_version, arm, bundle_version, feature_schema, features, audit_sample, votes, task";

/// The `features` column of a row, decoded (`None` when NULL).
pub(crate) fn features_column(
    r: &sqlx::any::AnyRow,
    schema: Option<&str>,
) -> Result<Option<Vec<f64>>, sqlx::Error> {
    let Some(json) = r.try_get::<Option<String>, _>("features")? else {
        return Ok(None);
    };
    parse_column(schema.unwrap_or_default(), &json)
        .map(Some)
        .map_err(|e| sqlx::Error::ColumnDecode {
            index: "features".into(),
            source: e.into(),
        })
}

fn row_to_decision(r: &sqlx::any::AnyRow) -> Result<DecisionRow, sqlx::Error> {
    let feature_schema: Option<String> = r.try_get("feature_schema")?;
    Ok(DecisionRow {
        features: features_column(r, feature_schema.as_deref())?,
        feature_schema,
        audit_sample: r.try_get::<i64, _>("audit_sample")? != 0,
        votes: super::json_column(r, "votes")?,
        task: r.try_get("task")?,
        id: r.try_get("id")?,
        record_id: r.try_get("record_id")?,
        tenant: r.try_get("tenant")?,
        pcs_id: r.try_get("pcs_id")?,
        d_hat: r.try_get("d_hat")?,
        coh_star: r.try_get("coh_star")?,
        r: r.try_get("r")?,
        budget: r.try_get("budget")?,
        regime: r.try_get("regime")?,
        accepted: r.try_get::<i64, _>("accepted")? != 0,
        escalated: r.try_get::<i64, _>("escalated")? != 0,
        reason: r.try_get("reason")?,
        status: u16::try_from(r.try_get::<i64, _>("status")?).unwrap_or(0),
        cacheable: r.try_get::<i64, _>("cacheable")? != 0,
        verify_ns: r.try_get("verify_ns")?,
        created_at_ms: r.try_get("created_at_ms")?,
        risk: r.try_get("risk")?,
        risk_band: r.try_get("risk_band")?,
        model_version: r.try_get("model_version")?,
        arm: r.try_get("arm")?,
        bundle_version: r.try_get("bundle_version")?,
    })
}

/// Most recent rows first, optionally for one tenant.
pub async fn recent(
    pool: &AnyPool,
    tenant: Option<&str>,
    limit: i64,
) -> Result<Vec<DecisionRow>, sqlx::Error> {
    let rows = match tenant {
        Some(t) => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM decision_log WHERE tenant = $1 ORDER BY id DESC LIMIT $2"
            ))
            .bind(t)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
        None => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM decision_log ORDER BY id DESC LIMIT $1"
            ))
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
    };
    rows.iter().map(row_to_decision).collect()
}

pub async fn count(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(*) AS n FROM decision_log")
        .fetch_one(pool)
        .await?
        .try_get("n")
}

/// Up to `limit` rows with an id below `before_id` (all when `None`), newest (highest id)
/// first, optionally for one tenant: one page of `GET /v1/decisions`.
pub async fn page(
    pool: &AnyPool,
    tenant: Option<&str>,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<DecisionRow>, sqlx::Error> {
    let before = before_id.unwrap_or(i64::MAX);
    let rows = match tenant {
        Some(t) => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM decision_log WHERE tenant = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
            ))
            .bind(t)
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
        None => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM decision_log WHERE id < $1 ORDER BY id DESC LIMIT $2"
            ))
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
    };
    rows.iter().map(row_to_decision).collect()
}

/// One scored decision with the features it was scored with: a row of a training dataset
/// ([`features_page`]). Labels join on (tenant, pcs_id).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRow {
    /// Decision-log id (the paging key).
    pub id: i64,
    pub tenant: String,
    pub pcs_id: String,
    /// When the control plane received the submission (epoch ms).
    pub created_at_ms: i64,
    /// The model that scored it.
    pub model_version: String,
    /// `champion`, `challenger` or `canary`.
    pub arm: String,
    /// Calibrated risk it was given.
    pub risk: f64,
    pub escalated: bool,
    /// Queued by the audit sample (accepted and not escalated).
    pub audit_sample: bool,
    /// The vector of the requested schema, as the gate computed it.
    pub features: Vec<f64>,
}

/// Up to `limit` scored decisions with features of `schema`, received in
/// `[from_ms, until_ms)`, with an id above `after_id` (0 for the first page), by id ascending.
/// Page on with the last row's id until a page holds fewer than `limit` rows: every row of the
/// range is read exactly once, whatever is inserted meanwhile (new rows get higher ids).
pub async fn features_page(
    pool: &AnyPool,
    schema: &str,
    from_ms: i64,
    until_ms: i64,
    after_id: i64,
    limit: i64,
) -> Result<Vec<FeatureRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM decision_log WHERE feature_schema = $1 AND created_at_ms >= $2 \
         AND created_at_ms < $3 AND id > $4 AND features IS NOT NULL ORDER BY id LIMIT $5"
    ))
    .bind(schema)
    .bind(from_ms)
    .bind(until_ms)
    .bind(after_id)
    .bind(limit)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| row_to_decision(r).and_then(FeatureRow::from_decision))
    .collect()
}

impl FeatureRow {
    /// A row with features always has its risk (the ingest path stores features only with
    /// one); a row without is reported as undecodable rather than skipped.
    fn from_decision(d: DecisionRow) -> Result<FeatureRow, sqlx::Error> {
        let missing = |col: &str| sqlx::Error::ColumnDecode {
            index: col.into(),
            source: format!("decision {} has features but no {col}", d.id).into(),
        };
        Ok(FeatureRow {
            model_version: d
                .model_version
                .clone()
                .ok_or_else(|| missing("model_version"))?,
            arm: d.arm.clone().ok_or_else(|| missing("arm"))?,
            risk: d.risk.ok_or_else(|| missing("risk"))?,
            features: d.features.clone().ok_or_else(|| missing("features"))?,
            id: d.id,
            tenant: d.tenant,
            pcs_id: d.pcs_id,
            created_at_ms: d.created_at_ms,
            escalated: d.escalated,
            audit_sample: d.audit_sample,
        })
    }
}
