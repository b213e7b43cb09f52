//! Datasets from the decision log and its labels.
//!
//! **Rows.** A decision-log row of the range `[start, end)` (`created_at_ms`) whose
//! `feature_schema` is this build's [`SCHEMA_VERSION`] and which has at least one label; its
//! label is the effective one ([`review::effective_label`]: gold > silver > bronze, then the
//! newest), 1 = hallucinated. Its features are the vector the gate scored the decision with
//! (migration 0009), read as stored, never recomputed. A `(tenant, pcs_id)` logged more than
//! once (an uncacheable resubmission, or one after the dedup TTL) is one row, its first
//! decision; labels name the pair, not the row. Stored vectors that are not
//! [`N_FEATURES`] finite numbers are skipped and counted.
//!
//! **Canonical order and hash.** Rows are ordered by `(created_at_ms, tenant, pcs_id)` (strings
//! by bytes, whatever the database's collation). The dataset hash is the SHA-256 (hex) of
//! `"kakeya-dataset-v1 hrs-features-v1\n"` followed by one line per row in that order: the
//! compact JSON array `[created_at_ms, tenant, pcs_id, label, source, [f₁, …, f₂₂]]` (serde_json
//! spelling: strings JSON-escaped, numbers as the shortest decimal that reads back to the same
//! f64) and `\n`. Same rows → same hash, on SQLite and PostgreSQL alike.
//!
//! **Split.** By time: the newest ⌈n·fraction⌉ rows set the cut, the `created_at_ms` of the
//! oldest of them; every row at or after the cut validates, every row before it trains (rows of
//! the cut's millisecond all validate, so a split is a pure time cut). Validation then drops
//! every row whose feature vector (bit for bit, −0 = +0) is already in the training part or
//! earlier in validation: a resubmission of the same answer under another `pcs_id` would
//! otherwise be scored on what the model was fitted on, or counted twice. Training keeps its
//! rows (they are distinct decisions) and is weighted by class ([`crate::ml::train::class_weights`])
//! instead of duplicating the rarer class.

use super::{rfc3339, TrainingOptions};
use crate::review::store::{row_to_label, LABEL_COLUMNS};
use crate::review::{effective_label, Label, LabelRow, Source};
use crate::store::Db;
use kakeya_core::features::{N_FEATURES, SCHEMA_VERSION};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Format tag at the start of the hashed bytes.
pub const DATASET_FORMAT: &str = "kakeya-dataset-v1";

/// `[start_ms, end_ms)` of `created_at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimeRange {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// One labelled decision.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetRow {
    pub created_at_ms: i64,
    pub tenant: String,
    pub pcs_id: String,
    pub features: [f64; N_FEATURES],
    /// 1 = hallucinated.
    pub label: u8,
    /// Source and confidence of the effective label.
    pub source: Source,
    pub confidence: f64,
    /// How the decision reached review: escalated by the gate, or drawn by the audit sample.
    pub escalated: bool,
    pub audit_sample: bool,
}

impl DatasetRow {
    /// The row's canonical line (see the module docs), without the newline.
    pub fn canonical(&self) -> String {
        serde_json::to_string(&(
            self.created_at_ms,
            &self.tenant,
            &self.pcs_id,
            self.label,
            self.source.as_str(),
            &self.features[..],
        ))
        .unwrap_or_default()
    }

    /// The feature vector as exact bits (−0 read as +0), for duplicate detection.
    fn vector_key(&self) -> [u64; N_FEATURES] {
        self.features
            .map(|v| if v == 0.0 { 0.0f64 } else { v }.to_bits())
    }
}

/// What the range held, before and after the rules of the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counts {
    /// Decision-log rows in the range.
    pub n_decisions: usize,
    /// Of them, rows with features of the current schema.
    pub n_with_features: usize,
    /// Labelled rows of the schema skipped because their stored vector is malformed.
    pub n_malformed: usize,
    /// Labelled rows skipped because their (tenant, pcs_id) was logged earlier in the range.
    pub n_repeated: usize,
}

