//! Features as decided: the vector the gate scored a decision with, from its header
//! ([`kakeya_core::feature_wire`]) through the WAL record ([`crate::wal::WalRecord::features`])
//! to the decision log's `feature_schema` / `features` columns (migration 0009), so training
//! reads features exactly as they were at decision time. Numbers only: raw evidence is never
//! persisted.
//!
//! A header that fails validation does not fail the submission: the gate's verdict stands and
//! is stored, without features, with a warning and `kakeya_feature_rejects_total{reason}`. A
//! 400 would turn a version skew between filter and control plane (say a newer feature schema
//! during a rolling upgrade) into lost decisions and failed agents, for data that only serves
//! later training.

use crate::metrics::Metrics;
use axum::http::HeaderMap;
use kakeya_core::feature_wire::{self, FeatureWireError, HEADER};
use kakeya_core::features::{N_FEATURES, SCHEMA_VERSION};
use serde::{Deserialize, Serialize};

/// A validated feature vector as the WAL record and the decision log keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecidedFeatures {
    /// The feature schema version of the gate that scored (`hrs-features-v1`).
    pub schema: String,
    /// The values in that schema's order, all finite. serde_json writes the shortest decimal
    /// that parses back to the same f64 and the workspace parses with `float_roundtrip`, so the
    /// JSON forms (WAL record, `features` column) keep every bit.
    pub values: Vec<f64>,
}

/// Why a forwarded vector was not stored (the `reason` label of the counter).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejected {
    #[error(transparent)]
    Wire(#[from] FeatureWireError),
    #[error("{HEADER} sent for a decision that was not scored")]
    Unscored,
}

impl Rejected {
    pub fn reason(&self) -> &'static str {
        match self {
            Rejected::Wire(e) => e.reason(),
            Rejected::Unscored => "unscored",
        }
    }
}

impl DecidedFeatures {
    /// Validates a header value ([`feature_wire::decode`]).
    pub fn from_header(value: &str) -> Result<DecidedFeatures, FeatureWireError> {
        let x = feature_wire::decode(value)?;
        Ok(DecidedFeatures {
            schema: SCHEMA_VERSION.to_string(),
            values: x.to_vec(),
        })
    }

    /// The same rules for a vector read back from a WAL record.
    pub fn check(&self) -> Result<(), FeatureWireError> {
        feature_wire::check(&self.schema, &self.values).map(|_| ())
    }

    /// Text of the `features` column: a JSON array of numbers.
    pub fn values_json(&self) -> String {
        serde_json::to_string(&self.values).unwrap_or_default()
    }
}

/// Parses the `features` column (a JSON array of finite numbers; exactly [`N_FEATURES`] for
/// [`SCHEMA_VERSION`]).
pub fn parse_column(schema: &str, json: &str) -> Result<Vec<f64>, String> {
    let values: Vec<f64> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    check_finite(&values)?;
    if schema == SCHEMA_VERSION && values.len() != N_FEATURES {
        return Err(format!("{} values, expected {N_FEATURES}", values.len()));
    }
    Ok(values)
}

/// [`parse_column`] of a [`SCHEMA_VERSION`] row straight into its array (no allocation: the
/// simulator reads a million of them).
pub fn parse_current(json: &str) -> Result<[f64; N_FEATURES], String> {
    let values: [f64; N_FEATURES] = serde_json::from_str(json).map_err(|e| e.to_string())?;
    check_finite(&values)?;
    Ok(values)
}

fn check_finite(values: &[f64]) -> Result<(), String> {
    if values.iter().any(|v| !v.is_finite()) {
        return Err("a feature value is not finite".into());
    }
    Ok(())
}

/// The features of a submission from the gate's headers: `Ok(None)` without the header,
/// `Err` when it is malformed (two copies, not ASCII, or refused by [`feature_wire::decode`])
/// or sent for an unscored decision.
pub fn from_headers(
    headers: &HeaderMap,
    scored: bool,
) -> Result<Option<DecidedFeatures>, Rejected> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(FeatureWireError::Encoding.into());
    }
    if !scored {
        return Err(Rejected::Unscored);
    }
    let text = value.to_str().map_err(|_| FeatureWireError::Encoding)?;
    Ok(Some(DecidedFeatures::from_header(text)?))
}

/// [`from_headers`], a refusal logged and counted instead of failing the submission.
pub fn accept(
    headers: &HeaderMap,
    scored: bool,
    tenant: &str,
    metrics: &Metrics,
) -> Option<DecidedFeatures> {
    match from_headers(headers, scored) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(tenant, reason = e.reason(), error = %e, "features not stored");
            metrics
                .feature_rejects_total
                .with_label_values(&[e.reason()])
                .inc();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn vector() -> [f64; N_FEATURES] {
        let mut x = [0.0; N_FEATURES];
        for (i, v) in x.iter_mut().enumerate() {
            *v = (i as f64 + 0.1).ln() / 7.0 - 0.3;
        }
        x[0] = -0.0;
        x[1] = 5e-324;
        x[2] = 0.1 + 0.2;
        x
    }

    #[test]
    fn json_forms_keep_every_bit() {
        let x = vector();
        let f = DecidedFeatures::from_header(&feature_wire::encode(&x)).unwrap();
        let back: DecidedFeatures =
            serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(back, f);
        let col = parse_column(&f.schema, &f.values_json()).unwrap();
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&col), bits(&x));
        assert_eq!(bits(&back.values), bits(&x));
        assert!(parse_column(SCHEMA_VERSION, "[1.0]").is_err());
        assert!(parse_column(SCHEMA_VERSION, "nope").is_err());
        assert!(parse_column(SCHEMA_VERSION, &format!("[{}]", ["null"; 22].join(","))).is_err());
    }

    #[test]
    fn headers_are_validated() {
        let good = feature_wire::encode(&vector());
        let mut h = HeaderMap::new();
        assert_eq!(from_headers(&h, true), Ok(None));
        assert_eq!(from_headers(&h, false), Ok(None));
        h.insert(HEADER, HeaderValue::from_str(&good).unwrap());
        assert!(from_headers(&h, true).unwrap().is_some());
        assert_eq!(from_headers(&h, false), Err(Rejected::Unscored));
        h.append(HEADER, HeaderValue::from_str(&good).unwrap());
        assert_eq!(from_headers(&h, true).unwrap_err().reason(), "encoding");
        let mut h = HeaderMap::new();
        h.insert(
            HEADER,
            HeaderValue::from_bytes(b"hrs-features-v1;\xff").unwrap(),
        );
        assert_eq!(from_headers(&h, true).unwrap_err().reason(), "encoding");
        let mut bad = DecidedFeatures::from_header(&good).unwrap();
        assert_eq!(bad.check(), Ok(()));
        bad.values.pop();
        assert_eq!(bad.check(), Err(FeatureWireError::Length(21)));
    }
}
