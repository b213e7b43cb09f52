//! The decision log: one row per *fresh* decision, for audit and analytics.
//!
//! Keyed by the WAL record id (`ON CONFLICT (record_id) DO NOTHING`), so replaying the WAL
//! can never double a row. It holds the PCS signals and the verdict, never the raw body.

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
        }
    }
}

/// Inserts the row unless this record id is already logged; true when inserted.
pub async fn insert(conn: &mut AnyConnection, d: &NewDecision<'_>) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO decision_log (record_id, tenant, pcs_id, d_hat, coh_star, r, budget, regime, accepted, \
         escalated, reason, status, cacheable, verify_ns, created_at_ms, risk, risk_band, \
         model_version, arm, bundle_version, pcs_version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
         $19, $20, $21) \
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
    /// `champion` or `challenger`.
    pub arm: Option<String>,
    pub bundle_version: Option<i64>,
}

const COLUMNS: &str =
    "id, record_id, tenant, pcs_id, d_hat, coh_star, r, budget, regime, accepted, escalated, \
                       reason, status, cacheable, verify_ns, created_at_ms, risk, risk_band, \
                       model_version, arm, bundle_version";

fn row_to_decision(r: &sqlx::any::AnyRow) -> Result<DecisionRow, sqlx::Error> {
    Ok(DecisionRow {
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
