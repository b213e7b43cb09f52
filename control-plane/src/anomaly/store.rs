//! SQL of the anomaly tables (`anomaly_feedback`, `anomaly_thresholds`, `anomaly_clusters`)
//! and of the decision log's anomaly columns (migration 0027), for SQLite and PostgreSQL
//! through `sqlx::Any` with `$n` placeholders.

use super::cluster::{Built, Point};
use super::threshold::Optimum;
use super::{Action, UserLabel};
use crate::review::Source;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AnyPool, Row};

fn bad(col: &str, v: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: col.into(),
        source: format!("unknown {col} {v:?}").into(),
    }
}

/// What inline scoring records about one decision (`record_score`).
#[derive(Debug, Clone, PartialEq)]
pub struct Scored<'a> {
    pub score: f64,
    pub uncertainty: f64,
    pub action: Action,
    pub features: &'a [f64],
    pub schema: &'a str,
}

/// Writes a decision's anomaly columns (what inline scoring fills); false when the decision
/// is not logged.
pub async fn record_score(
    conn: &mut AnyConnection,
    tenant: &str,
    pcs_id: &str,
    s: &Scored<'_>,
) -> Result<bool, sqlx::Error> {
    let features = serde_json::to_string(s.features).map_err(|e| sqlx::Error::Encode(e.into()))?;
    let done = sqlx::query(
        "UPDATE decision_log SET anomaly_score = $1, anomaly_uncertainty = $2, \
         anomaly_action = $3, anomaly_features = $4, anomaly_schema = $5 \
         WHERE tenant = $6 AND pcs_id = $7",
    )
    .bind(s.score)
    .bind(s.uncertainty)
    .bind(s.action.as_str())
    .bind(features)
    .bind(s.schema)
    .bind(tenant)
    .bind(pcs_id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// `None` when (tenant, pcs_id) is not logged, else the decision's recorded anomaly score.
pub async fn decision_score(
    pool: &AnyPool,
    tenant: &str,
    pcs_id: &str,
) -> Result<Option<Option<f64>>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT anomaly_score FROM decision_log WHERE tenant = $1 AND pcs_id = $2 \
         ORDER BY id LIMIT 1",
    )
    .bind(tenant)
    .bind(pcs_id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| r.try_get::<Option<f64>, _>("anomaly_score"))
        .transpose()
}

/// A feedback row to store, validated ([`super::feedback::NewFeedback::checked`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NewFeedback {
    pub tenant: String,
    pub pcs_id: String,
    pub submitted_by: String,
    pub source: Source,
    pub user_label: UserLabel,
    pub predicted_score: Option<f64>,
    pub comment: Option<String>,
}

/// Inserts the feedback with `score` unless this submitter gave feedback on the decision
/// already; true when inserted.
pub async fn insert_feedback(
    pool: &AnyPool,
    f: &NewFeedback,
    score: f64,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO anomaly_feedback (tenant, pcs_id, submitted_by, source, user_label, \
         predicted_score, comment, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (tenant, pcs_id, submitted_by) DO NOTHING",
    )
    .bind(&f.tenant)
    .bind(&f.pcs_id)
    .bind(&f.submitted_by)
    .bind(f.source.as_str())
    .bind(f.user_label.as_str())
    .bind(score)
    .bind(f.comment.clone())
    .bind(now_ms)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// A stored feedback row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeedbackRow {
    pub id: i64,
    pub tenant: String,
    pub pcs_id: String,
    pub submitted_by: String,
    pub source: Source,
    pub user_label: UserLabel,
    pub predicted_score: f64,
    pub comment: Option<String>,
    pub created_at_ms: i64,
}

/// Every feedback row of a tenant, oldest first.
pub async fn feedback_of(pool: &AnyPool, tenant: &str) -> Result<Vec<FeedbackRow>, sqlx::Error> {
    sqlx::query(
        "SELECT id, tenant, pcs_id, submitted_by, source, user_label, predicted_score, comment, \
         created_at_ms FROM anomaly_feedback WHERE tenant = $1 ORDER BY id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        let source: String = r.try_get("source")?;
        let label: String = r.try_get("user_label")?;
        Ok(FeedbackRow {
            id: r.try_get("id")?,
            tenant: r.try_get("tenant")?,
            pcs_id: r.try_get("pcs_id")?,
            submitted_by: r.try_get("submitted_by")?,
            source: Source::parse(&source).ok_or_else(|| bad("source", &source))?,
            user_label: UserLabel::parse(&label).ok_or_else(|| bad("user_label", &label))?,
            predicted_score: r.try_get("predicted_score")?,
            comment: r.try_get("comment")?,
            created_at_ms: r.try_get("created_at_ms")?,
        })
    })
    .collect()
}

