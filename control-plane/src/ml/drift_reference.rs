//! The training reference of a model's feature distribution, what drift checks compare live
//! traffic with ([`crate::drift`]).
//!
//! Built once, when a version is trained with its data (training jobs, the default model),
//! from the feature matrix its fit saw, restricted to the training rows: per feature
//!
//! * the PSI bins: [`psi::Reference::from_sample`] with [`psi::DEFAULT_BINS`] quantile bins
//!   (edges, shares, n);
//! * a bounded, deterministic, quantile-representative sample for the KS test: the column
//!   sorted, then the order statistics at ranks ⌊(i + ½)·n/k⌋, i = 0..k, k = min(n,
//!   [`KS_SAMPLE_MAX`]). Below the bound it is the whole column; above, its ECDF is within
//!   1/(2k) of the column's everywhere, so D against it is within 1/(2k) of D against the full
//!   column, and the test's p-value is computed with m = k (conservative: fewer reference
//!   values than the fit saw).
//!
//! The features are those the gate stores for a decision scored by this model: the tenant
//! columns against the model's own baseline (`kakeya_core::bundle::Risk::features`), so the
//! reference and the decision log are comparable as they are.
//!
//! **Identity.** [`DriftReference::sha256`] is the SHA-256 (hex) of [`DriftReference::canonical`]:
//! the compact JSON of the struct (fields in declaration order, numbers as serde_json's
//! shortest round-trip decimal). The model card records it (`drift_reference.sha256`) and the
//! stored row carries it, so a reference is bound to its version and a changed one is refused.

use super::stats::psi::{self, Reference};
use super::stats::StatsError;
use kakeya_core::features::{FEATURE_NAMES, N_FEATURES, SCHEMA_VERSION};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Format tag of the canonical encoding.
pub const REFERENCE_FORMAT: &str = "kakeya-drift-reference-v1";
/// Largest KS sample kept per feature.
pub const KS_SAMPLE_MAX: usize = 5000;

/// One feature's reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeatureReference {
    pub name: String,
    /// PSI bins of the training column.
    pub psi: Reference,
    /// Sorted quantile-representative values of the training column (module docs).
    pub ks_sample: Vec<f64>,
}

/// A model's training reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DriftReference {
    /// [`REFERENCE_FORMAT`].
    pub format: String,
    /// The feature schema (`kakeya_core::features::SCHEMA_VERSION`).
    pub schema_version: String,
    /// Training rows it was built from.
    pub n: u64,
    /// One per feature, in schema order.
    pub features: Vec<FeatureReference>,
}

/// Why a reference cannot be built or taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReferenceError {
    #[error("the reference needs at least one training row")]
    Empty,
    #[error("feature {feature}: {source}")]
    Stats {
        feature: &'static str,
        source: StatsError,
    },
    #[error("the stored reference is not valid: {0}")]
    Invalid(String),
}

/// The quantile-representative sample of a sorted column (module docs).
fn ks_sample(sorted: &[f64]) -> Vec<f64> {
    let n = sorted.len();
    let k = n.min(KS_SAMPLE_MAX);
    (0..k)
        .map(|i| sorted[((2 * i + 1) * n) / (2 * k)])
        .collect()
}

impl DriftReference {
    /// From the row-major n × [`N_FEATURES`] matrix `x`, rows `rows` (the training part).
    pub fn from_rows(x: &[f64], rows: &[usize]) -> Result<DriftReference, ReferenceError> {
        if rows.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let mut features = Vec::with_capacity(N_FEATURES);
        for (j, name) in FEATURE_NAMES.iter().enumerate() {
            let mut col: Vec<f64> = rows.iter().map(|&i| x[i * N_FEATURES + j]).collect();
            let psi = Reference::from_sample(&col, psi::DEFAULT_BINS).map_err(|source| {
                ReferenceError::Stats {
                    feature: name,
                    source,
                }
            })?;
            col.sort_by(f64::total_cmp);
            features.push(FeatureReference {
                name: name.to_string(),
                psi,
                ks_sample: ks_sample(&col),
            });
        }
        Ok(DriftReference {
            format: REFERENCE_FORMAT.into(),
            schema_version: SCHEMA_VERSION.into(),
            n: rows.len() as u64,
            features,
        })
    }

    /// The canonical encoding (module docs).
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn sha256(&self) -> String {
        kakeya_core::ids::sha256_hex(self.canonical().as_bytes())
    }

    /// What the model card says about it (`card.drift_reference`).
    pub fn card_entry(&self) -> Value {
        json!({
            "format": self.format,
            "sha256": self.sha256(),
            "n": self.n,
            "schema_version": self.schema_version,
            "psi_bins": psi::DEFAULT_BINS,
            "ks_sample_max": KS_SAMPLE_MAX,
            "built_from": "the feature vectors of the training rows, tenant columns against the model's own baseline (as the gate stores them)",
        })
    }

