//! The feedback loop: labelled anomaly scores in, the confusion matrix at the current
//! threshold and a re-optimised threshold out.
//!
//! * One feedback per (tenant, pcs_id, submitted_by), never changed: a second one is
//!   [`AnomalyError::Duplicate`] (409), whatever it says.
//! * The score a label is about is the decision's recorded `anomaly_score` when inline scoring
//!   wrote one (a different `predicted_score` is refused: the label would be about another
//!   score), else the caller's `predicted_score` (scores from `/v1/anomaly/detect` or offline).
//! * Per decision the label that counts is the highest source, then the newest, then
//!   `anomalous` (the cautious reading): the rule of [`crate::review::effective_label`].
//! * Every [`REOPTIMISE_EVERY`] newly labelled decisions of a tenant the optimiser runs again
//!   with the target of the tenant's last run ([`maybe_reoptimise`]).

use super::metrics::AnomalyMetrics;
use super::store::{self, FeedbackRow, NewFeedback, Origin};
use super::threshold::{self, Confusion, Optimum, DEFAULT_TARGET_FPR, DEFAULT_THRESHOLD};
use super::{AnomalyError, UserLabel};
use crate::review::{Source, DEFAULT_TENANT, MAX_COMMENT_CHARS, MAX_LABELLER_CHARS};
use crate::store::Db;
use std::collections::BTreeMap;

/// Newly labelled decisions between two automatic optimisations.
pub const REOPTIMISE_EVERY: i64 = 100;
/// Longest pcs_id accepted (the decision log's ids are 64 hex characters).
pub const MAX_PCS_ID_CHARS: usize = 256;
/// Scores and labels differ by at most this before a `predicted_score` counts as another score.
const SCORE_TOLERANCE: f64 = 1e-9;

impl NewFeedback {
    /// Validated feedback: tenant defaults to `default`, source to silver (the owner's).
    pub fn checked(
        tenant: Option<&str>,
        pcs_id: &str,
        predicted_score: Option<f64>,
        user_label: UserLabel,
        comment: Option<&str>,
        submitted_by: &str,
        source: Option<Source>,
    ) -> Result<NewFeedback, AnomalyError> {
        let invalid = |m: String| Err(AnomalyError::Invalid(m));
        let tenant = checked_tenant(tenant)?;
        if pcs_id.is_empty()
            || pcs_id.chars().count() > MAX_PCS_ID_CHARS
            || pcs_id.chars().any(char::is_control)
        {
            return invalid(format!(
                "pcs_id must be 1..={MAX_PCS_ID_CHARS} characters, without control characters"
            ));
        }
        let by = submitted_by.trim();
        if by.is_empty()
            || by.chars().count() > MAX_LABELLER_CHARS
            || by.chars().any(char::is_control)
        {
            return invalid(format!(
                "submitted_by must be 1..={MAX_LABELLER_CHARS} characters, without control characters"
            ));
        }
        if let Some(s) = predicted_score {
            if !(0.0..=1.0).contains(&s) {
                return invalid(format!("predicted_score must be within [0, 1], got {s}"));
            }
        }
        // NUL is the one character PostgreSQL text cannot hold.
        if comment.is_some_and(|c| c.chars().count() > MAX_COMMENT_CHARS || c.contains('\0')) {
            return invalid(format!(
                "comment must be at most {MAX_COMMENT_CHARS} characters, without NUL"
            ));
        }
        Ok(NewFeedback {
            tenant: tenant.into(),
            pcs_id: pcs_id.into(),
            submitted_by: by.into(),
            source: source.unwrap_or(Source::Silver),
            user_label,
            predicted_score,
            comment: comment.map(str::to_string),
        })
    }
}

/// A tenant from a request: `default` when absent; non-empty, without control characters.
pub fn checked_tenant(tenant: Option<&str>) -> Result<&str, AnomalyError> {
    let t = tenant.unwrap_or(DEFAULT_TENANT);
    if t.is_empty() || t.chars().any(char::is_control) {
        return Err(AnomalyError::Invalid(
            "tenant_id must be non-empty, without control characters".into(),
        ));
    }
    Ok(t)
}

