//! Hallucination-risk models as the data plane sees them: [`Model`], one of two kinds of trained
//! artifact scored with plain `f64` arithmetic (no ndarray, no allocation), and the reference
//! system's hand-set HRS (spec §10) kept verbatim as a *baseline* only.
//!
//! Why in core: the Envoy filter scores inline, so the scorers must build for wasm and must
//! not panic. Training lives in the control plane (`kakeya_control_plane::ml`).
//!
//! Kinds (the artifact's `kind` field):
//! * `logistic_regression` ([`HrsModel`]): `z = intercept + Σ wᵢ·(xᵢ − meanᵢ)/stdᵢ`;
//! * `gradient_boosted_trees` ([`crate::trees::TreeModel`]): `z = base_score + Σ leaf values`.
//!
//! Both are then scored alike: `raw = σ(z)`, and the calibrated probability is Platt's
//! `1/(1 + exp(A·z + B))` fitted on a held-out calibration split (A < 0 for a useful model).
//! The inputs are the [`crate::features`] vector of schema `schema_version`. The canonical bytes
//! are `serde_json` of the kind's struct (fixed field order, shortest round-trip floats), the
//! artifact's identity is their SHA-256, and its version `lr-` / `gbdt-` + 12 hex of it.

pub(crate) use crate::artifact::check_schema;
pub use crate::artifact::{sigmoid, ModelError, Platt, Thresholds, TrainingMeta};
use crate::features::{signal_entropy, TenantStats, FEATURE_NAMES};
use crate::ids::sha256_hex;
use crate::trees::{TreeModel, KIND_TREES};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const KIND_LOGISTIC: &str = "logistic_regression";

/// Bound (in training standard deviations) of every standardised feature value in
/// [`HrsModel::decision`].
pub const MAX_STANDARDISED: f64 = 8.0;

/// A trained logistic-regression artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HrsModel {
    pub kind: String,
    pub schema_version: String,
    pub feature_names: Vec<String>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub weights: Vec<f64>,
    pub intercept: f64,
    pub platt: Platt,
    pub thresholds: Thresholds,
    /// Tenant baseline the features were computed with.
    pub tenant: TenantStats,
    pub training: TrainingMeta,
}

