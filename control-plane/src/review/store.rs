//! SQL of the label store and the review queue (`labels`, migration 0008), for SQLite and
//! PostgreSQL through `sqlx::Any` with `$n` placeholders.

use super::{Label, LabelRow, NewLabel, Source};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AnyPool, Row};
use std::collections::HashMap;

pub(crate) const LABEL_COLUMNS: &str =
    "tenant, pcs_id, labeller, source, label, confidence, comment, created_at_ms";

/// A label from a row with the columns of `labels` (other columns may come along).
pub(crate) fn row_to_label(r: &sqlx::any::AnyRow) -> Result<LabelRow, sqlx::Error> {
    let text = |col: &str| r.try_get::<String, _>(col);
    let bad = |col: &str, v: String| sqlx::Error::ColumnDecode {
        index: col.into(),
        source: format!("unknown {col} {v:?}").into(),
    };
    let source = text("source")?;
    let label = text("label")?;
    Ok(LabelRow {
        tenant: text("tenant")?,
        pcs_id: text("pcs_id")?,
        labeller: text("labeller")?,
        source: Source::parse(&source).ok_or_else(|| bad("source", source))?,
        label: Label::parse(&label).ok_or_else(|| bad("label", label))?,
        confidence: r.try_get("confidence")?,
        comment: r.try_get("comment")?,
        created_at_ms: r.try_get("created_at_ms")?,
    })
}

/// The columns of `labels l` in a join with the decision log, named as [`row_to_label`] reads
/// them.
pub(crate) const JOINED_LABEL_COLUMNS: &str = "l.tenant AS tenant, l.pcs_id AS pcs_id, \
     l.labeller AS labeller, l.source AS source, l.label AS label, l.confidence AS confidence, \
     l.comment AS comment, l.created_at_ms AS created_at_ms";

/// Rows of a join of decisions with their labels (a `decision_id` column, the
/// [`JOINED_LABEL_COLUMNS`], and whatever `head` reads of the decision), grouped by decision
/// in id order: `head` of each decision and its effective label ([`super::effective_label`]).
pub(crate) fn effective_by_decision<T>(
    rows: &[sqlx::any::AnyRow],
    head: impl Fn(&sqlx::any::AnyRow) -> Result<T, sqlx::Error>,
) -> Result<Vec<(T, LabelRow)>, sqlx::Error> {
    let mut by_decision: std::collections::BTreeMap<i64, (T, Vec<LabelRow>)> =
        std::collections::BTreeMap::new();
    for r in rows {
        let id: i64 = r.try_get("decision_id")?;
        let label = row_to_label(r)?;
        match by_decision.entry(id) {
            std::collections::btree_map::Entry::Occupied(mut o) => o.get_mut().1.push(label),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert((head(r)?, vec![label]));
            }
        }
    }
    Ok(by_decision
        .into_values()
        .filter_map(|(h, ls)| super::effective_label(&ls).cloned().map(|l| (h, l)))
        .collect())
}

/// True when the decision log holds (tenant, pcs_id).
pub async fn decision_exists(
    pool: &AnyPool,
    tenant: &str,
    pcs_id: &str,
) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("SELECT 1 AS one FROM decision_log WHERE tenant = $1 AND pcs_id = $2 LIMIT 1")
            .bind(tenant)
            .bind(pcs_id)
            .fetch_optional(pool)
            .await?
            .is_some(),
    )
}

/// Inserts the label unless its labeller labelled the decision already; true when inserted.
pub async fn insert(
    conn: &mut AnyConnection,
    l: &NewLabel,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(&format!(
        "INSERT INTO labels ({LABEL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (tenant, pcs_id, labeller) DO NOTHING"
    ))
    .bind(&l.tenant)
    .bind(&l.pcs_id)
    .bind(&l.labeller)
    .bind(l.source.as_str())
    .bind(l.label.as_str())
    .bind(l.source.confidence())
    .bind(l.comment.clone())
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    // audit: the label, in the caller's transaction.
    let e = crate::audit::Event::LabelRecorded {
        tenant: l.tenant.clone(),
        pcs_id: l.pcs_id.clone(),
        labeller: l.labeller.clone(),
        source: l.source.as_str().into(),
        label: l.label.as_str().into(),
    };
    crate::audit::append(conn, &e, now_ms).await?;
    Ok(true)
}

pub async fn get(
    pool: &AnyPool,
    tenant: &str,
    pcs_id: &str,
    labeller: &str,
) -> Result<Option<LabelRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {LABEL_COLUMNS} FROM labels WHERE tenant = $1 AND pcs_id = $2 AND labeller = $3"
    ))
    .bind(tenant)
    .bind(pcs_id)
    .bind(labeller)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(row_to_label)
    .transpose()
}

