//! SQL of the checks, alerts and auto-revert claims (`drift_checks`, `drift_alerts`,
//! `drift_reverts`, migration 0014), for SQLite and PostgreSQL through `sqlx::Any`.

use super::analysis::{AlertType, DriftTest, Finding, Severity};
use super::{By, DriftAlert, DriftReport, RevertAction};
use crate::store::Db;
use sqlx::{Connection, Row};

const ALERT_COLUMNS: &str = "id, check_id, created_at_ms, alert_type, test, model_version, \
                             alias, feature, statistic, p_value, threshold, severity, action, \
                             action_detail";

fn actor_of(by: By) -> String {
    by.actor().to_string()
}

fn row_to_alert(r: &sqlx::any::AnyRow) -> Result<DriftAlert, sqlx::Error> {
    let bad = |col: &str, v: &str| sqlx::Error::ColumnDecode {
        index: col.into(),
        source: format!("unknown {col} {v:?}").into(),
    };
    let text = |col: &str| r.try_get::<String, _>(col);
    let (kind, test, severity) = (text("alert_type")?, text("test")?, text("severity")?);
    let action: Option<String> = r.try_get("action")?;
    let at: i64 = r.try_get("created_at_ms")?;
    Ok(DriftAlert {
        id: r.try_get("id")?,
        check_id: r.try_get("check_id")?,
        timestamp: crate::learn::rfc3339(at),
        timestamp_ms: at,
        alert_type: AlertType::parse(&kind).ok_or_else(|| bad("alert_type", &kind))?,
        test: DriftTest::parse(&test).ok_or_else(|| bad("test", &test))?,
        feature: r.try_get("feature")?,
        statistic: r.try_get("statistic")?,
        p_value: r.try_get("p_value")?,
        threshold: r.try_get("threshold")?,
        severity: Severity::parse(&severity).ok_or_else(|| bad("severity", &severity))?,
        model_version: text("model_version")?,
        alias: text("alias")?,
        action: action
            .map(|a| RevertAction::parse(&a).ok_or_else(|| bad("action", &a)))
            .transpose()?,
        action_detail: r.try_get("action_detail")?,
    })
}

