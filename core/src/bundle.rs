//! The model bundle: everything a filter needs to score requests, as one signed, versioned value
//! (champion and optional challenger model, the challenger's traffic share, an optional canary
//! model with its weight, tenant statistics, the scoring policy). Given a request and a bundle,
//! the risk is deterministic, which is what makes replay and exact A/B analysis possible.
//!
//! Arms ([`Bundle::arm`]): the canary takes its share first, by a consistent hash salted with
//! its own version ([`canary_bucket`]); the challenger splits what is left. A bundle without a
//! canary serialises to exactly the bytes it had before the canary existed, and arms as before.
//!
//! Transport: the control plane serves the canonical JSON bytes of a bundle at
//! `GET /v1/bundles/current` with the headers [`H_SHA256`] (hex SHA-256 of the bytes, also the
//! ETag) and [`H_SIGNATURE`] (standard base64 Ed25519 signature over the 32-byte digest). The
//! filter accepts a bundle only when the digest matches, the signature verifies with a key from
//! its plugin configuration, and every model fits this build's feature schema; otherwise it
//! keeps the last good bundle.

use crate::anomaly_policy::AnomalySection;
use crate::budget::BudgetSection;
use crate::ensemble_policy::EnsembleSection;
use crate::evidence::Evidence;
use crate::features::{
    features, pcs_version, tenant_features, PcsSignals, TenantStats, N_FEATURES, PCS_V02,
    TENANT_FEATURES,
};
use crate::model::{sigmoid, Model, ModelError};
use crate::pcs::Pcs;
use crate::task::TaskKind;
use crate::task_models::{Scope, TaskModelError, TaskModels, TaskVersions};
use crate::upstream::{UpstreamArm, UpstreamKey, UpstreamSection};
use crate::verify::{Outcome, RiskSummary, VerifyResult};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Format tag of [`Bundle`].
pub const BUNDLE_FORMAT: &str = "kakeya-bundle-v1";
/// Response header carrying the hex SHA-256 of the bundle bytes.
pub const H_SHA256: &str = "x-kakeya-bundle-sha256";
/// Response header carrying the Ed25519 signature of the bundle digest.
pub const H_SIGNATURE: &str = "x-kakeya-bundle-signature";

/// What the A/B split hashes to pick a request's arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArmKey {
    /// The tenant: a tenant stays on one arm (with one tenant the split is all or nothing).
    Tenant,
    /// `tenant + "/" + pcs_id`: requests split by the weight, the same PCS always on one arm.
    #[default]
    Request,
}

impl ArmKey {
    /// The serialised name: `tenant` or `request`.
    pub fn as_str(self) -> &'static str {
        match self {
            ArmKey::Tenant => "tenant",
            ArmKey::Request => "request",
        }
    }

    /// Inverse of [`ArmKey::as_str`].
    pub fn parse(s: &str) -> Option<ArmKey> {
        [ArmKey::Tenant, ArmKey::Request]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// How requests are scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Score PCS that carry no evidence. Off by default: a PCS alone carries no hallucination
    /// signal worth a verdict, so it is judged by verification alone.
    pub score_without_evidence: bool,
    /// Calibrated risk at or above which the band is `medium` (`high` starts at the model's
    /// escalation threshold).
    pub medium_risk: f64,
    /// What the challenger split hashes (default `request`; bundles without it parse as that).
    pub arm_key: ArmKey,
    /// The A/B experiment this bundle serves, if any: its id salts the split
    /// ([`experiment_bucket`]), so assignment is independent between experiments and stable
    /// across every bundle of one. Absent (the default, and every bundle from before it
    /// existed) leaves the split and the canonical bytes exactly as they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            score_without_evidence: false,
            medium_risk: 0.5,
            arm_key: ArmKey::Request,
            experiment: None,
        }
    }
}

/// The canary of a bundle (the registry's `canary` alias): a model scoring `weight` of the
/// units (tenants, or requests: [`Canary::key`]) before the challenger split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    pub model: Model,
    /// Share of units (0..=1, finite) scored by the canary.
    pub weight: f64,
    /// What the canary's hash is keyed by; `tenant` (sticky per tenant) when absent.
    #[serde(default = "tenant_key")]
    pub key: ArmKey,
}

fn tenant_key() -> ArmKey {
    ArmKey::Tenant
}

/// The value a filter scores with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub format: String,
    /// Increases with every publication.
    pub version: u64,
    pub created_at_ms: i64,
    pub champion: Model,
    #[serde(default)]
    pub challenger: Option<Model>,
    /// Share of requests or tenants (0..=1, by consistent hash of [`Policy::arm_key`]) scored
    /// by the challenger.
    #[serde(default)]
    pub challenger_weight: f64,
    /// The canary, taken before the challenger split ([`Bundle::arm`]). Absent from the bytes
    /// when there is none, so bundles without one are byte-for-byte what they were before it
    /// existed (a filter of an older build refuses a bundle that carries one, as an unknown
    /// field, and keeps its last good bundle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// Per-tenant statistics of PCS v0.2 (evidence-bound) traffic for the tenant-relative
    /// features of v0.2 PCS, their effect bounded by [`TENANT_MAX_SHIFT`]; tenants not listed,
    /// and PCS v0.1, use the model's training baseline.
    #[serde(default)]
    pub tenant_stats: BTreeMap<String, TenantStats>,
    #[serde(default)]
    pub policy: Policy,
    /// Per-tenant ensemble policies ([`crate::ensemble_policy`]). Absent from the bytes when
    /// empty, so bundles without one are byte-for-byte what they were before.
    #[serde(default, skip_serializing_if = "EnsembleSection::is_empty")]
    pub ensemble: EnsembleSection,
    /// Per-tenant budget state and the action the filter takes ([`crate::budget`]). Absent
    /// from the bytes when empty, so bundles without budgets are byte-for-byte as before.
    #[serde(default, skip_serializing_if = "BudgetSection::is_empty")]
    pub budgets: BudgetSection,
    /// Per-task and per-tenant models of the champion arm ([`crate::task_models`]). Absent
    /// from the bytes when empty, so bundles without them are byte-for-byte what they were.
    #[serde(default, skip_serializing_if = "TaskModels::is_empty")]
    pub task_models: TaskModels,
    /// Canary weights of the gateway's upstream routes ([`crate::upstream`]). Absent from the
    /// bytes when empty, so bundles without them are byte-for-byte what they were.
    #[serde(default, skip_serializing_if = "UpstreamSection::is_empty")]
    pub upstreams: UpstreamSection,
    /// The anomaly VAE and the per-tenant modes ([`crate::anomaly_policy`]). Absent from the
    /// bytes when empty, so bundles without it are byte-for-byte what they were.
    #[serde(default, skip_serializing_if = "AnomalySection::is_empty")]
    pub anomaly: AnomalySection,
}

