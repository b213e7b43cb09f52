//! Labels and the review queue: the one label store that everything that learns reads.
//!
//! A label says whether the answer behind one decision (tenant, pcs_id of the decision log)
//! was `hallucinated` or `faithful`. It has a **source** and a confidence that follows from
//! it ([`Source::confidence`]):
//!
//! | source | who | confidence |
//! |---|---|---|
//! | `gold` | a human reviewer, `POST /v1/reviews/{tenant}/{pcs_id}` | [`GOLD_CONFIDENCE`] |
//! | `silver` | the agent's owner, `POST /v1/feedback` (default) | [`SILVER_CONFIDENCE`] |
//! | `bronze` | a weak rule, `POST /v1/feedback` with `source: bronze` | [`BRONZE_CONFIDENCE`] |
//!
//! There is at most one label per (decision, labeller), and it never changes: the same label
//! again is answered with the stored row (idempotent retries), a different one is refused
//! ([`LabelError::Conflict`]). When labels of one decision disagree, [`effective_label`] says
//! which one counts.
//!
//! [`store`] holds the SQL, [`api`] the routes; `kakeya review …` and `kakeya feedback` call
//! the same functions ([`submit`], [`store::queue_page`]).

pub mod api;
pub mod audit;
pub mod store;
#[cfg(test)]
pub(crate) mod tests;

use serde::{Deserialize, Serialize};
use std::fmt;

/// Confidence of a human reviewer's label.
pub const GOLD_CONFIDENCE: f64 = 1.0;
/// Confidence of the agent owner's feedback: they know the ground truth of their own
/// domain but judge after the fact and without the review guidelines.
pub const SILVER_CONFIDENCE: f64 = 0.8;
/// Confidence of a weak (rule-based) label: better than chance, not more.
pub const BRONZE_CONFIDENCE: f64 = 0.5;
/// Longest accepted comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 4096;
/// Longest accepted reviewer (labeller) name, in characters.
pub const MAX_LABELLER_CHARS: usize = 128;
/// Labeller of every `POST /v1/feedback` label.
pub const OWNER_LABELLER: &str = "owner";
/// Tenant of feedback that names none (the gate's default tenant).
pub const DEFAULT_TENANT: &str = "default";

/// What a labeller says about the answer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Hallucinated,
    Faithful,
}

/// Who produced a label; ranked gold > silver > bronze.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    // Declared lowest rank first: the derived `Ord` is the rank.
    Bronze,
    Silver,
    Gold,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Hallucinated => "hallucinated",
            Label::Faithful => "faithful",
        }
    }

    fn parse(s: &str) -> Option<Label> {
        [Label::Hallucinated, Label::Faithful]
            .into_iter()
            .find(|l| l.as_str() == s)
    }
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Gold => "gold",
            Source::Silver => "silver",
            Source::Bronze => "bronze",
        }
    }

    pub fn confidence(self) -> f64 {
        match self {
            Source::Gold => GOLD_CONFIDENCE,
            Source::Silver => SILVER_CONFIDENCE,
            Source::Bronze => BRONZE_CONFIDENCE,
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Source> {
        [Source::Gold, Source::Silver, Source::Bronze]
            .into_iter()
            .find(|l| l.as_str() == s)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LabelRow {
    pub tenant: String,
    pub pcs_id: String,
    /// The reviewer's name (gold) or `owner` (feedback).
    pub labeller: String,
    pub source: Source,
    pub label: Label,
    /// Follows from the source: gold 1.0, silver 0.8, bronze 0.5.
    pub confidence: f64,
    pub comment: Option<String>,
    pub created_at_ms: i64,
}

/// A label to store, validated ([`NewLabel::review`], [`NewLabel::feedback`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NewLabel {
    pub tenant: String,
    pub pcs_id: String,
    pub labeller: String,
    pub source: Source,
    pub label: Label,
    pub comment: Option<String>,
}

impl NewLabel {
    /// A reviewer's (gold) label.
    pub fn review(
        tenant: &str,
        pcs_id: &str,
        label: Label,
        reviewer: &str,
        comment: Option<&str>,
    ) -> Result<NewLabel, LabelError> {
        let reviewer = reviewer.trim();
        if reviewer.is_empty() {
            return Err(LabelError::Invalid("reviewer must not be empty".into()));
        }
        if reviewer.chars().count() > MAX_LABELLER_CHARS || reviewer.chars().any(char::is_control) {
            return Err(LabelError::Invalid(format!(
                "reviewer must be at most {MAX_LABELLER_CHARS} characters, without control characters"
            )));
        }
        if reviewer == OWNER_LABELLER {
            return Err(LabelError::Invalid(format!(
                "reviewer {OWNER_LABELLER:?} is reserved for the owner's feedback (POST /v1/feedback)"
            )));
        }
        if comment.is_some_and(|c| c.chars().count() > MAX_COMMENT_CHARS) {
            return Err(LabelError::Invalid(format!(
                "comment must be at most {MAX_COMMENT_CHARS} characters"
            )));
        }
        Self::checked(NewLabel {
            tenant: tenant.into(),
            pcs_id: pcs_id.into(),
            labeller: reviewer.into(),
            source: Source::Gold,
            label,
            comment: comment.map(str::to_string),
        })
    }

    /// The owner's feedback: `tenant` defaults to [`DEFAULT_TENANT`], `source` to silver;
    /// gold is refused (it means human review, which goes through the review queue).
    pub fn feedback(
        tenant: Option<&str>,
        pcs_id: &str,
        label: Label,
        source: Option<Source>,
    ) -> Result<NewLabel, LabelError> {
        let source = source.unwrap_or(Source::Silver);
        if source == Source::Gold {
            return Err(LabelError::Invalid(
                "feedback is silver or bronze; gold labels come from the review queue (POST /v1/reviews/{tenant}/{pcs_id})".into(),
            ));
        }
        Self::checked(NewLabel {
            tenant: tenant.unwrap_or(DEFAULT_TENANT).into(),
            pcs_id: pcs_id.into(),
            labeller: OWNER_LABELLER.into(),
            source,
            label,
            comment: None,
        })
    }

    fn checked(l: NewLabel) -> Result<NewLabel, LabelError> {
        if l.tenant.is_empty() {
            return Err(LabelError::Invalid("tenant must not be empty".into()));
        }
        if l.pcs_id.is_empty() {
            return Err(LabelError::Invalid("pcs_id must not be empty".into()));
        }
        Ok(l)
    }
}

/// What [`submit`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// A new label (HTTP 201).
    Created(LabelRow),
    /// This labeller had already given this label: nothing changed (HTTP 200).
    Existing(LabelRow),
}

impl Submitted {
    pub fn row(&self) -> &LabelRow {
        match self {
            Submitted::Created(r) | Submitted::Existing(r) => r,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("{0}")]
    Invalid(String),
    #[error("no decision {pcs_id} for tenant {tenant} in the decision log")]
    NoDecision { tenant: String, pcs_id: String },
    /// The labeller already labelled this decision differently; the stored label stays.
    #[error(
        "{} already labelled {}/{} as {} ({}); labels are immutable",
        .0.labeller, .0.tenant, .0.pcs_id, .0.label, .0.source
    )]
    Conflict(Box<LabelRow>),
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
}