    /// For a stored reference: this build's format and schema, every feature in schema order,
    /// valid PSI bins, a non-empty sorted finite KS sample of at most [`KS_SAMPLE_MAX`].
    pub fn validate(&self) -> Result<(), ReferenceError> {
        let bad = |why: String| Err(ReferenceError::Invalid(why));
        if self.format != REFERENCE_FORMAT || self.schema_version != SCHEMA_VERSION {
            return bad(format!(
                "format {} / schema {} (this build: {REFERENCE_FORMAT} / {SCHEMA_VERSION})",
                self.format, self.schema_version
            ));
        }
        let names: Vec<&str> = self.features.iter().map(|f| f.name.as_str()).collect();
        if names != FEATURE_NAMES {
            return bad("its features are not the schema's, in order".into());
        }
        for f in &self.features {
            if let Err(e) = f.psi.validate() {
                return bad(format!("{}: {e}", f.name));
            }
            let s = &f.ks_sample;
            let sorted = s.windows(2).all(|w| w[0] <= w[1]);
            if s.is_empty()
                || s.len() > KS_SAMPLE_MAX
                || !sorted
                || s.iter().any(|v| !v.is_finite())
            {
                return bad(format!(
                    "{}: the KS sample must be 1..={KS_SAMPLE_MAX} sorted finite values",
                    f.name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(n: usize, f: impl Fn(usize, usize) -> f64) -> Vec<f64> {
        (0..n)
            .flat_map(|i| (0..N_FEATURES).map(move |j| (i, j)))
            .map(|(i, j)| f(i, j))
            .collect()
    }

    #[test]
    fn small_columns_are_kept_whole_and_large_ones_by_quantile() {
        // 12 rows, column j = (i·(j+1)) mod 7: the sample is the sorted column
        let x = matrix(12, |i, j| ((i * (j + 1)) % 7) as f64);
        let all: Vec<usize> = (0..12).collect();
        let r = DriftReference::from_rows(&x, &all).unwrap();
        r.validate().unwrap();
        assert_eq!(r.n, 12);
        let mut col: Vec<f64> = (0..12).map(|i| ((i * 2) % 7) as f64).collect();
        col.sort_by(f64::total_cmp);
        assert_eq!(r.features[1].ks_sample, col);
        // only the rows asked for
        let r2 = DriftReference::from_rows(&x, &[0, 1]).unwrap();
        assert_eq!(r2.features[0].ks_sample, vec![0.0, 1.0]);
        assert_eq!(r2.n, 2);

        // 20,000 rows 0..20000: k = 5000 values at ranks ⌊(2i+1)·20000/10000⌋ = 4i + 2
        let n = 20_000;
        let x = matrix(n, |i, _| i as f64);
        let rows: Vec<usize> = (0..n).rev().collect();
        let r = DriftReference::from_rows(&x, &rows).unwrap();
        let s = &r.features[0].ks_sample;
        assert_eq!(s.len(), KS_SAMPLE_MAX);
        assert_eq!((s[0], s[1], s[4999]), (2.0, 6.0, 19_998.0));
        // its ECDF is within 1/(2k) of the column's: D against the column is ≤ 1e-4
        let d = crate::ml::stats::ks::ks_2samp(s, &(0..n).map(|i| i as f64).collect::<Vec<_>>())
            .unwrap()
            .statistic;
        assert!(d <= 1.0 / (2.0 * KS_SAMPLE_MAX as f64), "{d}");
    }

    #[test]
    fn constant_columns_and_identity() {
        let x = matrix(30, |i, j| if j == 3 { 1.0 } else { (i % 5) as f64 });
        let rows: Vec<usize> = (0..30).collect();
        let r = DriftReference::from_rows(&x, &rows).unwrap();
        assert_eq!(r.features[3].psi.edges, vec![1.0]);
        assert_eq!(r.features[3].ks_sample, vec![1.0; 30]);
        // same input, same bytes and hash; the hash moves with any value
        let again = DriftReference::from_rows(&x, &rows).unwrap();
        assert_eq!(r.canonical(), again.canonical());
        assert_eq!(r.sha256(), again.sha256());
        assert_eq!(r.sha256().len(), 64);
        let mut other = r.clone();
        other.features[0].ks_sample[0] = 0.5;
        assert_ne!(other.sha256(), r.sha256());
        // round trip through its canonical JSON
        let back: DriftReference = serde_json::from_str(&r.canonical()).unwrap();
        assert_eq!(back, r);
        assert_eq!(r.card_entry()["sha256"], r.sha256());
        assert_eq!(
            DriftReference::from_rows(&x, &[]),
            Err(ReferenceError::Empty)
        );
    }

    #[test]
    fn stored_references_are_validated() {
        let x = matrix(10, |i, _| i as f64);
        let good = DriftReference::from_rows(&x, &(0..10).collect::<Vec<_>>()).unwrap();
        let mut broken = Vec::new();
        let mut r = good.clone();
        r.schema_version = "hrs-features-v0".into();
        broken.push(r);
        let mut r = good.clone();
        r.features.pop();
        broken.push(r);
        let mut r = good.clone();
        r.features.swap(0, 1);
        broken.push(r);
        let mut r = good.clone();
        r.features[2].ks_sample.reverse();
        broken.push(r);
        let mut r = good.clone();
        r.features[2].ks_sample.clear();
        broken.push(r);
        let mut r = good.clone();
        r.features[4].psi.n = 0;
        broken.push(r);
        for r in broken {
            assert!(matches!(r.validate(), Err(ReferenceError::Invalid(_))));
        }
    }
}