/// Every label of one decision, oldest first.
pub async fn labels_of(
    pool: &AnyPool,
    tenant: &str,
    pcs_id: &str,
) -> Result<Vec<LabelRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {LABEL_COLUMNS} FROM labels WHERE tenant = $1 AND pcs_id = $2 \
         ORDER BY created_at_ms, id"
    ))
    .bind(tenant)
    .bind(pcs_id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(row_to_label)
    .collect()
}

/// Which queued decisions a queue listing shows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, utoipa::ToSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum QueueStatus {
    /// Not labelled by anyone yet.
    #[default]
    Open,
    /// With at least one label.
    Labelled,
    /// Both.
    All,
}

/// Why a decision is in the review queue (also a filter of the listing).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum QueuedFor {
    /// The gate escalated it (not accepted, or a high risk).
    Escalated,
    /// Accepted and not escalated, drawn into the audit sample ([`super::audit`]).
    #[value(name = "audit_sample")]
    AuditSample,
    /// An anomaly score near the threshold, sent by active learning ([`crate::anomaly::active`]).
    #[value(name = "anomaly_uncertain")]
    AnomalyUncertain,
    /// An anomaly score below the threshold, in active learning's audit sample.
    #[value(name = "anomaly_audit")]
    AnomalyAudit,
}

/// One queued decision (escalated or audit-sampled): its numbers, its labels, and its evidence
/// when the tenant opted in to retention ([`crate::evidence`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReviewItem {
    /// Decision-log row id (the queue is ordered by it, newest first).
    pub decision_id: i64,
    pub tenant: String,
    pub pcs_id: String,
    pub queued_for: QueuedFor,
    /// Why the gate escalated (`null` for most audit-sampled decisions).
    pub reason: Option<String>,
    /// Calibrated hallucination risk, when the gate scored the answer.
    pub risk: Option<f64>,
    /// `low`, `medium` or `high`.
    pub risk_band: Option<String>,
    pub model_version: Option<String>,
    pub created_at_ms: i64,
    /// Feature schema of `features`; `null` when not scored.
    pub feature_schema: Option<String>,
    /// The feature vector the gate scored with, in the schema's order (the page's
    /// `feature_names` for the current schema); `null` when not scored.
    pub features: Option<Vec<f64>>,
    /// The ensemble's verdict and every vote; `null` when the tenant had no ensemble policy.
    #[schema(value_type = Option<Object>)]
    pub votes: Option<serde_json::Value>,
    /// Oldest first.
    pub labels: Vec<LabelRow>,
    /// The label that counts ([`super::effective_label`]); `null` while unlabelled.
    pub effective_label: Option<Label>,
    /// True while the decision's evidence is retained: its tenant is opted in, it is within
    /// its TTL and unlabelled ([`crate::evidence`]).
    pub evidence_retained: bool,
    /// The retained evidence, decrypted; `null` when not retained, or when the stored record
    /// does not decrypt (altered: logged and counted in
    /// `kakeya_evidence_decrypt_failures_total`).
    pub evidence: Option<crate::evidence::ReviewEvidence>,
}

/// Labelled: a label, or for a decision active learning queued, anomaly feedback (what its
/// reviewer is asked for).
const LABELLED: &str =
    "(EXISTS (SELECT 1 FROM labels l WHERE l.tenant = d.tenant AND l.pcs_id = d.pcs_id) \
     OR (d.anomaly_queued > 0 AND EXISTS (SELECT 1 FROM anomaly_feedback f \
     WHERE f.tenant = d.tenant AND f.pcs_id = d.pcs_id)))";

/// Which decision-log rows `d` are in the queue.
const QUEUED: &str = "(d.escalated = 1 OR d.audit_sample = 1 OR d.anomaly_queued > 0)";

/// Which queued rows `d` are queued for `why` (every queued row for `None`); the two are
/// disjoint, as [`ReviewItem::queued_for`] tells them apart.
fn queued_for_sql(why: Option<QueuedFor>) -> &'static str {
    match why {
        None => QUEUED,
        Some(QueuedFor::Escalated) => "(d.escalated = 1)",
        Some(QueuedFor::AuditSample) => "(d.escalated = 0 AND d.audit_sample = 1)",
        Some(QueuedFor::AnomalyUncertain) => {
            "(d.escalated = 0 AND d.audit_sample = 0 AND d.anomaly_queued = 1)"
        }
        Some(QueuedFor::AnomalyAudit) => {
            "(d.escalated = 0 AND d.audit_sample = 0 AND d.anomaly_queued = 2)"
        }
    }
}