/// Stores `l` unless its labeller has labelled the decision already (see module docs).
/// Idempotency compares label and source; a retry's comment does not replace the stored one.
pub async fn submit(
    db: &crate::store::Db,
    l: &NewLabel,
    now_ms: i64,
) -> Result<Submitted, LabelError> {
    if !store::decision_exists(&db.pool, &l.tenant, &l.pcs_id).await? {
        return Err(LabelError::NoDecision {
            tenant: l.tenant.clone(),
            pcs_id: l.pcs_id.clone(),
        });
    }
    // The label and the end of the decision's evidence retention commit together: a labelled
    // decision never keeps its evidence (docs/OPERATIONS.md, "Evidence retention").
    let mut tx = db.pool.begin().await?;
    let inserted = store::insert(&mut tx, l, now_ms).await?;
    crate::evidence::store::delete(&mut tx, &l.tenant, &l.pcs_id).await?;
    tx.commit().await?;
    if inserted {
        let row = store::get(&db.pool, &l.tenant, &l.pcs_id, &l.labeller).await?;
        return row
            .map(Submitted::Created)
            .ok_or_else(|| LabelError::Store(sqlx::Error::RowNotFound));
    }
    let stored = store::get(&db.pool, &l.tenant, &l.pcs_id, &l.labeller)
        .await?
        .ok_or(LabelError::Store(sqlx::Error::RowNotFound))?;
    if stored.label == l.label && stored.source == l.source {
        Ok(Submitted::Existing(stored))
    } else {
        Err(LabelError::Conflict(Box::new(stored)))
    }
}

/// Whether a fresh decision enters the review queue ([`store::queue_page`] lists the same
/// decisions): the escalated ones and the audit sample. Evidence retention keeps the evidence
/// of exactly these ([`crate::evidence::Retainer::keep_if_queued`]).
pub fn is_queued(applied: &crate::store::Applied) -> bool {
    applied.escalated || applied.audit_sample
}

/// The label that counts when a decision's labels disagree: the highest source
/// (gold > silver > bronze), then the most recent; on an exact tie `hallucinated` wins (the
/// cautious reading), then the labeller name that sorts first. `None` without labels.
///
/// Everything that learns (the queue's `effective_label`, datasets) decides with this one
/// function.
pub fn effective_label(labels: &[LabelRow]) -> Option<&LabelRow> {
    labels.iter().max_by(|a, b| {
        a.source
            .cmp(&b.source)
            .then(a.created_at_ms.cmp(&b.created_at_ms))
            .then((a.label == Label::Hallucinated).cmp(&(b.label == Label::Hallucinated)))
            .then(b.labeller.cmp(&a.labeller))
    })
}