/// Why a bundle was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BundleError {
    #[error("bundle digest does not match its SHA-256 header")]
    Digest,
    #[error("bundle signature is missing, malformed or does not verify with a trusted key")]
    Signature,
    #[error("a trusted bundle key is not standard base64 of 32 bytes")]
    Key,
    #[error("bundle is not valid JSON for {BUNDLE_FORMAT}: {0}")]
    Json(String),
    #[error("unsupported bundle format {0:?}")]
    Format(String),
    #[error("challenger_weight must be within [0, 1]")]
    Weight,
    #[error("the canary's weight must be a finite number within [0, 1]")]
    CanaryWeight,
    #[error("policy: {0}")]
    Policy(&'static str),
    #[error("tenant statistics of {0:?} are not finite")]
    TenantStats(String),
    #[error("ensemble: {0}")]
    Ensemble(#[from] crate::ensemble_policy::PolicyError),
    #[error("budgets: {0}")]
    Budget(#[from] crate::budget::BudgetError),
    #[error("upstreams: {0}")]
    Upstreams(String),
    #[error("anomaly: {0}")]
    Anomaly(#[from] crate::anomaly_policy::AnomalyPolicyError),
    #[error("{0} model: {1}")]
    Model(&'static str, ModelError),
    #[error("{0}")]
    TaskModels(#[from] TaskModelError),
}

/// Which model scored a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arm {
    Champion,
    Challenger,
    Canary,
}

impl Arm {
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Champion => "champion",
            Arm::Challenger => "challenger",
            Arm::Canary => "canary",
        }
    }
}

/// Risk band of a calibrated risk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Band {
    Low,
    Medium,
    High,
}

impl Band {
    pub fn as_str(self) -> &'static str {
        match self {
            Band::Low => "low",
            Band::Medium => "medium",
            Band::High => "high",
        }
    }
}

/// The score of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Risk {
    /// Calibrated probability that the answer is hallucinated.
    pub risk: f64,
    /// Uncalibrated logistic output.
    pub raw: f64,
    pub band: Band,
    /// At or above the model's escalation threshold.
    pub escalate: bool,
    pub model_version: String,
    pub arm: Arm,
    /// The task of the task-aware model that scored ([`crate::task_models`]); `None` when the
    /// arm's own (global) model did.
    pub task: Option<TaskKind>,
    /// The feature vector (schema [`crate::features::SCHEMA_VERSION`]) the model scored: the
    /// features against the model's own tenant baseline (`model.tenant`), before the bounded
    /// tenant-statistics adjustment of the decision value. The gate forwards it
    /// ([`crate::feature_wire`]) so the decision log keeps it exactly.
    pub features: [f64; N_FEATURES],
}

/// A bundle as served: canonical bytes, their digest, the signature.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedBundle {
    pub bytes: Vec<u8>,
    pub sha256: String,
    pub signature_b64: String,
}

impl Bundle {
    /// Checks the format, the weight and every model against this build's feature schema.
    pub fn validate(&self) -> Result<(), BundleError> {
        if self.format != BUNDLE_FORMAT {
            return Err(BundleError::Format(self.format.chars().take(64).collect()));
        }
        if !(0.0..=1.0).contains(&self.challenger_weight) {
            return Err(BundleError::Weight);
        }
        // `contains` is false for NaN; ±∞ are outside the range.
        if let Some(c) = &self.canary {
            if !(0.0..=1.0).contains(&c.weight) {
                return Err(BundleError::CanaryWeight);
            }
        }
        self.ensemble.validate()?;
        self.budgets.validate()?;
        self.upstreams.validate().map_err(BundleError::Upstreams)?;
        self.anomaly.validate()?;
        if !(0.0..=1.0).contains(&self.policy.medium_risk) {
            return Err(BundleError::Policy("medium_risk must be within [0, 1]"));
        }
        if let Some(e) = &self.policy.experiment {
            if !is_experiment_id(e) {
                return Err(BundleError::Policy(
                    "experiment must be 1..=128 characters of A-Z a-z 0-9 . _ -",
                ));
            }
        }
        for (arm, m) in self.arm_models() {
            let Some(m) = m else { continue };
            let name = arm.as_str();
            m.validate().map_err(|e| BundleError::Model(name, e))?;
            if !(0.0..=1.0).contains(&m.thresholds().escalate) {
                return Err(BundleError::Policy(
                    "a model's escalation threshold must be within [0, 1]",
                ));
            }
            if !m.tenant().is_valid() {
                return Err(BundleError::TenantStats(format!("{name} baseline")));
            }
        }
        if let Some((t, _)) = self.tenant_stats.iter().find(|(_, s)| !s.is_valid()) {
            return Err(BundleError::TenantStats(t.chars().take(64).collect()));
        }
        self.task_models.validate()?;
        Ok(())
    }

    /// The model of every arm, `None` for an arm the bundle does not have.
    pub fn arm_models(&self) -> [(Arm, Option<&Model>); 3] {
        [
            (Arm::Champion, Some(&self.champion)),
            (Arm::Challenger, self.challenger.as_ref()),
            (Arm::Canary, self.canary.as_ref().map(|c| &c.model)),
        ]
    }

    /// Canonical bytes: compact JSON in field order (maps are ordered).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Signs the canonical bytes with the control plane's Ed25519 seed.
    pub fn sign(&self, seed: &[u8; 32]) -> SignedBundle {
        let bytes = self.canonical_bytes();
        let digest = Sha256::digest(&bytes);
        let signature_b64 = STANDARD.encode(SigningKey::from_bytes(seed).sign(&digest).to_bytes());
        SignedBundle {
            sha256: crate::ids::sha256_hex(&bytes),
            bytes,
            signature_b64,
        }
    }

    /// The arm of a request. The canary first: a unit (the tenant, or `tenant/pcs_id`: its
    /// [`Canary::key`]) whose [`canary_bucket`], salted with the canary's version, is below the
    /// canary's weight is scored by it. Then the challenger split of the rest: a consistent
    /// hash of [`Policy::arm_key`] against the challenger's weight, so a tenant (or a PCS)
    /// stays on one arm while the weights are unchanged. In an experiment
    /// ([`Policy::experiment`]) that hash is salted with its id and cut into
    /// [`EXPERIMENT_BUCKETS`] buckets ([`experiment_bucket`]).
    ///
    /// Computes the canary's version (a hash of its model); a filter uses [`Scorer`], which
    /// computes it once per bundle.
    pub fn arm(&self, tenant: &str, pcs_id: &str) -> Arm {
        let salt = self
            .canary
            .as_ref()
            .map(|c| c.model.version())
            .unwrap_or_default();
        self.arm_with(tenant, pcs_id, &salt)
    }