/// Labelled decisions of a tenant (distinct pcs_id with feedback).
pub async fn labelled_count(pool: &AnyPool, tenant: &str) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(DISTINCT pcs_id) AS n FROM anomaly_feedback WHERE tenant = $1")
        .bind(tenant)
        .fetch_one(pool)
        .await?
        .try_get("n")
}

/// Who asked for an optimisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `POST /v1/anomaly/optimize-threshold`.
    Api,
    /// `kakeya anomaly optimize-threshold`.
    Cli,
    /// The feedback hook, every 100 new labelled decisions.
    Feedback,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Api => "api",
            Origin::Cli => "cli",
            Origin::Feedback => "feedback",
        }
    }
}

/// One optimisation run of `anomaly_thresholds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ThresholdRow {
    pub id: i64,
    pub tenant: String,
    pub threshold: f64,
    pub fpr: f64,
    pub tpr: f64,
    pub feasible: bool,
    pub target_fpr: f64,
    pub n_labels: i64,
    pub origin: String,
    pub created_at_ms: i64,
}

pub async fn insert_threshold(
    pool: &AnyPool,
    tenant: &str,
    o: &Optimum,
    origin: Origin,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO anomaly_thresholds (tenant, threshold, fpr, tpr, feasible, target_fpr, \
         n_labels, origin, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(tenant)
    .bind(o.threshold)
    .bind(o.fpr)
    .bind(o.tpr)
    .bind(i64::from(o.feasible))
    .bind(o.target_fpr)
    .bind(i64::try_from(o.n_labels).unwrap_or(i64::MAX))
    .bind(origin.as_str())
    .bind(now_ms)
    .execute(pool)
    .await?;
    Ok(())
}

fn threshold_row(r: &sqlx::any::AnyRow) -> Result<ThresholdRow, sqlx::Error> {
    Ok(ThresholdRow {
        id: r.try_get("id")?,
        tenant: r.try_get("tenant")?,
        threshold: r.try_get("threshold")?,
        fpr: r.try_get("fpr")?,
        tpr: r.try_get("tpr")?,
        feasible: r.try_get::<i64, _>("feasible")? != 0,
        target_fpr: r.try_get("target_fpr")?,
        n_labels: r.try_get("n_labels")?,
        origin: r.try_get("origin")?,
        created_at_ms: r.try_get("created_at_ms")?,
    })
}

const THRESHOLD_COLUMNS: &str =
    "id, tenant, threshold, fpr, tpr, feasible, target_fpr, n_labels, origin, created_at_ms";

/// The tenant's optimisation runs, newest first.
pub async fn threshold_history(
    pool: &AnyPool,
    tenant: &str,
    limit: i64,
) -> Result<Vec<ThresholdRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {THRESHOLD_COLUMNS} FROM anomaly_thresholds WHERE tenant = $1 \
         ORDER BY id DESC LIMIT $2"
    ))
    .bind(tenant)
    .bind(limit)
    .fetch_all(pool)
    .await?
    .iter()
    .map(threshold_row)
    .collect()
}

/// The tenant's current threshold: the newest feasible optimisation (an infeasible run keeps
/// the previous one); `None` before any. What the next bundle carries for the tenant.
pub async fn current_threshold(pool: &AnyPool, tenant: &str) -> Result<Option<f64>, sqlx::Error> {
    current_threshold_in(&mut *pool.acquire().await?, tenant).await
}

/// As [`current_threshold`], on a connection (the bundle publisher's transaction).
pub async fn current_threshold_in(
    conn: &mut AnyConnection,
    tenant: &str,
) -> Result<Option<f64>, sqlx::Error> {
    sqlx::query(
        "SELECT threshold FROM anomaly_thresholds WHERE tenant = $1 AND feasible = 1 \
         ORDER BY id DESC LIMIT 1",
    )
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| r.try_get("threshold"))
    .transpose()
}

/// A flagged decision's anomaly features, with its schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Flagged {
    pub schema: String,
    pub point: Point,
}

/// The newest `limit` flagged decisions (action shadow, guardrail or blocked) with features,
/// oldest first.
pub async fn flagged(pool: &AnyPool, limit: i64) -> Result<Vec<Flagged>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT anomaly_schema, anomaly_features, created_at_ms FROM decision_log \
         WHERE anomaly_action IN ('shadow', 'guardrail', 'blocked') \
         AND anomaly_features IS NOT NULL AND anomaly_schema IS NOT NULL \
         ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            let json: String = r.try_get("anomaly_features")?;
            let features: Vec<f64> =
                serde_json::from_str(&json).map_err(|e| sqlx::Error::ColumnDecode {
                    index: "anomaly_features".into(),
                    source: e.into(),
                })?;
            Ok(Flagged {
                schema: r.try_get("anomaly_schema")?,
                point: Point {
                    features,
                    at_ms: r.try_get("created_at_ms")?,
                },
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    out.reverse();
    Ok(out)
}

/// A stored cluster (`GET /v1/anomaly/clusters`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterRow {
    pub id: i64,
    /// The anomaly feature schema of the centroid.
    pub feature_schema: String,
    /// Rule label of the centroid (`repetition_loop`, …, `mixed_anomaly`).
    pub label: String,
    /// Raw feature units, in the schema's order.
    pub centroid: Vec<f64>,
    /// Flagged decisions in the cluster.
    pub sample_count: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub created_at_ms: i64,
}