/// The time-based split: indices into [`Dataset::rows`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
    /// Validation rows dropped as duplicates of a training or earlier validation vector.
    pub validation_duplicates: usize,
    /// `created_at_ms` of the cut: training is before it, validation at or after it.
    pub split_at_ms: i64,
}

/// A labelled, split dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub range: TimeRange,
    /// In canonical order.
    pub rows: Vec<DatasetRow>,
    pub sha256: String,
    pub counts: Counts,
    pub split: Split,
    pub validation_fraction: f64,
}

/// Why no dataset could be built. Every variant carries the counts that explain it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DatasetError {
    #[error("bad range: start {} must be before end {}", rfc3339(*start_ms), rfc3339(*end_ms))]
    BadRange { start_ms: i64, end_ms: i64 },
    #[error("no decision in the range [{}, {})", rfc3339(*start_ms), rfc3339(*end_ms))]
    EmptyRange { start_ms: i64, end_ms: i64 },
    #[error(
        "none of the {n_decisions} decisions in the range has features of schema {schema} \
         (unscored, or scored by a gate of another schema)"
    )]
    NoRowsOfSchema {
        n_decisions: usize,
        schema: &'static str,
    },
    #[error(
        "{n_labelled} usable labelled decisions ({n_hallucinated} hallucinated, {n_faithful} \
         faithful); training needs at least {min} with both classes"
    )]
    InsufficientLabels {
        n_labelled: usize,
        n_hallucinated: usize,
        n_faithful: usize,
        min: usize,
    },
    #[error(
        "the time-based split leaves the {part} part with {n_hallucinated} hallucinated and \
         {n_faithful} faithful decisions (train {n_train}, validation {n_validation}); both \
         classes are needed on both sides: widen the range or label more decisions"
    )]
    OneClassSplit {
        part: &'static str,
        n_hallucinated: usize,
        n_faithful: usize,
        n_train: usize,
        n_validation: usize,
    },
    #[error("database: {0}")]
    Store(String),
}

impl DatasetError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            DatasetError::BadRange { .. } => "bad_range",
            DatasetError::EmptyRange { .. } => "empty_range",
            DatasetError::NoRowsOfSchema { .. } => "no_rows_of_schema",
            DatasetError::InsufficientLabels { .. } => "insufficient_labels",
            DatasetError::OneClassSplit { .. } => "one_class_split",
            DatasetError::Store(_) => "store_unavailable",
        }
    }

    /// True for the errors about the data (range, schema, labels, split), false for a
    /// database failure.
    pub fn is_about_the_data(&self) -> bool {
        Self::DATA_CODES.contains(&self.code())
    }

    /// The [`Self::code`]s of the errors about the data: what a failed job's `error.code` is
    /// when the range had too little to train on (the scheduler records those runs as
    /// `dataset_error`, with the counts).
    pub const DATA_CODES: [&'static str; 5] = [
        "bad_range",
        "empty_range",
        "no_rows_of_schema",
        "insufficient_labels",
        "one_class_split",
    ];

    /// `{code, error, <counts>}`: what a failed job reports.
    pub fn to_json(&self) -> Value {
        let mut v = match self {
            DatasetError::BadRange { start_ms, end_ms }
            | DatasetError::EmptyRange { start_ms, end_ms } => {
                json!({"start_ms": start_ms, "end_ms": end_ms})
            }
            DatasetError::NoRowsOfSchema {
                n_decisions,
                schema,
            } => json!({"n_decisions": n_decisions, "schema": schema}),
            DatasetError::InsufficientLabels {
                n_labelled,
                n_hallucinated,
                n_faithful,
                min,
            } => json!({"n_labelled": n_labelled, "n_hallucinated": n_hallucinated,
                        "n_faithful": n_faithful, "min": min}),
            DatasetError::OneClassSplit {
                part,
                n_hallucinated,
                n_faithful,
                n_train,
                n_validation,
            } => json!({"part": part, "n_hallucinated": n_hallucinated, "n_faithful": n_faithful,
                        "n_train": n_train, "n_validation": n_validation}),
            DatasetError::Store(_) => json!({}),
        };
        v["code"] = self.code().into();
        v["error"] = self.to_string().into();
        v
    }
}