    /// [`Bundle::arm`] with the canary's version given (callers deciding many requests
    /// against one bundle compute it once: [`Model::version`] hashes the model).
    pub fn arm_with(&self, tenant: &str, pcs_id: &str, canary_version: &str) -> Arm {
        if let Some(c) = &self.canary {
            let unit: &[&str] = match c.key {
                ArmKey::Tenant => &[tenant],
                ArmKey::Request => &[tenant, "/", pcs_id],
            };
            if canary_bucket(canary_version, unit) < c.weight {
                return Arm::Canary;
            }
        }
        if self.challenger.is_none() {
            return Arm::Champion;
        }
        let challenger = match (&self.policy.experiment, self.policy.arm_key) {
            (Some(e), ArmKey::Tenant) => in_treatment(e, &[tenant], self.challenger_weight),
            (Some(e), ArmKey::Request) => {
                in_treatment(e, &[tenant, "/", pcs_id], self.challenger_weight)
            }
            (None, ArmKey::Tenant) => bucket(tenant) < self.challenger_weight,
            (None, ArmKey::Request) => {
                bucket_parts(&[tenant.as_bytes(), b"/", pcs_id.as_bytes()]) < self.challenger_weight
            }
        };
        if challenger {
            Arm::Challenger
        } else {
            Arm::Champion
        }
    }

    /// The cluster of upstream route `route` that serves a request of `tenant` (with Envoy's
    /// `x-request-id` `request_id`): the canary side when the unit's [`upstream_bucket`] is
    /// below the route's canary weight, else the stable one (also for a route the bundle does
    /// not list); after a promotion the two sides are swapped
    /// ([`crate::upstream::UpstreamCanary::stable_cluster`]). The same bundle gives the same
    /// answer in every Envoy.
    pub fn upstream_arm(&self, route: &str, tenant: &str, request_id: &str) -> UpstreamArm {
        let Some(c) = self.upstreams.get(route) else {
            return UpstreamArm::Stable;
        };
        let unit: &[&str] = match c.key {
            UpstreamKey::Tenant => &[tenant],
            UpstreamKey::Request => &[tenant, "/", request_id],
        };
        c.cluster(upstream_bucket(route, unit) < c.canary_weight)
    }

    /// The model of an arm.
    pub fn model(&self, arm: Arm) -> &Model {
        match (arm, &self.challenger, &self.canary) {
            (Arm::Challenger, Some(c), _) => c,
            (Arm::Canary, _, Some(c)) => &c.model,
            _ => &self.champion,
        }
    }

    /// The model that scores a request of `tenant` on `arm`, and where it came from: on the
    /// champion arm, the task-aware model of the evidence's task if the bundle has one
    /// ([`TaskModels::select`]: tenant + task → task); otherwise the arm's own model.
    /// Challenger and canary models score every task ([`crate::task_models`]).
    pub fn scoring_model(
        &self,
        arm: Arm,
        tenant: &str,
        evidence: Option<&Evidence>,
    ) -> (&Model, Scope) {
        if arm == Arm::Champion {
            let chosen = evidence
                .and_then(|e| e.task)
                .and_then(|t| self.task_models.select(tenant, t));
            if let Some(chosen) = chosen {
                return chosen;
            }
        }
        (self.model(arm), Scope::Arm)
    }

    /// Scores a verified request; `None` when the policy says not to (no evidence).
    /// Computes the model version on every call; a filter uses [`Scorer`] instead.
    pub fn assess(
        &self,
        tenant: &str,
        pcs: &Pcs,
        outcome: &Outcome,
        evidence: Option<&Evidence>,
    ) -> Option<Risk> {
        let arm = self.arm(tenant, &pcs.pcs_id);
        let (model, scope) = self.scoring_model(arm, tenant, evidence);
        let version = model.version();
        self.assess_with(
            pcs,
            outcome,
            evidence,
            tenant,
            (arm, model, scope),
            &version,
        )
    }

    fn assess_with(
        &self,
        pcs: &Pcs,
        outcome: &Outcome,
        evidence: Option<&Evidence>,
        tenant: &str,
        (arm, model, scope): (Arm, &Model, Scope),
        model_version: &str,
    ) -> Option<Risk> {
        if evidence.is_none() && !self.policy.score_without_evidence {
            return None;
        }
        // The verifier already recomputed D̂ (or could not); reuse it rather than redo it.
        let signals = PcsSignals::from_verified(pcs, outcome.result.recomputed_d_hat);
        let x = features(&signals, evidence, model.tenant());
        let z = self.decision(model, tenant, pcs, &signals, &x);
        let (raw, risk) = (sigmoid(z), model.platt().apply(z));
        let escalate = risk >= model.thresholds().escalate;
        let band = if escalate {
            Band::High
        } else if risk >= self.policy.medium_risk {
            Band::Medium
        } else {
            Band::Low
        };
        Some(Risk {
            risk,
            raw,
            band,
            escalate,
            model_version: model_version.to_string(),
            arm,
            task: scope.task(),
            features: x,
        })
    }
}

impl Bundle {
    /// The decision value of `x` (features against the model's own baseline): with the
    /// tenant's statistics of the request's PCS version ([`pcs_version`]) when the bundle has
    /// them, their effect bounded to ±[`TENANT_MAX_SHIFT`] around the baseline's decision value.
    fn decision(
        &self,
        model: &Model,
        tenant: &str,
        pcs: &Pcs,
        signals: &PcsSignals,
        x: &[f64; N_FEATURES],
    ) -> f64 {
        let z0 = model.decision(x);
        let stats = match pcs_version(pcs) {
            PCS_V02 => self.tenant_stats.get(tenant),
            _ => None,
        };
        let Some(stats) = stats else { return z0 };
        let mut xt = *x;
        for (i, v) in TENANT_FEATURES
            .into_iter()
            .zip(tenant_features(signals, stats))
        {
            if let Some(slot) = xt.get_mut(i) {
                *slot = v;
            }
        }
        z0 + (model.decision(&xt) - z0).clamp(-TENANT_MAX_SHIFT, TENANT_MAX_SHIFT)
    }
}

impl VerifyResult {
    /// Folds a risk assessment into the result: a high risk escalates an answer that
    /// verification alone would have accepted (202 instead of 200). Lives here, not in
    /// [`crate::verify`], so that verification does not depend on bundles.
    pub fn apply_risk(&mut self, risk: &Risk, bundle_version: u64) {
        if risk.escalate && !self.escalated {
            self.escalated = true;
            if self.reason.is_none() {
                self.reason = Some(format!(
                    "hallucination risk {:.4} at or above the escalation threshold (model {})",
                    risk.risk, risk.model_version
                ));
            }
        }
        self.record_risk(risk, bundle_version);
    }