/// Up to `limit` queued decisions (escalated or audit-sampled, or only those queued for
/// `queued_for`) with an id below `before_id`, newest first, each with its labels: one page of
/// `GET /v1/reviews`.
pub async fn queue_page(
    pool: &AnyPool,
    status: QueueStatus,
    queued_for: Option<QueuedFor>,
    tenant: Option<&str>,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<ReviewItem>, sqlx::Error> {
    let status_sql = match status {
        QueueStatus::Open => format!(" AND NOT {LABELLED}"),
        QueueStatus::Labelled => format!(" AND {LABELLED}"),
        QueueStatus::All => String::new(),
    };
    let tenant_sql = if tenant.is_some() {
        " AND d.tenant = $3"
    } else {
        ""
    };
    let queued = queued_for_sql(queued_for);
    let q = format!(
        "SELECT d.id, d.tenant, d.pcs_id, d.escalated, d.audit_sample, d.anomaly_queued, d.reason, \
         d.risk, d.risk_band, d.model_version, d.created_at_ms, d.feature_schema, d.features, \
         d.votes FROM decision_log d WHERE {queued} AND d.id < $1\
         {tenant_sql}{status_sql} ORDER BY d.id DESC LIMIT $2"
    );
    let mut query = sqlx::query(&q)
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(limit);
    if let Some(t) = tenant {
        query = query.bind(t);
    }
    let mut items = query
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            let feature_schema: Option<String> = r.try_get("feature_schema")?;
            Ok(ReviewItem {
                features: crate::store::decision_log::features_column(
                    r,
                    feature_schema.as_deref(),
                )?,
                feature_schema,
                votes: crate::store::json_column(r, "votes")?,
                decision_id: r.try_get("id")?,
                tenant: r.try_get("tenant")?,
                pcs_id: r.try_get("pcs_id")?,
                // Audit-sampled rows are never escalated ones (review::audit::sampled), and
                // active learning only picks rows that are neither (anomaly::active).
                queued_for: match (
                    r.try_get::<i64, _>("escalated")?,
                    r.try_get::<i64, _>("audit_sample")?,
                    r.try_get::<i64, _>("anomaly_queued")?,
                ) {
                    (0, 0, 1) => QueuedFor::AnomalyUncertain,
                    (0, 0, 2) => QueuedFor::AnomalyAudit,
                    (0, _, _) => QueuedFor::AuditSample,
                    _ => QueuedFor::Escalated,
                },
                reason: r.try_get("reason")?,
                risk: r.try_get("risk")?,
                risk_band: r.try_get("risk_band")?,
                model_version: r.try_get("model_version")?,
                created_at_ms: r.try_get("created_at_ms")?,
                labels: Vec::new(),
                effective_label: None,
                evidence_retained: false,
                evidence: None,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let (Some(newest), Some(oldest)) = (items.first(), items.last()) else {
        return Ok(items);
    };
    if status == QueueStatus::Open {
        return Ok(items);
    }
    // The labels of the whole page in one query: those of the queued decisions in its id
    // range, narrowed by tenant when the page is (for `open` there are none to fetch).
    let q = format!(
        "SELECT {LABEL_COLUMNS} FROM labels l WHERE EXISTS (SELECT 1 FROM decision_log d \
         WHERE d.tenant = l.tenant AND d.pcs_id = l.pcs_id AND {queued} \
         AND d.id BETWEEN $1 AND $2){} ORDER BY l.created_at_ms, l.id",
        if tenant.is_some() {
            " AND l.tenant = $3"
        } else {
            ""
        }
    );
    let mut query = sqlx::query(&q)
        .bind(oldest.decision_id)
        .bind(newest.decision_id);
    if let Some(t) = tenant {
        query = query.bind(t);
    }
    let mut by_decision: HashMap<(String, String), Vec<LabelRow>> = HashMap::new();
    for r in query.fetch_all(pool).await? {
        let l = row_to_label(&r)?;
        by_decision
            .entry((l.tenant.clone(), l.pcs_id.clone()))
            .or_default()
            .push(l);
    }
    for item in &mut items {
        if let Some(labels) = by_decision.get(&(item.tenant.clone(), item.pcs_id.clone())) {
            item.labels = labels.clone();
            item.effective_label = super::effective_label(labels).map(|l| l.label);
        }
    }
    Ok(items)
}