impl From<sqlx::Error> for DatasetError {
    fn from(e: sqlx::Error) -> Self {
        DatasetError::Store(e.to_string())
    }
}

/// Decisions of the range, of the current schema.
const IN_RANGE: &str = "d.created_at_ms >= $1 AND d.created_at_ms < $2";
const OF_SCHEMA: &str = "d.feature_schema = $3 AND d.features IS NOT NULL";
const LABELLED: &str =
    "EXISTS (SELECT 1 FROM labels l WHERE l.tenant = d.tenant AND l.pcs_id = d.pcs_id)";

/// Decisions of the range (`of_schema`: with features of the current schema).
async fn count(db: &Db, range: TimeRange, of_schema: bool) -> Result<usize, sqlx::Error> {
    let sql = if of_schema {
        format!("SELECT COUNT(*) AS n FROM decision_log d WHERE {IN_RANGE} AND {OF_SCHEMA}")
    } else {
        format!("SELECT COUNT(*) AS n FROM decision_log d WHERE {IN_RANGE}")
    };
    let mut q = sqlx::query(&sql).bind(range.start_ms).bind(range.end_ms);
    if of_schema {
        q = q.bind(SCHEMA_VERSION);
    }
    let n: i64 = q.fetch_one(&db.pool).await?.try_get("n")?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// A stored feature vector, if it is [`N_FEATURES`] finite numbers.
pub fn parse_features(text: &str) -> Option<[f64; N_FEATURES]> {
    let v: Vec<f64> = serde_json::from_str(text).ok()?;
    let a: [f64; N_FEATURES] = v.try_into().ok()?;
    a.iter().all(|x| x.is_finite()).then_some(a)
}

/// Reads the labelled decisions of `range` and builds the dataset (module docs).
pub async fn build(
    db: &Db,
    range: TimeRange,
    opts: &TrainingOptions,
) -> Result<Dataset, DatasetError> {
    if range.start_ms >= range.end_ms {
        return Err(DatasetError::BadRange {
            start_ms: range.start_ms,
            end_ms: range.end_ms,
        });
    }
    let mut counts = Counts {
        n_decisions: count(db, range, false).await?,
        ..Counts::default()
    };
    if counts.n_decisions > 0 {
        counts.n_with_features = count(db, range, true).await?;
    }
    let decisions = sqlx::query(&format!(
        "SELECT d.id, d.created_at_ms, d.tenant, d.pcs_id, d.features, d.escalated, \
         d.audit_sample FROM decision_log d WHERE {IN_RANGE} AND {OF_SCHEMA} AND {LABELLED}"
    ))
    .bind(range.start_ms)
    .bind(range.end_ms)
    .bind(SCHEMA_VERSION)
    .fetch_all(&db.pool)
    .await?;
    let labels = sqlx::query(&format!(
        "SELECT {LABEL_COLUMNS} FROM labels WHERE EXISTS (SELECT 1 FROM decision_log d \
         WHERE d.tenant = labels.tenant AND d.pcs_id = labels.pcs_id AND {IN_RANGE} AND {OF_SCHEMA})"
    ))
    .bind(range.start_ms)
    .bind(range.end_ms)
    .bind(SCHEMA_VERSION)
    .fetch_all(&db.pool)
    .await?;
    let mut by_pair: HashMap<(String, String), Vec<LabelRow>> = HashMap::new();
    for r in &labels {
        let l = row_to_label(r)?;
        by_pair
            .entry((l.tenant.clone(), l.pcs_id.clone()))
            .or_default()
            .push(l);
    }
    let mut loaded = Vec::with_capacity(decisions.len());
    for r in &decisions {
        let id: i64 = r.try_get("id")?;
        let tenant: String = r.try_get("tenant")?;
        let pcs_id: String = r.try_get("pcs_id")?;
        let text: String = r.try_get("features")?;
        let Some(features) = parse_features(&text) else {
            counts.n_malformed += 1;
            continue;
        };
        let Some(l) = by_pair
            .get(&(tenant.clone(), pcs_id.clone()))
            .and_then(|ls| effective_label(ls))
        else {
            continue;
        };
        let row = DatasetRow {
            created_at_ms: r.try_get("created_at_ms")?,
            label: u8::from(l.label == Label::Hallucinated),
            source: l.source,
            confidence: l.confidence,
            escalated: r.try_get::<i64, _>("escalated")? != 0,
            audit_sample: r.try_get::<i64, _>("audit_sample")? != 0,
            tenant,
            pcs_id,
            features,
        };
        loaded.push((id, row));
    }
    from_rows(range, loaded, counts, opts)
}

/// The dataset of already loaded rows (each with its decision-log id, which orders repeats of
/// one (tenant, pcs_id) logged in the same millisecond). `counts` holds what the database said
/// about the range; the repeats are counted here.
pub fn from_rows(
    range: TimeRange,
    mut loaded: Vec<(i64, DatasetRow)>,
    mut counts: Counts,
    opts: &TrainingOptions,
) -> Result<Dataset, DatasetError> {
    if counts.n_decisions == 0 {
        return Err(DatasetError::EmptyRange {
            start_ms: range.start_ms,
            end_ms: range.end_ms,
        });
    }
    if counts.n_with_features == 0 {
        return Err(DatasetError::NoRowsOfSchema {
            n_decisions: counts.n_decisions,
            schema: SCHEMA_VERSION,
        });
    }
    loaded.sort_by(|(ia, a), (ib, b)| {
        (a.created_at_ms, &a.tenant, &a.pcs_id, ia).cmp(&(
            b.created_at_ms,
            &b.tenant,
            &b.pcs_id,
            ib,
        ))
    });
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut rows = Vec::with_capacity(loaded.len());
    for (_, row) in loaded {
        if seen.insert((row.tenant.clone(), row.pcs_id.clone())) {
            rows.push(row);
        } else {
            counts.n_repeated += 1;
        }
    }
    let (n_h, n_f) = class_counts(rows.iter().map(|r| r.label));
    if rows.len() < opts.min_labels || n_h == 0 || n_f == 0 {
        return Err(DatasetError::InsufficientLabels {
            n_labelled: rows.len(),
            n_hallucinated: n_h,
            n_faithful: n_f,
            min: opts.min_labels,
        });
    }
    let split = time_split(&rows, opts.validation_fraction);
    let (n_train, n_validation) = (split.train.len(), split.validation.len());
    for (part, idx) in [("train", &split.train), ("validation", &split.validation)] {
        let (h, f) = class_counts(idx.iter().map(|&i| rows[i].label));
        if h == 0 || f == 0 {
            return Err(DatasetError::OneClassSplit {
                part,
                n_hallucinated: h,
                n_faithful: f,
                n_train,
                n_validation,
            });
        }
    }
    Ok(Dataset {
        range,
        sha256: hash(&rows),
        rows,
        counts,
        split,
        validation_fraction: opts.validation_fraction,
    })
}

/// (hallucinated, faithful).
pub fn class_counts(labels: impl Iterator<Item = u8>) -> (usize, usize) {
    labels.fold(
        (0, 0),
        |(h, f), l| if l == 1 { (h + 1, f) } else { (h, f + 1) },
    )
}

/// SHA-256 of the canonical rows (module docs); `rows` must be in canonical order.
pub fn hash(rows: &[DatasetRow]) -> String {
    let mut h = Sha256::new();
    h.update(format!("{DATASET_FORMAT} {SCHEMA_VERSION}\n").as_bytes());
    for r in rows {
        h.update(r.canonical().as_bytes());
        h.update(b"\n");
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The time-based split of canonically ordered `rows` (module docs); `rows` is not empty.
pub fn time_split(rows: &[DatasetRow], fraction: f64) -> Split {
    let n = rows.len();
    let k = ((n as f64 * fraction).ceil() as usize).clamp(1, n.max(1));
    let split_at_ms = rows.get(n - k).map_or(i64::MAX, |r| r.created_at_ms);
    let first_validation = rows.partition_point(|r| r.created_at_ms < split_at_ms);
    let train: Vec<usize> = (0..first_validation).collect();
    let mut seen: HashSet<[u64; N_FEATURES]> =
        train.iter().map(|&i| rows[i].vector_key()).collect();
    let mut validation = Vec::with_capacity(n - first_validation);
    let mut validation_duplicates = 0;
    for (i, row) in rows.iter().enumerate().skip(first_validation) {
        if seen.insert(row.vector_key()) {
            validation.push(i);
        } else {
            validation_duplicates += 1;
        }
    }
    Split {
        train,
        validation,
        validation_duplicates,
        split_at_ms,
    }
}

/// Tenants listed by name in a summary: the ones with the most rows.
pub const LISTED_TENANTS: usize = 20;

/// Up to [`LISTED_TENANTS`] `{tenant, n}`, most rows first, then by name.
fn largest_tenants(tenants: &BTreeMap<&str, usize>) -> Value {
    let mut v: Vec<(&str, usize)> = tenants.iter().map(|(t, n)| (*t, *n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v.truncate(LISTED_TENANTS);
    v.into_iter()
        .map(|(t, n)| json!({"tenant": t, "n": n}))
        .collect()
}

impl Dataset {
    /// Row-major n × [`N_FEATURES`] matrix of every row.
    pub fn matrix(&self) -> Vec<f64> {
        self.rows.iter().flat_map(|r| r.features).collect()
    }

    pub fn labels(&self) -> Vec<u8> {
        self.rows.iter().map(|r| r.label).collect()
    }

    /// Share of hallucinated rows.
    pub fn positive_ratio(&self) -> f64 {
        let (h, _) = class_counts(self.rows.iter().map(|r| r.label));
        h as f64 / self.rows.len().max(1) as f64
    }

    /// What a job's result and the model card say about the data: sizes, class balance per
    /// part, times, label sources and how the labelled decisions reached review.
    pub fn summary(&self) -> Value {
        let part = |idx: &[usize]| {
            let (h, f) = class_counts(idx.iter().map(|&i| self.rows[i].label));
            let first = idx.first().map(|&i| self.rows[i].created_at_ms);
            let last = idx.last().map(|&i| self.rows[i].created_at_ms);
            json!({"n": idx.len(), "hallucinated": h, "faithful": f,
                   "first_ms": first, "last_ms": last})
        };
        let mut sources: BTreeMap<&str, usize> = [Source::Gold, Source::Silver, Source::Bronze]
            .iter()
            .map(|s| (s.as_str(), 0))
            .collect();
        let (mut escalated, mut audit, mut other) = (0usize, 0usize, 0usize);
        let mut tenants: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &self.rows {
            *sources.entry(r.source.as_str()).or_default() += 1;
            *tenants.entry(r.tenant.as_str()).or_default() += 1;
            match (r.escalated, r.audit_sample) {
                (true, _) => escalated += 1,
                (false, true) => audit += 1,
                (false, false) => other += 1,
            }
        }
        json!({
            "format": DATASET_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "sha256": self.sha256,
            "n_samples": self.rows.len(),
            "n_train": self.split.train.len(),
            "n_validation": self.split.validation.len(),
            "validation_duplicates_dropped": self.split.validation_duplicates,
            "positive_ratio": self.positive_ratio(),
            "validation_fraction": self.validation_fraction,
            "time_range": {
                "start_ms": self.range.start_ms,
                "end_ms": self.range.end_ms,
                "split_at_ms": self.split.split_at_ms,
            },
            "train": part(&self.split.train),
            "validation": part(&self.split.validation),
            "label_sources": sources,
            "reached_review": {"escalated": escalated, "audit_sample": audit, "other": other},
            "n_tenants": tenants.len(),
            "largest_tenants": largest_tenants(&tenants),
            "range_counts": self.counts,
        })
    }
}