    /// Records the risk fields without deciding anything (the ensemble decides).
    pub fn record_risk(&mut self, risk: &Risk, bundle_version: u64) {
        self.risk = Some(RiskSummary {
            score: risk.risk,
            band: risk.band.as_str().into(),
            model_version: risk.model_version.clone(),
            arm: risk.arm.as_str().into(),
            model_task: risk.task.map(|t| t.as_str().to_string()),
            bundle_version,
        });
    }
}

/// Largest effect, in decision-value (logit) units, that a tenant's statistics have on a score:
/// z stays within ±0.1 of the z the model's own baseline gives. Whatever a bundle's tenant
/// statistics (any traffic, any burst), a score's z therefore moves by at most 0.2 between two
/// bundles with the same model, the raw risk σ(z) by at most 0.05 and the calibrated risk by at
/// most |platt.a| × 0.05 (the slopes of σ and of Platt's curve are at most 1/4 and |a|/4).
pub const TENANT_MAX_SHIFT: f64 = 0.1;

/// A verified bundle prepared for scoring many requests: the model versions (a hash of each
/// model's canonical JSON) are computed once here instead of on every request.
#[derive(Debug, Clone, PartialEq)]
pub struct Scorer {
    bundle: Bundle,
    champion_version: String,
    challenger_version: String,
    canary_version: String,
    task_versions: TaskVersions,
    anomaly_version: String,
}

impl Scorer {
    pub fn new(bundle: Bundle) -> Self {
        let champion_version = bundle.champion.version();
        let challenger_version = bundle
            .challenger
            .as_ref()
            .map(Model::version)
            .unwrap_or_default();
        let canary_version = bundle
            .canary
            .as_ref()
            .map(|c| c.model.version())
            .unwrap_or_default();
        let task_versions = bundle.task_models.versions();
        let anomaly_version = bundle
            .anomaly
            .model
            .as_ref()
            .map(crate::vae::VaeModel::version)
            .unwrap_or_default();
        Scorer {
            bundle,
            champion_version,
            challenger_version,
            canary_version,
            task_versions,
            anomaly_version,
        }
    }

    /// The version of the bundle's anomaly model (`vae-…`, empty without one), computed once.
    pub fn anomaly_version(&self) -> &str {
        &self.anomaly_version
    }

    /// As [`Bundle::arm`], with the precomputed canary version.
    pub fn arm(&self, tenant: &str, pcs_id: &str) -> Arm {
        self.bundle.arm_with(tenant, pcs_id, &self.canary_version)
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// As [`Bundle::assess`], with the precomputed versions.
    pub fn assess(
        &self,
        tenant: &str,
        pcs: &Pcs,
        outcome: &Outcome,
        evidence: Option<&Evidence>,
    ) -> Option<Risk> {
        let arm = self.arm(tenant, &pcs.pcs_id);
        let (model, scope) = self.bundle.scoring_model(arm, tenant, evidence);
        let version = match (scope, arm) {
            (Scope::Task(_) | Scope::TenantTask(_), _) => {
                self.task_versions.get(tenant, scope).unwrap_or_default()
            }
            (Scope::Arm, Arm::Champion) => &self.champion_version,
            (Scope::Arm, Arm::Challenger) => &self.challenger_version,
            (Scope::Arm, Arm::Canary) => &self.canary_version,
        };
        self.bundle
            .assess_with(pcs, outcome, evidence, tenant, (arm, model, scope), version)
    }
}

impl core::ops::Deref for Scorer {
    type Target = Bundle;
    fn deref(&self) -> &Bundle {
        &self.bundle
    }
}

/// Position of `key` in [0, 1): FNV-1a 64, then the SplitMix64 finaliser so that similar keys
/// (`tenant-1`, `tenant-2`, …) spread evenly.
pub fn bucket(key: &str) -> f64 {
    bucket_parts(&[key.as_bytes()])
}

/// [`bucket`] of the concatenation of `parts` (without building it).
pub fn bucket_parts(parts: &[&[u8]]) -> f64 {
    // FNV-1a is sequential: hashing the parts in turn equals hashing their concatenation.
    let mut z = FNV_OFFSET;
    for b in parts.iter().flat_map(|p| p.iter()) {
        z ^= u64::from(*b);
        z = z.wrapping_mul(FNV_PRIME);
    }
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Buckets of an experiment's split (spec §3.5): a share is honoured to 1/10,000.
pub const EXPERIMENT_BUCKETS: u32 = 10_000;

/// The bucket, in `0..EXPERIMENT_BUCKETS`, of `unit` (a tenant) in experiment `experiment`:
/// [`bucket_parts`] of `experiment + "/" + unit`. The salt makes assignments of two
/// experiments independent (the same tenants are not always the treated ones).
pub fn experiment_bucket(experiment: &str, unit: &str) -> u32 {
    unit_bucket(experiment, &[unit])
}

/// `unit` has at most three parts (`tenant`, or `tenant`, `/`, `pcs_id`); hashing an empty
/// part is a no-op, so a fixed array avoids an allocation per request.
fn unit_bucket(experiment: &str, unit: &[&str]) -> u32 {
    let part = |i: usize| unit.get(i).map_or(&b""[..], |p| p.as_bytes());
    let parts = [experiment.as_bytes(), b"/", part(0), part(1), part(2)];
    // bucket_parts is in [0, 1): the product is below 10,000, the cast exact.
    (bucket_parts(&parts) * f64::from(EXPERIMENT_BUCKETS)) as u32
}

/// Salt of the canary's hash, before its version.
pub const CANARY_SALT: &str = "canary";

/// Position in [0, 1) of `unit` (`[tenant]` or `[tenant, "/", pcs_id]`) for the canary of
/// version `canary_version`: [`bucket_parts`] of `canary/<version>/<unit>`. Salted with the
/// version so that successive canaries fall on independent tenants (not always the same first
/// ones) and independently of the challenger split; unsalted by the weight so that raising the
/// weight only adds units (a unit on the canary at 5 % stays on it at 10 %).
pub fn canary_bucket(canary_version: &str, unit: &[&str]) -> f64 {
    let part = |i: usize| unit.get(i).map_or(&b""[..], |p| p.as_bytes());
    bucket_parts(&[
        CANARY_SALT.as_bytes(),
        b"/",
        canary_version.as_bytes(),
        b"/",
        part(0),
        part(1),
        part(2),
    ])
}

/// Salt of an upstream route's hash, before the route's name.
pub const UPSTREAM_SALT: &str = "upstream";

/// Position in [0, 1) of `unit` for upstream route `route`: [`bucket_parts`] of
/// `upstream/<route>/<unit>`, as [`canary_bucket`] is salted with the canary's version (so
/// each route's canary falls on independent tenants, and raising the weight only adds units).
pub fn upstream_bucket(route: &str, unit: &[&str]) -> f64 {
    let part = |i: usize| unit.get(i).map_or(&b""[..], |p| p.as_bytes());
    bucket_parts(&[
        UPSTREAM_SALT.as_bytes(),
        b"/",
        route.as_bytes(),
        b"/",
        part(0),
        part(1),
        part(2),
    ])
}

/// True when the unit falls in the treatment's buckets: bucket < weight × 10,000, i.e. the
/// first ⌈weight × 10,000⌉ buckets.
fn in_treatment(experiment: &str, unit: &[&str], weight: f64) -> bool {
    f64::from(unit_bucket(experiment, unit)) < weight * f64::from(EXPERIMENT_BUCKETS)
}

/// An experiment id a bundle may carry: 1..=128 characters of `A-Z a-z 0-9 . _ -` (so
/// `experiment/unit`, the hashed key, has one reading).
pub fn is_experiment_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Verifies a bundle as received (see the module docs) and parses it.
pub fn verify_bundle(
    bytes: &[u8],
    declared_sha256: &str,
    signature_b64: &str,
    trusted_keys_b64: &[String],
) -> Result<Bundle, BundleError> {
    let digest = Sha256::digest(bytes);
    if crate::ids::sha256_hex(bytes) != declared_sha256.trim().to_ascii_lowercase() {
        return Err(BundleError::Digest);
    }
    let sig = STANDARD
        .decode(signature_b64.trim())
        .map_err(|_| BundleError::Signature)?;
    let sig: [u8; 64] = sig
        .as_slice()
        .try_into()
        .map_err(|_| BundleError::Signature)?;
    let sig = Signature::from_bytes(&sig);
    let mut verified = false;
    for k in trusted_keys_b64 {
        let raw = STANDARD.decode(k.trim()).map_err(|_| BundleError::Key)?;
        let raw: [u8; 32] = raw.as_slice().try_into().map_err(|_| BundleError::Key)?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| BundleError::Key)?;
        if key.verify(&digest, &sig).is_ok() {
            verified = true;
            break;
        }
    }
    if !verified {
        return Err(BundleError::Signature);
    }
    let bundle: Bundle =
        serde_json::from_slice(bytes).map_err(|e| BundleError::Json(e.to_string()))?;
    bundle.validate()?;
    Ok(bundle)
}

#[cfg(test)]
#[path = "bundle_canary_tests.rs"]
mod canary_tests;

#[cfg(test)]
#[path = "bundle_task_tests.rs"]
mod task_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::tiny_model;
    use crate::model::HrsModel;