impl HrsModel {
    /// Checks the artifact against this build's feature schema.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.kind != KIND_LOGISTIC {
            return Err(ModelError::Kind(self.kind.clone()));
        }
        check_schema(&self.schema_version, &self.feature_names)?;
        let n = FEATURE_NAMES.len();
        if self.mean.len() != n || self.std.len() != n || self.weights.len() != n {
            return Err(ModelError::Shape(n));
        }
        let finite = self
            .mean
            .iter()
            .chain(&self.weights)
            .chain([&self.intercept, &self.platt.a, &self.platt.b])
            .all(|v| v.is_finite());
        if !finite || self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(ModelError::NonFinite);
        }
        Ok(())
    }

    /// Parses and validates an artifact.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        let m: HrsModel =
            serde_json::from_slice(bytes).map_err(|e| ModelError::Json(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// Canonical bytes (what is hashed and shipped).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// SHA-256 of the canonical bytes.
    pub fn sha256(&self) -> String {
        sha256_hex(&self.canonical_bytes())
    }

    /// `lr-<first 12 hex of the SHA-256>`.
    pub fn version(&self) -> String {
        let h = self.sha256();
        format!("lr-{}", h.get(..12).unwrap_or(&h))
    }

    /// Decision value z for `x` (missing trailing entries count as the training mean).
    ///
    /// Robust to hostile inputs: a non-finite entry counts as the training mean, every
    /// standardised value `(xᵢ − meanᵢ)/stdᵢ` is clipped to ±[`MAX_STANDARDISED`], and z itself
    /// is kept finite, so claimed signals such as r = ±1e300 cannot drive the risk to an extreme
    /// or to NaN beyond what an 8σ value would.
    pub fn decision(&self, x: &[f64]) -> f64 {
        let mut z = self.intercept;
        let params = self.weights.iter().zip(&self.mean).zip(&self.std);
        for (i, ((&w, &m), &s)) in params.enumerate() {
            let v = x.get(i).copied().filter(|v| v.is_finite()).unwrap_or(m);
            let u = (v - m) / s;
            let u = if u.is_nan() {
                0.0
            } else {
                u.clamp(-MAX_STANDARDISED, MAX_STANDARDISED)
            };
            z += w * u;
        }
        if z.is_nan() {
            0.0
        } else {
            z.clamp(-f64::MAX, f64::MAX)
        }
    }

    /// `(raw, calibrated)` risk of `x`.
    pub fn score(&self, x: &[f64]) -> (f64, f64) {
        let z = self.decision(x);
        (sigmoid(z), self.platt.apply(z))
    }
}

/// A trained artifact of either kind: what bundles carry and the registry stores.
///
/// Serialised as the kind's own struct, so a logistic artifact's canonical bytes (hence its
/// SHA-256 and version) are exactly those of an [`HrsModel`]; parsing dispatches on `kind`.
#[derive(Debug, Clone, PartialEq)]
pub enum Model {
    Logistic(HrsModel),
    Trees(TreeModel),
}

impl From<HrsModel> for Model {
    fn from(m: HrsModel) -> Self {
        Model::Logistic(m)
    }
}

impl From<TreeModel> for Model {
    fn from(m: TreeModel) -> Self {
        Model::Trees(m)
    }
}

impl Serialize for Model {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Model::Logistic(m) => m.serialize(s),
            Model::Trees(m) => m.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Model {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Model::from_value(v).map_err(serde::de::Error::custom)
    }
}

impl Model {
    /// Parses (without validating) an artifact by its `kind`.
    fn from_value(v: serde_json::Value) -> Result<Self, ModelError> {
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
        let json = |e: serde_json::Error| ModelError::Json(e.to_string());
        match kind {
            KIND_LOGISTIC => serde_json::from_value(v).map(Model::Logistic).map_err(json),
            KIND_TREES => serde_json::from_value(v).map(Model::Trees).map_err(json),
            other => Err(ModelError::Kind(other.chars().take(64).collect())),
        }
    }

    /// Parses and validates an artifact of any kind.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        let v = serde_json::from_slice(bytes).map_err(|e| ModelError::Json(e.to_string()))?;
        let m = Model::from_value(v)?;
        m.validate()?;
        Ok(m)
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            Model::Logistic(m) => m.validate(),
            Model::Trees(m) => m.validate(),
        }
    }

    /// `logistic_regression` or `gradient_boosted_trees`.
    pub fn kind(&self) -> &str {
        match self {
            Model::Logistic(m) => &m.kind,
            Model::Trees(m) => &m.kind,
        }
    }

    /// Canonical bytes (what is hashed, signed and shipped).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// SHA-256 of the canonical bytes.
    pub fn sha256(&self) -> String {
        sha256_hex(&self.canonical_bytes())
    }

    /// `lr-` or `gbdt-`, then the first 12 hex of the SHA-256.
    pub fn version(&self) -> String {
        let prefix = match self {
            Model::Logistic(_) => "lr",
            Model::Trees(_) => "gbdt",
        };
        let h = self.sha256();
        format!("{prefix}-{}", h.get(..12).unwrap_or(&h))
    }

    /// Decision value z (log-odds) of the feature vector `x`.
    pub fn decision(&self, x: &[f64]) -> f64 {
        match self {
            Model::Logistic(m) => m.decision(x),
            Model::Trees(m) => m.decision(x),
        }
    }

    /// `(raw, calibrated)` risk of `x`.
    pub fn score(&self, x: &[f64]) -> (f64, f64) {
        let z = self.decision(x);
        (sigmoid(z), self.platt().apply(z))
    }

    pub fn platt(&self) -> &Platt {
        match self {
            Model::Logistic(m) => &m.platt,
            Model::Trees(m) => &m.platt,
        }
    }

    pub fn thresholds(&self) -> &Thresholds {
        match self {
            Model::Logistic(m) => &m.thresholds,
            Model::Trees(m) => &m.thresholds,
        }
    }

    /// Tenant baseline the features were computed with.
    pub fn tenant(&self) -> &TenantStats {
        match self {
            Model::Logistic(m) => &m.tenant,
            Model::Trees(m) => &m.tenant,
        }
    }

    pub fn schema_version(&self) -> &str {
        match self {
            Model::Logistic(m) => &m.schema_version,
            Model::Trees(m) => &m.schema_version,
        }
    }

    pub fn training(&self) -> &TrainingMeta {
        match self {
            Model::Logistic(m) => &m.training,
            Model::Trees(m) => &m.training,
        }
    }

    /// The provenance to fill in after fitting (e.g. the figures a trainer measured).
    pub fn training_mut(&mut self) -> &mut TrainingMeta {
        match self {
            Model::Logistic(m) => &mut m.training,
            Model::Trees(m) => &mut m.training,
        }
    }
}

