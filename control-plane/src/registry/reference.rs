//! Drift references stored with their model version (`drift_references`, migration 0014).
//!
//! A row holds the canonical encoding of a [`DriftReference`] and its SHA-256; the model card
//! of the version records the same hash (`card.drift_reference.sha256`, written when the
//! version was trained). [`load`] takes a reference only when the stored bytes hash to the
//! recorded value, the card names that value and the bytes parse and validate: anything else
//! is an integrity failure (logged and counted like the registry's others), never compared
//! with traffic. Rows are written once (`ON CONFLICT DO NOTHING`: the reference of a version
//! is deterministic, so a retry writes the same bytes) and never updated.

use super::IntegrityError;
use crate::ml::drift_reference::DriftReference;
use crate::store::Db;
use sqlx::Row;

/// Stores the reference of `version` (registered already); false when it had one.
pub async fn store(
    db: &Db,
    version: &str,
    reference: &DriftReference,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO drift_references (model_version, sha256, reference, n, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (model_version) DO NOTHING",
    )
    .bind(version)
    .bind(reference.sha256())
    .bind(reference.canonical())
    .bind(i64::try_from(reference.n).unwrap_or(i64::MAX))
    .bind(now_ms)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// What [`load`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded {
    /// The version has no reference (an uploaded artifact: its data is not here).
    None,
    Reference {
        reference: Box<DriftReference>,
        sha256: String,
    },
}

/// The reference of `version`, checked (module docs).
pub async fn load(db: &Db, version: &str) -> Result<Loaded, LoadError> {
    let row = sqlx::query(
        "SELECT r.sha256 AS sha256, r.reference AS reference, m.card AS card \
         FROM drift_references r JOIN models m ON m.version = r.model_version \
         WHERE r.model_version = $1",
    )
    .bind(version)
    .fetch_optional(&db.pool)
    .await?;
    let Some(r) = row else {
        return Ok(Loaded::None);
    };
    let (sha256, text, card): (String, String, String) = (
        r.try_get("sha256")?,
        r.try_get("reference")?,
        r.try_get("card")?,
    );
    let fail = |why: String| {
        LoadError::Integrity(
            IntegrityError::Model {
                version: version.to_string(),
                why: format!("drift reference: {why}"),
            }
            .record(),
        )
    };
    let actual = kakeya_core::ids::sha256_hex(text.as_bytes());
    if actual != sha256 {
        return Err(fail(format!(
            "the stored bytes' SHA-256 {actual} does not match the recorded {sha256}"
        )));
    }
    let card: serde_json::Value = serde_json::from_str(&card).unwrap_or_default();
    let carded = card
        .pointer("/drift_reference/sha256")
        .and_then(|v| v.as_str());
    if carded != Some(sha256.as_str()) {
        return Err(fail(format!(
            "the model card names {} and the row {sha256}",
            carded.unwrap_or("no reference")
        )));
    }
    let reference: DriftReference =
        serde_json::from_str(&text).map_err(|e| fail(format!("does not parse: {e}")))?;
    reference.validate().map_err(|e| fail(e.to_string()))?;
    Ok(Loaded::Reference {
        reference: Box::new(reference),
        sha256,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Integrity(IntegrityError),
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
}