    /// The logistic champion of a test bundle, to edit.
    fn lr(m: &mut Model) -> &mut HrsModel {
        match m {
            Model::Logistic(m) => m,
            Model::Trees(_) => panic!("a logistic champion"),
        }
    }
    use crate::verify::{verify, VerifyParams};

    pub(super) const SEED: [u8; 32] = [7; 32];

    pub(super) fn bundle() -> Bundle {
        Bundle {
            format: BUNDLE_FORMAT.into(),
            version: 3,
            created_at_ms: 1,
            champion: tiny_model().into(),
            challenger: None,
            challenger_weight: 0.0,
            canary: None,
            tenant_stats: BTreeMap::new(),
            policy: Policy::default(),
            ensemble: EnsembleSection::default(),
            budgets: BudgetSection::default(),
            task_models: TaskModels::default(),
            upstreams: Default::default(),
            anomaly: Default::default(),
        }
    }

    pub(super) fn keys() -> Vec<String> {
        vec![STANDARD.encode(SigningKey::from_bytes(&SEED).verifying_key().to_bytes())]
    }

    #[test]
    fn signed_bundles_verify_and_tampering_is_refused() {
        let b = bundle();
        let s = b.sign(&SEED);
        assert_eq!(
            verify_bundle(&s.bytes, &s.sha256, &s.signature_b64, &keys()),
            Ok(b.clone())
        );
        // Tampered bytes: the digest no longer matches.
        let mut bad = s.bytes.clone();
        bad[10] ^= 1;
        assert_eq!(
            verify_bundle(&bad, &s.sha256, &s.signature_b64, &keys()),
            Err(BundleError::Digest)
        );
        // Re-hashed tampered bytes: the signature no longer verifies.
        let other = Bundle {
            version: 4,
            ..b.clone()
        }
        .canonical_bytes();
        let sha = crate::ids::sha256_hex(&other);
        assert_eq!(
            verify_bundle(&other, &sha, &s.signature_b64, &keys()),
            Err(BundleError::Signature)
        );
        // Unsigned, or signed by another key.
        assert_eq!(
            verify_bundle(&s.bytes, &s.sha256, "", &keys()),
            Err(BundleError::Signature)
        );
        let foreign = b.sign(&[8; 32]);
        assert_eq!(
            verify_bundle(
                &foreign.bytes,
                &foreign.sha256,
                &foreign.signature_b64,
                &keys()
            ),
            Err(BundleError::Signature)
        );
        // Schema-incompatible model.
        let mut wrong = b;
        lr(&mut wrong.champion).schema_version = "hrs-features-v0".into();
        let w = wrong.sign(&SEED);
        assert!(matches!(
            verify_bundle(&w.bytes, &w.sha256, &w.signature_b64, &keys()),
            Err(BundleError::Model("champion", _))
        ));
    }

    #[test]
    fn arms_are_consistent_and_follow_the_weight() {
        let mut b = bundle();
        b.policy.arm_key = ArmKey::Tenant;
        assert_eq!(
            b.arm("acme", "p"),
            Arm::Champion,
            "no challenger, no challenger arm"
        );
        b.challenger = Some(tiny_model().into());
        b.challenger_weight = 0.5;
        let tenants: Vec<String> = (0..2000).map(|i| format!("tenant-{i}")).collect();
        let share = tenants
            .iter()
            .filter(|t| b.arm(t, "p") == Arm::Challenger)
            .count() as f64
            / 2000.0;
        assert!((share - 0.5).abs() < 0.05, "{share}");
        // Keyed by tenant: the PCS id does not matter.
        assert!(tenants
            .iter()
            .all(|t| b.arm(t, "p") == b.arm(t, "q") && b.arm(t, "p") == b.arm(t, "p")));
        assert!(tenants
            .iter()
            .all(|t| (b.arm(t, "") == Arm::Challenger) == (bucket(t) < 0.5)));
        b.challenger_weight = 1.0;
        assert!(tenants.iter().all(|t| b.arm(t, "p") == Arm::Challenger));
        b.challenger_weight = 0.0;
        assert!(tenants.iter().all(|t| b.arm(t, "p") == Arm::Champion));
    }