/// Every intermediate of the reference HRS (spec §10.1–10.2), for comparison and vectors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReferenceHrs {
    pub entropy: f64,
    pub coherence_delta: f64,
    pub compressibility_z: f64,
    pub z: f64,
    pub raw: f64,
    /// The reference's "calibrated" risk: `1/(1 + e^raw)` — inverted, in (0.2689, 0.5].
    pub risk: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// The reference system's hand-set HRS, implemented exactly as specified *including its
/// inverted Platt step*. A baseline to compare against, never a model to deploy.
pub fn reference_hrs(
    d_hat: f64,
    coh: f64,
    r: f64,
    budget: f64,
    latency_ms: f64,
    tenant: &TenantStats,
) -> ReferenceHrs {
    let entropy = signal_entropy(d_hat, coh, r);
    let coherence_delta = tenant.coherence_delta(coh);
    let compressibility_z = tenant.compressibility_z(r);
    let z = -0.5
        + 0.30 * d_hat
        + -0.50 * coh
        + -0.40 * r
        + -0.60 * budget
        + 0.20 * entropy
        + 0.15 * coherence_delta
        + 0.10 * compressibility_z
        + 0.05 * (latency_ms / 1000.0);
    let raw = sigmoid(z);
    let u = 0.1 * (raw * (1.0 - raw)).sqrt();
    let risk = 1.0 / (1.0 + (1.0 * raw + 0.0).exp());
    ReferenceHrs {
        entropy,
        coherence_delta,
        compressibility_z,
        z,
        raw,
        risk,
        ci_low: (risk - 1.96 * u).max(0.0),
        ci_high: (risk + 1.96 * u).min(1.0),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::features::SCHEMA_VERSION;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 5e-9, "{a} != {b}");
    }

    #[test]
    fn reference_hrs_spec_12_9() {
        let mut t = TenantStats::fresh();
        let (d, c, r, b) = (0.528320834, 0.066666667, 0.318421053, 0.317807017);
        let h = reference_hrs(d, c, r, b, 0.0, &t);
        close(h.entropy, 0.925497784);
        close(h.coherence_delta, -0.633333333);
        close(h.compressibility_z, -4.81578947);
        close(h.z, -1.084369105);
        close(h.raw, 0.252680095);
        close(h.risk, 0.437163947);
        close(h.ci_low, 0.351992336);
        close(h.ci_high, 0.522335558);
        t.update(d, c, r, 0.0);
        let h2 = reference_hrs(d, c, r, b, 0.0, &t);
        close(h2.coherence_delta, -0.443333333);
        close(h2.compressibility_z, -1.662979744);
        close(h2.z, -0.740588132);
        close(h2.risk, 0.419975115);
        close(h2.ci_low, 0.328330300);
        let h3 = reference_hrs(1.3, 0.75, 0.40, 0.43, 50.0, &TenantStats::fresh());
        close(h3.entropy, 1.044155054);
        close(h3.z, -1.084168989);
        close(h3.risk, 0.437154648);
        let h4 = reference_hrs(1.5, 0.7, 0.8, 0.5, 0.0, &TenantStats::fresh());
        close(h4.raw, 0.308619371);
        close(h4.ci_high, 0.513988805);
    }

    pub(crate) fn tiny_model() -> HrsModel {
        let n = FEATURE_NAMES.len();
        let mut w = vec![0.0; n];
        w[0] = 2.0;
        HrsModel {
            kind: KIND_LOGISTIC.into(),
            schema_version: SCHEMA_VERSION.into(),
            feature_names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
            mean: vec![1.0; n],
            std: vec![0.5; n],
            weights: w,
            intercept: -1.0,
            platt: Platt { a: -1.0, b: 0.0 },
            thresholds: Thresholds { escalate: 0.5 },
            tenant: TenantStats::fresh(),
            training: TrainingMeta {
                seed: 7,
                rows: 10,
                dataset_sha256: "00".into(),
                recipe_version: "text-pcs-v1".into(),
                l2: 1.0,
                cv_metrics: serde_json::json!({}),
            },
        }
    }

    #[test]
    fn scoring_and_round_trip() {
        let m = tiny_model();
        m.validate().unwrap();
        let mut x = [1.0; 22];
        x[0] = 1.25; // z = -1 + 2 * 0.5 = 0
        let (raw, cal) = m.score(&x);
        assert_eq!((raw, cal), (0.5, 0.5));
        x[0] = 1.5; // z = 1
        let (raw, cal) = m.score(&x);
        close(raw, 0.731058579);
        close(cal, 0.731058579);
        let bytes = m.canonical_bytes();
        let back = HrsModel::from_json(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.sha256(), m.sha256());
        assert!(m.version().starts_with("lr-") && m.version().len() == 15);
    }

    #[test]
    fn hostile_signals_are_clipped_and_the_risk_stays_finite() {
        use crate::features::{features, PcsSignals};
        let mut m = tiny_model();
        // Weights on r and budget, the signals an agent claims itself.
        m.weights[0] = 0.0;
        m.weights[2] = -3.0;
        m.weights[3] = 2.0;
        m.mean = vec![0.0; FEATURE_NAMES.len()];
        m.std = vec![1.0; FEATURE_NAMES.len()];
        m.intercept = 0.5;
        let signals = |r: f64, budget: f64| PcsSignals {
            d_hat: 1.5,
            coh_star: 0.7,
            r,
            budget,
            d_hat_recomputed: Some(1.5),
            sticky: false,
            non_sticky: false,
            boxes_max: 10,
        };
        let t = TenantStats::fresh();
        for (r, budget) in [(1e300, 0.5), (-1e300, 0.5), (0.5, 1e300), (1e300, 1e300)] {
            let x = features(&signals(r, budget), None, &t);
            let (raw, cal) = m.score(&x);
            assert!(
                raw.is_finite() && (0.0..=1.0).contains(&raw),
                "{r} {budget}: {raw}"
            );
            assert!(
                cal.is_finite() && (0.0..=1.0).contains(&cal),
                "{r} {budget}: {cal}"
            );
            // Exactly the score of the same request with the signal at its 8σ bound.
            let mut clipped = x;
            for v in clipped.iter_mut() {
                *v = v.clamp(-MAX_STANDARDISED, MAX_STANDARDISED);
            }
            assert_eq!(m.score(&x), m.score(&clipped), "{r} {budget}");
        }
        // r = 1e300 no longer forces the risk to ~0: z = 0.5 − 3·8 = −23.5 at worst.
        let x = features(&signals(1e300, 0.5), None, &t);
        assert_eq!(m.decision(&x), 0.5 - 3.0 * MAX_STANDARDISED + 2.0 * 0.5);
        // Non-finite inputs count as the mean; absurd weights still give a finite z.
        let mut x = [0.0; 22];
        x[2] = f64::NAN;
        x[3] = f64::INFINITY;
        assert_eq!(m.decision(&x), 0.5);
        m.weights = vec![f64::MAX; FEATURE_NAMES.len()];
        m.weights[1] = -f64::MAX;
        let (raw, cal) = m.score(&[8.0; 22]);
        assert!((0.0..=1.0).contains(&raw) && (0.0..=1.0).contains(&cal));
        let (raw, cal) = m.score(&[1e300; 22]);
        assert!((0.0..=1.0).contains(&raw) && (0.0..=1.0).contains(&cal));
    }

    /// A logistic artifact's bytes, SHA-256 and version are those of the plain struct, as
    /// before the tree kind existed (pinned: a change here would re-version every stored model).
    #[test]
    fn logistic_artifacts_keep_their_bytes_and_version() {
        let m = tiny_model();
        let direct = serde_json::to_vec(&m).unwrap();
        let model = Model::from(m.clone());
        assert_eq!(model.canonical_bytes(), direct);
        assert_eq!(model.canonical_bytes(), m.canonical_bytes());
        assert_eq!(model.version(), m.version());
        assert_eq!(
            model.sha256(),
            "30a79f38e28128d4685e4a4c64ee1b3398bb7177b69fea81a649f0b5f87006d2"
        );
        assert_eq!(Model::from_json(&direct).unwrap(), model);
        assert_eq!(model.kind(), KIND_LOGISTIC);
        assert!(matches!(
            Model::from_json(br#"{"kind":"mlp"}"#),
            Err(ModelError::Kind(k)) if k == "mlp"
        ));
        assert!(matches!(Model::from_json(b"{}"), Err(ModelError::Kind(_))));
        assert!(matches!(Model::from_json(b"[1"), Err(ModelError::Json(_))));
        let mut bad = m;
        bad.std[0] = -1.0;
        assert_eq!(
            Model::from_json(&serde_json::to_vec(&bad).unwrap()),
            Err(ModelError::NonFinite)
        );
    }

    #[test]
    fn invalid_artifacts_are_refused() {
        let mut m = tiny_model();
        m.schema_version = "hrs-features-v0".into();
        assert!(matches!(m.validate(), Err(ModelError::Schema(_))));
        let mut m = tiny_model();
        m.std[3] = 0.0;
        assert_eq!(m.validate(), Err(ModelError::NonFinite));
        let mut m = tiny_model();
        m.weights.pop();
        assert!(matches!(m.validate(), Err(ModelError::Shape(_))));
        assert!(HrsModel::from_json(b"{}").is_err());
    }
}