/// Stores a check (its report is completed by [`set_report`]) and its alerts, each finding
/// with the (alias, model version) it is about, in one transaction; the check's id and the
/// stored alerts.
pub async fn insert_check(
    db: &Db,
    report: &DriftReport,
    findings: &[(String, String, Finding)],
    by: By,
    now_ms: i64,
) -> Result<(i64, Vec<DriftAlert>), sqlx::Error> {
    let mut conn = db.pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let check_id: i64 = sqlx::query(
        "INSERT INTO drift_checks (created_at_ms, since_ms, until_ms, actor, outcome, report) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(now_ms)
    .bind(report.since_ms)
    .bind(report.until_ms)
    .bind(actor_of(by))
    .bind(report.outcome.as_str())
    .bind(serde_json::to_string(report).unwrap_or_default())
    .fetch_one(&mut *tx)
    .await?
    .try_get("id")?;
    let mut alerts = Vec::with_capacity(findings.len());
    for (alias, version, f) in findings {
        let row = sqlx::query(&format!(
            "INSERT INTO drift_alerts (check_id, created_at_ms, alert_type, test, model_version, \
             alias, feature, statistic, p_value, threshold, severity) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {ALERT_COLUMNS}"
        ))
        .bind(check_id)
        .bind(now_ms)
        .bind(f.alert_type.as_str())
        .bind(f.test.as_str())
        .bind(version)
        .bind(alias)
        .bind(f.feature.clone())
        .bind(f.statistic)
        .bind(f.p_value)
        .bind(f.threshold)
        .bind(f.severity.as_str())
        // A NULL f64 (p_value of a PSI alert) must not be cached as a prepared statement on
        // PostgreSQL: sqlx's Any driver declares it float4 (see `registry::history::record`).
        .persistent(false)
        .fetch_one(&mut *tx)
        .await?;
        alerts.push(row_to_alert(&row)?);
    }
    tx.commit().await?;
    Ok((check_id, alerts))
}

/// Records what the auto-revert did about alert `id`.
pub async fn set_action(
    db: &Db,
    id: i64,
    action: RevertAction,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE drift_alerts SET action = $1, action_detail = $2 WHERE id = $3")
        .bind(action.as_str())
        .bind(detail)
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Stores the final report of check `id`.
pub async fn set_report(db: &Db, id: i64, report: &DriftReport) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE drift_checks SET report = $1 WHERE id = $2")
        .bind(serde_json::to_string(report).unwrap_or_default())
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// The stored report of check `id`.
pub async fn report(db: &Db, id: i64) -> Result<Option<serde_json::Value>, sqlx::Error> {
    sqlx::query("SELECT report FROM drift_checks WHERE id = $1")
        .bind(id)
        .fetch_optional(&db.pool)
        .await?
        .map(|r| {
            let text: String = r.try_get("report")?;
            Ok(serde_json::from_str(&text).unwrap_or_default())
        })
        .transpose()
}

/// When `by` last ran a check.
pub async fn last_check_ms(db: &Db, by: By) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query("SELECT MAX(created_at_ms) AS t FROM drift_checks WHERE actor = $1")
        .bind(actor_of(by))
        .fetch_one(&db.pool)
        .await?
        .try_get("t")
}

/// Alerts raised at or after `since_ms` with an id below `before` (all when `None`), newest
/// first, at most `limit`.
pub async fn alerts(
    db: &Db,
    since_ms: i64,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<DriftAlert>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {ALERT_COLUMNS} FROM drift_alerts WHERE created_at_ms >= $1 AND id < $2 \
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(since_ms)
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(row_to_alert)
    .collect()
}

/// Claims the auto-revert of the champion position `champion_move_id` for `alert`; false when
/// another alert claimed it first (one revert per position).
pub async fn claim_revert(
    db: &Db,
    champion_move_id: i64,
    alert: &DriftAlert,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO drift_reverts (champion_move_id, alert_id, from_version, outcome, \
         created_at_ms) VALUES ($1, $2, $3, 'pending', $4) ON CONFLICT DO NOTHING",
    )
    .bind(champion_move_id)
    .bind(alert.id)
    .bind(&alert.model_version)
    .bind(now_ms)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The alert that claimed position `champion_move_id`, and its outcome.
pub async fn revert_claim(
    db: &Db,
    champion_move_id: i64,
) -> Result<Option<(i64, String)>, sqlx::Error> {
    sqlx::query("SELECT alert_id, outcome FROM drift_reverts WHERE champion_move_id = $1")
        .bind(champion_move_id)
        .fetch_optional(&db.pool)
        .await?
        .map(|r| Ok((r.try_get("alert_id")?, r.try_get("outcome")?)))
        .transpose()
}

/// What the claimed revert did: `reverted` to `to` with the publication, or
/// `nothing_to_revert`.
pub async fn finish_revert(
    db: &Db,
    champion_move_id: i64,
    to: Option<(&str, i64, i64)>,
) -> Result<(), sqlx::Error> {
    let outcome = if to.is_some() {
        "reverted"
    } else {
        "nothing_to_revert"
    };
    sqlx::query(
        "UPDATE drift_reverts SET outcome = $1, to_version = $2, bundle_version = $3, \
         history_id = $4 WHERE champion_move_id = $5",
    )
    .bind(outcome)
    .bind(to.map(|t| t.0.to_string()))
    .bind(to.map(|t| t.1))
    .bind(to.map(|t| t.2))
    .bind(champion_move_id)
    .persistent(false)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Gives a claim back after a failed move, so a later alert tries again.
pub async fn release_revert(db: &Db, champion_move_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM drift_reverts WHERE champion_move_id = $1 AND outcome = 'pending'")
        .bind(champion_move_id)
        .execute(&db.pool)
        .await?;
    Ok(())
}