    #[test]
    fn request_arms_split_one_tenant() {
        let mut b = bundle();
        assert_eq!(b.policy.arm_key, ArmKey::Request, "the default");
        b.challenger = Some(tiny_model().into());
        b.challenger_weight = 0.5;
        let ids: Vec<String> = (0..2000).map(|i| format!("pcs-{i:05}")).collect();
        let share = ids
            .iter()
            .filter(|id| b.arm("default", id) == Arm::Challenger)
            .count() as f64
            / 2000.0;
        assert!((share - 0.5).abs() < 0.05, "{share}");
        for id in &ids {
            let arm = b.arm("default", id);
            assert!((0..3).all(|_| b.arm("default", id) == arm), "{id}");
            assert_eq!(
                arm == Arm::Challenger,
                bucket(&format!("default/{id}")) < 0.5,
                "{id}"
            );
        }
        // Through assess: the arm follows the PCS id of the request.
        let mut p =
            crate::pcs::parse(include_bytes!("../tests/data/pcs_tiny_case_1.json")).unwrap();
        let o = verify(&p, &VerifyParams::default());
        b.policy.score_without_evidence = true;
        let scorer = Scorer::new(b.clone());
        let mut seen = std::collections::BTreeSet::new();
        for id in ids.iter().take(40) {
            p.pcs_id = id.clone();
            let r = scorer.assess("default", &p, &o, None).unwrap();
            assert_eq!(r.arm, b.arm("default", id));
            assert_eq!(Some(&r), b.assess("default", &p, &o, None).as_ref());
            seen.insert(r.arm.as_str());
        }
        assert_eq!(seen.len(), 2, "both arms among 40 requests of one tenant");
    }