/// Replaces every stored cluster with `clusters` (schema, cluster, label) in one transaction.
pub async fn replace_clusters(
    pool: &AnyPool,
    clusters: &[(String, Built, &str)],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM anomaly_clusters")
        .execute(&mut *tx)
        .await?;
    for (schema, c, label) in clusters {
        let centroid =
            serde_json::to_string(&c.centroid).map_err(|e| sqlx::Error::Encode(e.into()))?;
        sqlx::query(
            "INSERT INTO anomaly_clusters (feature_schema, label, centroid, sample_count, \
             first_seen_ms, last_seen_ms, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(schema)
        .bind(*label)
        .bind(centroid)
        .bind(i64::try_from(c.count).unwrap_or(i64::MAX))
        .bind(c.first_seen_ms)
        .bind(c.last_seen_ms)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Every stored cluster, largest first (then by id).
pub async fn clusters(pool: &AnyPool) -> Result<Vec<ClusterRow>, sqlx::Error> {
    sqlx::query(
        "SELECT id, feature_schema, label, centroid, sample_count, first_seen_ms, last_seen_ms, \
         created_at_ms FROM anomaly_clusters ORDER BY sample_count DESC, id",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        let json: String = r.try_get("centroid")?;
        Ok(ClusterRow {
            id: r.try_get("id")?,
            feature_schema: r.try_get("feature_schema")?,
            label: r.try_get("label")?,
            centroid: serde_json::from_str(&json).map_err(|e| sqlx::Error::ColumnDecode {
                index: "centroid".into(),
                source: e.into(),
            })?,
            sample_count: r.try_get("sample_count")?,
            first_seen_ms: r.try_get("first_seen_ms")?,
            last_seen_ms: r.try_get("last_seen_ms")?,
            created_at_ms: r.try_get("created_at_ms")?,
        })
    })
    .collect()
}

/// A scored decision the active-learning queue may pick.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub decision_id: i64,
    pub tenant: String,
    pub pcs_id: String,
    pub score: f64,
    pub uncertainty: Option<f64>,
}

/// The newest `limit` scored decisions (of `tenant`, or every tenant) not in the review queue
/// yet (not escalated, audit-sampled or queued here) and without anomaly feedback, oldest first.
pub async fn candidates(
    pool: &AnyPool,
    tenant: Option<&str>,
    limit: i64,
) -> Result<Vec<Candidate>, sqlx::Error> {
    let q = format!(
        "SELECT d.id, d.tenant, d.pcs_id, d.anomaly_score, d.anomaly_uncertainty \
         FROM decision_log d WHERE d.anomaly_score IS NOT NULL AND d.anomaly_queued = 0 \
         AND d.escalated = 0 AND d.audit_sample = 0 AND NOT EXISTS (SELECT 1 FROM \
         anomaly_feedback f WHERE f.tenant = d.tenant AND f.pcs_id = d.pcs_id){} \
         ORDER BY d.id DESC LIMIT $1",
        if tenant.is_some() {
            " AND d.tenant = $2"
        } else {
            ""
        }
    );
    let mut query = sqlx::query(&q).bind(limit);
    if let Some(t) = tenant {
        query = query.bind(t);
    }
    let mut out = query
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            Ok(Candidate {
                decision_id: r.try_get("id")?,
                tenant: r.try_get("tenant")?,
                pcs_id: r.try_get("pcs_id")?,
                score: r.try_get("anomaly_score")?,
                uncertainty: r.try_get("anomaly_uncertainty")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    out.reverse();
    Ok(out)
}

/// `decision_log.anomaly_queued`: 1 queued as uncertain, 2 as the audit sample.
pub const QUEUED_UNCERTAIN: i64 = 1;
pub const QUEUED_AUDIT: i64 = 2;

/// Marks decisions as queued for review (`kind` [`QUEUED_UNCERTAIN`] or [`QUEUED_AUDIT`]) in
/// one transaction; only rows not queued already change.
pub async fn mark_queued(pool: &AnyPool, ids: &[(i64, i64)]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for (id, kind) in ids {
        sqlx::query(
            "UPDATE decision_log SET anomaly_queued = $1 WHERE id = $2 AND anomaly_queued = 0",
        )
        .bind(*kind)
        .bind(*id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
