//! Active learning: which scored decisions a reviewer should label next.
//!
//! The most uncertain ones, and a random audit sample of the ones below the threshold, go to
//! the review queue (`GET /v1/reviews?queued_for=anomaly_uncertain|anomaly_audit`):
//!
//! * **uncertain**: ranked by `|score − threshold| − uncertainty`, smallest first: a score
//!   within its own uncertainty of the tenant's threshold could fall on either side, and those
//!   labels move the threshold most.
//! * **audit**: drawn uniformly (seeded) among the rest that are below the threshold, so
//!   missed anomalies (false negatives) get labelled too; without them the TPR from labels
//!   would only ever see what the detector already flagged (platform spec §6.3).
//!
//! Only decisions not in the queue already (not escalated, not audit-sampled, not queued here)
//! and without anomaly feedback are candidates. The reviewer labels them with
//! `POST /v1/anomaly/feedback` (source `gold`).

use super::store::{self, Candidate, QUEUED_AUDIT, QUEUED_UNCERTAIN};
use super::threshold::DEFAULT_THRESHOLD;
use crate::store::Db;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Newest scored decisions one run looks at.
pub const WINDOW: i64 = 10_000;

/// What one run queues (`POST /v1/anomaly/active-learning`).
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct QueueParams {
    /// Only this tenant's decisions (default every tenant).
    pub tenant_id: Option<String>,
    /// How many of the most uncertain to queue, 0..=1000.
    #[schema(maximum = 1000)]
    pub uncertain: usize,
    /// How many to draw into the audit sample, 0..=1000.
    #[schema(maximum = 1000)]
    pub audit: usize,
    /// Seed of the audit draw (any 32-bit integer; its bits seed the generator).
    pub seed: i32,
}

impl Default for QueueParams {
    fn default() -> Self {
        QueueParams {
            tenant_id: None,
            uncertain: 20,
            audit: 5,
            seed: 7,
        }
    }
}

/// One decision sent to the review queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Queued {
    pub decision_id: i64,
    pub tenant: String,
    pub pcs_id: String,
    pub score: f64,
    pub uncertainty: Option<f64>,
    /// The tenant's threshold it was ranked against.
    pub threshold: f64,
    /// `anomaly_uncertain` or `anomaly_audit` (its `queued_for` in the review queue).
    pub queued_for: String,
}

/// Picks and marks this run's decisions (see the module docs); returns them, uncertain first.
pub async fn queue(db: &Db, p: &QueueParams) -> Result<Vec<Queued>, super::AnomalyError> {
    if p.uncertain > 1000 || p.audit > 1000 {
        return Err(super::AnomalyError::Invalid(
            "uncertain and audit must be within 0..=1000".into(),
        ));
    }
    let tenant = match &p.tenant_id {
        Some(t) => Some(super::feedback::checked_tenant(Some(t))?),
        None => None,
    };
    let candidates = store::candidates(&db.pool, tenant, WINDOW).await?;
    let mut thresholds: HashMap<String, f64> = HashMap::new();
    for c in &candidates {
        if !thresholds.contains_key(&c.tenant) {
            let t = store::current_threshold(&db.pool, &c.tenant)
                .await?
                .unwrap_or(DEFAULT_THRESHOLD);
            thresholds.insert(c.tenant.clone(), t);
        }
    }
    let t_of = |c: &Candidate| {
        thresholds
            .get(&c.tenant)
            .copied()
            .unwrap_or(DEFAULT_THRESHOLD)
    };
    let priority = |c: &Candidate| (c.score - t_of(c)).abs() - c.uncertainty.unwrap_or(0.0);
    let mut ranked: Vec<&Candidate> = candidates.iter().collect();
    ranked.sort_by(|a, b| {
        priority(a)
            .total_cmp(&priority(b))
            .then(a.decision_id.cmp(&b.decision_id))
    });
    let uncertain: Vec<&Candidate> = ranked.iter().take(p.uncertain).copied().collect();
    let below: Vec<&Candidate> = ranked
        .iter()
        .skip(p.uncertain)
        .filter(|c| c.score < t_of(c))
        .copied()
        .collect();
    let mut rng = StdRng::seed_from_u64(u64::from(p.seed as u32));
    let mut picks =
        rand::seq::index::sample(&mut rng, below.len(), p.audit.min(below.len())).into_vec();
    picks.sort_unstable();
    let audit: Vec<&Candidate> = picks.into_iter().map(|i| below[i]).collect();
    let out: Vec<Queued> = uncertain
        .iter()
        .map(|c| (c, "anomaly_uncertain"))
        .chain(audit.iter().map(|c| (c, "anomaly_audit")))
        .map(|(c, why)| Queued {
            decision_id: c.decision_id,
            tenant: c.tenant.clone(),
            pcs_id: c.pcs_id.clone(),
            score: c.score,
            uncertainty: c.uncertainty,
            threshold: t_of(c),
            queued_for: why.into(),
        })
        .collect();
    let marks: Vec<(i64, i64)> = uncertain
        .iter()
        .map(|c| (c.decision_id, QUEUED_UNCERTAIN))
        .chain(audit.iter().map(|c| (c.decision_id, QUEUED_AUDIT)))
        .collect();
    store::mark_queued(&db.pool, &marks).await?;
    Ok(out)
}