    #[test]
    fn policy_serde_and_old_bundles() {
        let p: Policy = serde_json::from_str(r#"{"score_without_evidence":true}"#).unwrap();
        assert_eq!(p.arm_key, ArmKey::Request);
        let p: Policy = serde_json::from_str(r#"{"arm_key":"tenant"}"#).unwrap();
        assert_eq!(p.arm_key, ArmKey::Tenant);
        assert!(serde_json::from_str::<Policy>(r#"{"arm_key":"Tenant"}"#).is_err());
        let json = serde_json::to_string(&Policy::default()).unwrap();
        assert!(json.contains(r#""arm_key":"request""#), "{json}");
        // A bundle serialised before arm_key existed still parses and verifies.
        let mut v = serde_json::to_value(bundle()).unwrap();
        v["policy"].as_object_mut().unwrap().remove("arm_key");
        let old: Bundle = serde_json::from_value(v).unwrap();
        assert_eq!(old, bundle());
    }

    /// Issue 10: the consistent-hash split of an experiment is within 0.5 percentage points of
    /// its traffic split over 100,000 tenants, for several splits and experiments.
    #[test]
    fn experiment_split_is_within_half_a_point_over_100000_tenants() {
        let tenants: Vec<String> = (0..100_000).map(|i| format!("tenant-{i}")).collect();
        let mut b = bundle();
        b.challenger = Some(tiny_model().into());
        b.policy.arm_key = ArmKey::Tenant;
        let mut worst = 0.0_f64;
        for experiment in ["ab-ranker-1700000000", "ab-x-1"] {
            b.policy.experiment = Some(experiment.into());
            for split in [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99] {
                b.challenger_weight = split;
                let treated = tenants
                    .iter()
                    .filter(|t| b.arm(t, "") == Arm::Challenger)
                    .count();
                let share = treated as f64 / tenants.len() as f64;
                assert!(
                    (share - split).abs() < 0.005,
                    "{experiment} split {split}: {share}"
                );
                worst = worst.max((share - split).abs());
            }
        }
        eprintln!("largest |share − split| over 100,000 tenants: {worst:.5}");
    }

    /// The salt: a tenant's arm is `experiment_bucket(id, tenant) < split × 10,000`, the same in
    /// every bundle of one experiment (other versions, statistics, PCS ids), and independent
    /// between experiments and of the unsalted split.
    #[test]
    fn experiment_arms_are_salted_and_never_flip_within_an_experiment() {
        let tenants: Vec<String> = (0..20_000).map(|i| format!("t{i}")).collect();
        let mut b = bundle();
        b.challenger = Some(tiny_model().into());
        b.challenger_weight = 0.5;
        b.policy.arm_key = ArmKey::Tenant;
        b.policy.experiment = Some("ab-a-1".into());
        // Later bundles of the same experiment: new versions, tenant statistics.
        let mut later = b.clone();
        later.version = 9;
        later.created_at_ms = 99;
        later.tenant_stats.insert("t7".into(), TenantStats::fresh());
        let mut other = b.clone();
        other.policy.experiment = Some("ab-b-2".into());
        let (mut both, mut with_unsalted) = (0usize, 0usize);
        for t in &tenants {
            let arm = b.arm(t, "p");
            assert_eq!(
                arm == Arm::Challenger,
                experiment_bucket("ab-a-1", t) < 5_000,
                "{t}"
            );
            assert_eq!(later.arm(t, "p"), arm, "{t} flipped between bundles");
            assert_eq!(b.arm(t, "q"), arm, "{t}: keyed by tenant");
            let treated = arm == Arm::Challenger;
            both += usize::from(treated && other.arm(t, "p") == Arm::Challenger);
            with_unsalted += usize::from(treated && bucket(t) < 0.5);
        }
        // Independent assignments overlap on split² of the tenants.
        for (what, n) in [
            ("other experiment", both),
            ("unsalted split", with_unsalted),
        ] {
            let share = n as f64 / tenants.len() as f64;
            assert!((share - 0.25).abs() < 0.015, "{what}: {share}");
        }
        // Weights are honoured to 1/10,000: the treatment is the first ⌈w·10,000⌉ buckets.
        assert!(tenants
            .iter()
            .all(|t| experiment_bucket("ab-a-1", t) < EXPERIMENT_BUCKETS));
        b.challenger_weight = 1.0;
        assert!(tenants.iter().all(|t| b.arm(t, "p") == Arm::Challenger));
        b.challenger_weight = 0.0;
        assert!(tenants.iter().all(|t| b.arm(t, "p") == Arm::Champion));
        // Keyed by request, the salt covers tenant/pcs_id.
        b.challenger_weight = 0.5;
        b.policy.arm_key = ArmKey::Request;
        for id in ["p1", "p2", "p3"] {
            let salted = experiment_bucket("ab-a-1", &format!("acme/{id}")) < 5_000;
            assert_eq!(b.arm("acme", id) == Arm::Challenger, salted, "{id}");
        }
    }

    /// Bundles without an experiment (all of them before it existed) parse, serialise to the
    /// same bytes (no `experiment` key) and split exactly as before: `bucket(tenant)` or
    /// `bucket(tenant/pcs_id)` against the weight.
    #[test]
    fn bundles_without_an_experiment_are_unchanged() {
        let mut b = bundle();
        b.challenger = Some(tiny_model().into());
        b.challenger_weight = 0.3;
        let bytes = b.canonical_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("experiment"), "{text}");
        let parsed: Bundle = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed.policy.experiment, None);
        assert_eq!(parsed.canonical_bytes(), bytes);
        for i in 0..2000 {
            let t = format!("tenant-{i}");
            let by_request = bucket(&format!("{t}/p{i}")) < 0.3;
            assert_eq!(b.arm(&t, &format!("p{i}")) == Arm::Challenger, by_request);
        }
        b.policy.arm_key = ArmKey::Tenant;
        for i in 0..2000 {
            let t = format!("tenant-{i}");
            assert_eq!(b.arm(&t, "p") == Arm::Challenger, bucket(&t) < 0.3);
        }
        // With an experiment the key is written, and read back.
        b.policy.experiment = Some("ab-a-1".into());
        let s = b.sign(&SEED);
        let back = verify_bundle(&s.bytes, &s.sha256, &s.signature_b64, &keys()).unwrap();
        assert_eq!(back.policy.experiment.as_deref(), Some("ab-a-1"));
        assert!(String::from_utf8(s.bytes)
            .unwrap()
            .contains(r#""experiment":"ab-a-1""#));
        // Ids that could make the hashed key ambiguous, or are empty or huge, are refused.
        for bad in ["", "a/b", "a b", "é", &"x".repeat(129)] {
            b.policy.experiment = Some(bad.into());
            assert!(
                matches!(b.validate(), Err(BundleError::Policy(_))),
                "{bad:?}"
            );
        }
        b.policy.experiment = Some("x".repeat(128));
        assert!(b.validate().is_ok());
    }

    #[test]
    fn non_finite_stats_and_bad_policies_are_refused() {
        let sign = |b: &Bundle| {
            let s = b.sign(&SEED);
            verify_bundle(&s.bytes, &s.sha256, &s.signature_b64, &keys())
        };
        assert!(sign(&bundle()).is_ok());
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut b = bundle();
            let mut st = TenantStats::fresh();
            st.avg_r = bad;
            b.tenant_stats.insert("acme".into(), st);
            assert_eq!(b.validate(), Err(BundleError::TenantStats("acme".into())));
            let mut b = bundle();
            lr(&mut b.champion).tenant.std_r = bad;
            assert!(matches!(b.validate(), Err(BundleError::TenantStats(_))));
            let mut b = bundle();
            b.policy.medium_risk = bad;
            assert!(matches!(b.validate(), Err(BundleError::Policy(_))));
            let mut b = bundle();
            lr(&mut b.champion).thresholds.escalate = bad;
            assert!(matches!(b.validate(), Err(BundleError::Policy(_))));
        }
        let mut b = bundle();
        b.policy.medium_risk = 1.5;
        assert!(matches!(b.validate(), Err(BundleError::Policy(_))));
        let mut b = bundle();
        let mut st = TenantStats::fresh();
        st.std_r = -1.0;
        b.tenant_stats.insert("x".into(), st);
        assert!(matches!(b.validate(), Err(BundleError::TenantStats(_))));
        // Serde cannot even write NaN into a bundle (it becomes null), and null is refused.
        let mut b = bundle();
        let mut st = TenantStats::fresh();
        st.avg_coh = f64::NAN;
        b.tenant_stats.insert("acme".into(), st);
        assert!(sign(&b).is_err());
        // A finite, valid entry passes.
        let mut b = bundle();
        b.tenant_stats.insert("acme".into(), TenantStats::fresh());
        assert!(sign(&b).is_ok());
    }

    #[test]
    fn assessment_needs_evidence_unless_the_policy_says_otherwise() {
        let p = crate::pcs::parse(include_bytes!("../tests/data/pcs_tiny_case_1.json")).unwrap();
        let o = verify(&p, &VerifyParams::default());
        let mut b = bundle();
        assert_eq!(b.assess("default", &p, &o, None), None);
        let ev = Evidence {
            question: "q".into(),
            context: "c".into(),
            citations: vec![],
            response: "r".into(),
            task: None,
        };
        let r = b.assess("default", &p, &o, Some(&ev)).unwrap();
        assert!((0.0..=1.0).contains(&r.risk));
        // The risk carries the very vector the model scored, bit for bit.
        let signals = PcsSignals::from_verified(&p, o.result.recomputed_d_hat);
        let x = features(&signals, Some(&ev), b.champion.tenant());
        assert_eq!(r.features.map(f64::to_bits), x.map(f64::to_bits));
        assert_eq!(r.raw, sigmoid(b.champion.decision(&x)));
        assert_eq!(r.model_version, b.champion.version());
        assert_eq!(r.escalate, r.risk >= b.champion.thresholds().escalate);
        b.policy.score_without_evidence = true;
        assert!(b.assess("default", &p, &o, None).is_some());
        b.challenger = Some(tiny_model().into());
        b.challenger_weight = 0.5;
        let scorer = Scorer::new(b.clone());
        for t in ["a", "b", "c", "d", "e", "f"] {
            assert_eq!(
                scorer.assess(t, &p, &o, Some(&ev)),
                b.assess(t, &p, &o, Some(&ev))
            );
        }
    }

    /// A tree ensemble goes through the same path as a logistic model: signed and verified in
    /// a bundle, z = its decision value, then Platt, threshold and the bounded tenant shift.
    #[test]
    fn a_tree_ensemble_champion_scores_through_the_same_path() {
        use crate::features::PcsSignals;
        use crate::trees::{tests::tiny_trees, Tree};
        let mut trees = tiny_trees();
        // A stump on the compressibility z (tenant-relative feature 9) with a large effect.
        trees.trees.push(Tree {
            feature: vec![9, 0, 0],
            threshold: vec![0.0, 0.0, 0.0],
            left: vec![1, 0, 0],
            right: vec![2, 0, 0],
            value: vec![0.0, -3.0, 3.0],
        });
        trees.platt = crate::model::Platt { a: -1.3, b: 0.1 };
        let mut b = bundle();
        b.champion = trees.into();
        b.challenger = Some(tiny_model().into());
        b.challenger_weight = 0.0;
        let s = b.sign(&SEED);
        assert_eq!(
            verify_bundle(&s.bytes, &s.sha256, &s.signature_b64, &keys()),
            Ok(b.clone())
        );
        let ev = Evidence {
            question: "capital of France?".into(),
            context: "Paris is the capital of France.".into(),
            citations: vec![],
            response: "Paris".into(),
            task: None,
        };
        let mut pcs =
            crate::pcs::parse(include_bytes!("../tests/data/pcs_tiny_case_1.json")).unwrap();
        pcs.evidence_sha256 = crate::evidence::evidence_sha256(&ev);
        pcs.pcs_id = crate::ids::expected_pcs_id(&pcs);
        let o = verify(&pcs, &VerifyParams::default());
        let r = b.assess("acme", &pcs, &o, Some(&ev)).unwrap();
        let signals = PcsSignals::from_verified(&pcs, o.result.recomputed_d_hat);
        let x = features(&signals, Some(&ev), b.champion.tenant());
        let z = b.champion.decision(&x);
        assert_eq!((r.raw, r.risk), (sigmoid(z), b.champion.platt().apply(z)));
        assert_eq!(r.model_version, b.champion.version());
        assert!(r.model_version.starts_with("gbdt-"), "{}", r.model_version);
        assert_eq!(r.escalate, r.risk >= b.champion.thresholds().escalate);
        assert_eq!(
            Scorer::new(b.clone()).assess("acme", &pcs, &o, Some(&ev)),
            Some(r.clone())
        );
        // Tenant statistics that flip the stump (±3 in z) move z by at most the bound.
        for (r_avg, sd) in [(0.0, 1e-9), (1.0, 1e-9)] {
            let mut bt = b.clone();
            let st = TenantStats {
                avg_r: r_avg,
                std_r: sd,
                ..TenantStats::fresh()
            };
            bt.tenant_stats.insert("acme".into(), st);
            let got = bt.assess("acme", &pcs, &o, Some(&ev)).unwrap();
            let zt = bt.decision(&bt.champion, "acme", &pcs, &signals, &x);
            assert_eq!(got.raw, sigmoid(zt));
            assert!((zt - z).abs() <= TENANT_MAX_SHIFT + 1e-12, "{zt} vs {z}");
        }
    }

    /// Issue 6 item 9: tenant statistics move a score by at most [`TENANT_MAX_SHIFT`] in z
    /// (hence |Δ calibrated risk| ≤ |a|·TENANT_MAX_SHIFT/4 against the baseline), whatever they
    /// are, and never for PCS v0.1.
    #[test]
    fn tenant_statistics_have_a_bounded_effect_and_only_on_v02() {
        use crate::features::{PcsSignals, TenantStats};
        let mut b = bundle();
        // A model that leans hard on the tenant-relative features.
        let m = lr(&mut b.champion);
        m.weights = vec![0.0; crate::features::N_FEATURES];
        m.weights[8] = 4.0;
        m.weights[9] = -3.0;
        m.mean = vec![0.0; crate::features::N_FEATURES];
        m.std = vec![0.5; crate::features::N_FEATURES];
        m.platt = crate::model::Platt { a: -1.7, b: 0.2 };
        b.policy.score_without_evidence = true;
        let ev = Evidence {
            question: "capital of France?".into(),
            context: "Paris is the capital of France.".into(),
            citations: vec![],
            response: "Paris".into(),
            task: None,
        };
        let v01 = crate::pcs::parse(include_bytes!("../tests/data/pcs_tiny_case_1.json")).unwrap();
        let o1 = verify(&v01, &VerifyParams::default());
        // The same PCS bound to its evidence, with the id that binding gives it (computed, so
        // it follows the id formula), so that it passes verification as a v0.2.
        let mut v02 = v01.clone();
        v02.evidence_sha256 = crate::evidence::evidence_sha256(&ev);
        v02.pcs_id = crate::ids::expected_pcs_id(&v02);
        let o = verify(&v02, &VerifyParams::default());
        assert_eq!(o.result.reason, o1.result.reason, "{:?}", o.result);
        assert!(o.result.recomputed_d_hat.is_some(), "{:?}", o.result);
        let base_v02 = b.assess("acme", &v02, &o, Some(&ev)).unwrap();
        let base_v01 = b.assess("acme", &v01, &o1, None).unwrap();
        let a = b.champion.platt().a.abs();
        let mut seen_max = 0.0_f64;
        for (coh, r, sd) in [
            (0.0, 0.0, 1e-9),
            (1.05, 1.0, 1e-9),
            (0.0, 1.0, 0.0),
            (1.05, 0.0, 5.0),
            (0.5, 0.5, 0.01),
        ] {
            let mut b = b.clone();
            let st = TenantStats {
                avg_coh: coh,
                avg_r: r,
                std_r: sd,
                ..TenantStats::fresh()
            };
            b.tenant_stats.insert("acme".into(), st);
            let got = b.assess("acme", &v02, &o, Some(&ev)).unwrap();
            let signals = PcsSignals::from_verified(&v02, o.result.recomputed_d_hat);
            let x0 = features(&signals, Some(&ev), b.champion.tenant());
            let z0 = b.champion.decision(&x0);
            let z = b.decision(&b.champion, "acme", &v02, &signals, &x0);
            assert_eq!(got.raw, crate::model::sigmoid(z));
            let dz = z - z0;
            assert!(dz.abs() <= TENANT_MAX_SHIFT + 1e-12, "{st:?}: Δz {dz}");
            assert!((got.risk - base_v02.risk).abs() <= a * TENANT_MAX_SHIFT / 4.0 + 1e-12);
            assert!((got.raw - base_v02.raw).abs() <= TENANT_MAX_SHIFT / 4.0 + 1e-12);
            seen_max = seen_max.max(dz.abs());
            // Unbounded, these statistics would move z by far more than the bound.
            let free = b.champion.decision(&features(&signals, Some(&ev), &st)) - z0;
            assert!(free.abs() > TENANT_MAX_SHIFT, "{st:?}: {free}");
            // A v0.1 PCS of the same tenant is scored with the model's baseline, exactly.
            assert_eq!(b.assess("acme", &v01, &o1, None), Some(base_v01.clone()));
            // Other tenants are unaffected.
            assert_eq!(
                b.assess("beta", &v02, &o, Some(&ev)),
                Some(base_v02.clone())
            );
            assert_eq!(
                Scorer::new(b.clone()).assess("acme", &v02, &o, Some(&ev)),
                Some(got)
            );
        }
        assert!(
            (seen_max - TENANT_MAX_SHIFT).abs() < 1e-12,
            "the bound is reached"
        );
    }
}