/// Stores `f` (see the module docs), counts it, refreshes the tenant's gauges and re-optimises
/// when [`REOPTIMISE_EVERY`] new decisions were labelled since the last run (returned then).
pub async fn submit(
    db: &Db,
    metrics: Option<&AnomalyMetrics>,
    f: &NewFeedback,
    now_ms: i64,
) -> Result<Option<Optimum>, AnomalyError> {
    let recorded = store::decision_score(&db.pool, &f.tenant, &f.pcs_id)
        .await?
        .ok_or_else(|| AnomalyError::NoDecision {
            tenant: f.tenant.clone(),
            pcs_id: f.pcs_id.clone(),
        })?;
    let score = match (recorded, f.predicted_score) {
        (Some(r), Some(p)) if (r - p).abs() > SCORE_TOLERANCE => {
            return Err(AnomalyError::Invalid(format!(
                "predicted_score {p} is not the decision's recorded anomaly score {r}; omit it \
                 or send the recorded one"
            )))
        }
        (Some(r), _) => r,
        (None, Some(p)) => p,
        (None, None) => {
            return Err(AnomalyError::Invalid(format!(
                "decision {}/{} has no recorded anomaly score: predicted_score is required",
                f.tenant, f.pcs_id
            )))
        }
    };
    if !store::insert_feedback(&db.pool, f, score, now_ms).await? {
        return Err(AnomalyError::Duplicate {
            tenant: f.tenant.clone(),
            pcs_id: f.pcs_id.clone(),
            submitted_by: f.submitted_by.clone(),
        });
    }
    if let Some(m) = metrics {
        m.feedback_total
            .with_label_values(&[f.source.as_str(), f.user_label.as_str()])
            .inc();
    }
    let optimum = maybe_reoptimise(db, metrics, &f.tenant, now_ms).await?;
    if let Some(m) = metrics {
        m.set_rates(&f.tenant, &confusion(db, &f.tenant, None).await?);
    }
    Ok(optimum)
}

/// The label that counts of one decision's feedback (see the module docs).
fn effective(rows: &[&FeedbackRow]) -> Option<(f64, bool)> {
    rows.iter()
        .max_by(|a, b| {
            a.source
                .cmp(&b.source)
                .then(a.created_at_ms.cmp(&b.created_at_ms))
                .then(
                    (a.user_label == UserLabel::Anomalous)
                        .cmp(&(b.user_label == UserLabel::Anomalous)),
                )
                .then(a.id.cmp(&b.id))
        })
        .map(|r| (r.predicted_score, r.user_label == UserLabel::Anomalous))
}

/// (score, anomalous) of every labelled decision of the tenant, in pcs_id order.
pub async fn labelled(db: &Db, tenant: &str) -> Result<Vec<(f64, bool)>, sqlx::Error> {
    let rows = store::feedback_of(&db.pool, tenant).await?;
    let mut by_decision: BTreeMap<&str, Vec<&FeedbackRow>> = BTreeMap::new();
    for r in &rows {
        by_decision.entry(&r.pcs_id).or_default().push(r);
    }
    Ok(by_decision.values().filter_map(|v| effective(v)).collect())
}

/// The tenant's confusion matrix at `threshold`, or at its current one
/// ([`store::current_threshold`], else [`DEFAULT_THRESHOLD`]).
pub async fn confusion(
    db: &Db,
    tenant: &str,
    threshold: Option<f64>,
) -> Result<Confusion, sqlx::Error> {
    let t = match threshold {
        Some(t) => t,
        None => store::current_threshold(&db.pool, tenant)
            .await?
            .unwrap_or(DEFAULT_THRESHOLD),
    };
    Ok(threshold::confusion(&labelled(db, tenant).await?, t))
}

/// Optimises the tenant's threshold on its labels and records the run (a feasible one becomes
/// the current threshold).
pub async fn optimise(
    db: &Db,
    metrics: Option<&AnomalyMetrics>,
    tenant: &str,
    target_fpr: f64,
    origin: Origin,
    now_ms: i64,
) -> Result<Optimum, AnomalyError> {
    let o = threshold::optimise(&labelled(db, tenant).await?, target_fpr)?;
    store::insert_threshold(&db.pool, tenant, &o, origin, now_ms).await?;
    if !o.feasible {
        tracing::warn!(
            tenant,
            target_fpr,
            best_fpr = o.fpr,
            "anomaly threshold infeasible: no threshold flags at most the target share of normal \
             decisions; the current threshold stays"
        );
    }
    if let Some(m) = metrics {
        m.set_rates(tenant, &confusion(db, tenant, None).await?);
    }
    Ok(o)
}

/// Runs [`optimise`] (origin `feedback`) when the tenant has [`REOPTIMISE_EVERY`] labelled
/// decisions more than at its last run (or that many and no run yet). A tenant whose labels
/// are still of one class is skipped until both are there.
pub async fn maybe_reoptimise(
    db: &Db,
    metrics: Option<&AnomalyMetrics>,
    tenant: &str,
    now_ms: i64,
) -> Result<Option<Optimum>, AnomalyError> {
    let n = store::labelled_count(&db.pool, tenant).await?;
    let last = store::threshold_history(&db.pool, tenant, 1).await?;
    let last = last.first();
    if n - last.map_or(0, |r| r.n_labels) < REOPTIMISE_EVERY {
        return Ok(None);
    }
    let target = last.map_or(DEFAULT_TARGET_FPR, |r| r.target_fpr);
    match optimise(db, metrics, tenant, target, Origin::Feedback, now_ms).await {
        Ok(o) => Ok(Some(o)),
        Err(AnomalyError::Threshold(threshold::ThresholdError::NeedsBothClasses { .. })) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
