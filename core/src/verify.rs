//! Verification of a parsed PCS (spec §4): an ordered list of checks where the first that fires
//! decides the [`VerifyResult`]. The function never fails; every outcome is a result.
//!
//! Differences from the reference server, each on purpose (spec §15):
//! * scales below 1 fail D̂ recomputation (#18);
//! * recomputed values are present whenever they were computed, also when 0 (#21);
//! * results whose `pcs_id` is empty or not the derived id are marked not cacheable (#7), so
//!   nobody can poison the dedup slot of a real id;
//! * `strict_r` (off by default, for compatibility) escalates when r ∉ [0, 1] (#17);
//! * all tolerances come from [`VerifyParams`], not constants (#27).

use crate::dimension::recompute_d_hat;
use crate::ids::expected_pcs_id;
use crate::numfmt::{go_json_float, round9_api, write_json_string, JsonEscape};
use crate::pcs::{Pcs, SCHEMA};
use crate::vote::Vote;
use serde::{Deserialize, Serialize};

/// Tolerances and budget weights (spec §1.3 defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifyParams {
    #[serde(rename = "tol_D")]
    pub tol_d: f64,
    pub tol_coh: f64,
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
    pub base: f64,
    #[serde(rename = "D0")]
    pub d0: f64,
    pub budget_tol: f64,
    #[serde(rename = "sticky_D_hat_max")]
    pub sticky_d_hat_max: f64,
    pub sticky_coherence_min: f64,
    #[serde(rename = "non_sticky_D_hat_min")]
    pub non_sticky_d_hat_min: f64,
    pub strict_r: bool,
}

impl Default for VerifyParams {
    fn default() -> Self {
        VerifyParams {
            tol_d: 0.15,
            tol_coh: 0.05,
            alpha: 0.30,
            beta: 0.50,
            gamma: 0.20,
            base: 0.10,
            d0: 2.2,
            budget_tol: 0.01,
            sticky_d_hat_max: 1.5,
            sticky_coherence_min: 0.70,
            non_sticky_d_hat_min: 2.6,
            strict_r: false,
        }
    }
}

impl VerifyParams {
    /// Rejects non-finite numbers and negative tolerances.
    pub fn validate(&self) -> Result<(), String> {
        let all = [
            ("tol_D", self.tol_d),
            ("tol_coh", self.tol_coh),
            ("alpha", self.alpha),
            ("beta", self.beta),
            ("gamma", self.gamma),
            ("base", self.base),
            ("D0", self.d0),
            ("budget_tol", self.budget_tol),
            ("sticky_D_hat_max", self.sticky_d_hat_max),
            ("sticky_coherence_min", self.sticky_coherence_min),
            ("non_sticky_D_hat_min", self.non_sticky_d_hat_min),
        ];
        for (name, v) in all {
            if !v.is_finite() {
                return Err(format!("{name} must be a finite number"));
            }
        }
        for (name, v) in [
            ("tol_D", self.tol_d),
            ("tol_coh", self.tol_coh),
            ("budget_tol", self.budget_tol),
        ] {
            if v < 0.0 {
                return Err(format!("{name} must not be negative"));
            }
        }
        Ok(())
    }
}

/// The verify answer (spec §1.2), body of every 200/202.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VerifyResult {
    pub accepted: bool,
    #[serde(
        rename = "recomputed_D_hat",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub recomputed_d_hat: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recomputed_budget: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub escalated: bool,
    /// Hallucination risk of the answer, when it was scored (keys after the reference ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<RiskSummary>,
    /// `hallucination_rejected` when the tenant's ensemble policy rejected the answer (422).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The ensemble's verdict and every vote, when the tenant has a policy (after `risk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<EnsembleSummary>,
}

/// Code and status of an answer the ensemble rejected.
pub const REJECTED_CODE: &str = "hallucination_rejected";
pub const REJECTED_STATUS: u16 = 422;

/// The ensemble part of a result decided under a tenant's policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleSummary {
    pub policy_id: String,
    /// `accept`, `escalate` or `reject`.
    pub verdict: String,
    pub votes: Vec<Vote>,
}

impl EnsembleSummary {
    /// Compact ASCII JSON that parses back into this value (numbers spelled as Go does).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(64 + 96 * self.votes.len());
        out.push_str("{\"policy_id\":");
        write_json_string(&mut out, &self.policy_id, JsonEscape::GoHtmlAscii);
        out.push_str(",\"verdict\":");
        write_json_string(&mut out, &self.verdict, JsonEscape::GoHtmlAscii);
        out.push_str(",\"votes\":[");
        for (i, v) in self.votes.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"strategy\":");
            write_json_string(&mut out, &v.strategy, JsonEscape::GoHtmlAscii);
            out.push_str(",\"outcome\":");
            write_json_string(&mut out, v.outcome.as_str(), JsonEscape::GoHtmlAscii);
            out.push_str(",\"confidence\":");
            out.push_str(&go_json_float(v.confidence));
            out.push_str(",\"reason\":");
            write_json_string(&mut out, &v.reason, JsonEscape::GoHtmlAscii);
            out.push('}');
        }
        out.push_str("]}");
        out
    }
}

/// The risk fields of a scored answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskSummary {
    /// Calibrated probability that the answer is hallucinated.
    pub score: f64,
    /// `low`, `medium` or `high`.
    pub band: String,
    pub model_version: String,
    /// `champion`, `challenger` or `canary`.
    pub arm: String,
    /// The task of the task-aware model that scored (`qa`, …); absent when the arm's own
    /// (global) model did, so results without task models keep their bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_task: Option<String>,
    pub bundle_version: u64,
}

impl VerifyResult {
    /// 422 when the ensemble rejected the answer; else 200 only when accepted and not
    /// escalated, else 202.
    pub fn status(&self) -> u16 {
        if self.is_rejected() {
            REJECTED_STATUS
        } else if self.accepted && !self.escalated {
            200
        } else {
            202
        }
    }

    /// The tenant's ensemble policy rejected the answer.
    pub fn is_rejected(&self) -> bool {
        self.ensemble
            .as_ref()
            .is_some_and(|e| e.verdict == "reject")
    }

    /// Compact JSON in the reference server's key order and number spelling (`1`, not `1.0`).
    /// Pure ASCII, so it can also travel in an HTTP header.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(160);
        out.push_str(if self.accepted {
            "{\"accepted\":true"
        } else {
            "{\"accepted\":false"
        });
        if let Some(d) = self.recomputed_d_hat {
            out.push_str(",\"recomputed_D_hat\":");
            out.push_str(&go_json_float(d));
        }
        if let Some(b) = self.recomputed_budget {
            out.push_str(",\"recomputed_budget\":");
            out.push_str(&go_json_float(b));
        }
        if let Some(r) = &self.reason {
            out.push_str(",\"reason\":");
            write_json_string(&mut out, r, JsonEscape::GoHtmlAscii);
        }
        out.push_str(if self.escalated {
            ",\"escalated\":true"
        } else {
            ",\"escalated\":false"
        });
        if let Some(r) = &self.risk {
            out.push_str(",\"risk\":{\"score\":");
            out.push_str(&go_json_float(r.score));
            out.push_str(",\"band\":");
            write_json_string(&mut out, &r.band, JsonEscape::GoHtmlAscii);
            out.push_str(",\"model_version\":");
            write_json_string(&mut out, &r.model_version, JsonEscape::GoHtmlAscii);
            out.push_str(",\"arm\":");
            write_json_string(&mut out, &r.arm, JsonEscape::GoHtmlAscii);
            if let Some(t) = &r.model_task {
                out.push_str(",\"model_task\":");
                write_json_string(&mut out, t, JsonEscape::GoHtmlAscii);
            }
            out.push_str(&format!(",\"bundle_version\":{}}}", r.bundle_version));
        }
        if let Some(c) = &self.code {
            out.push_str(",\"code\":");
            write_json_string(&mut out, c, JsonEscape::GoHtmlAscii);
        }
        if let Some(e) = &self.ensemble {
            out.push_str(",\"ensemble\":");
            out.push_str(&e.to_json());
        }
        out.push('}');
        out
    }
}

/// A verification result plus whether it may be stored under the claimed `pcs_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub result: VerifyResult,
    /// False when `pcs_id` is empty or differs from the derived id (spec §15 #7).
    pub cacheable: bool,
}

/// Regime of a (D̂, coh★) pair (spec §4.2).
pub fn classify_regime(d_hat: f64, coh_star: f64, p: &VerifyParams) -> &'static str {
    if coh_star >= p.sticky_coherence_min && d_hat <= p.sticky_d_hat_max {
        "sticky"
    } else if d_hat >= p.non_sticky_d_hat_min {
        "non_sticky"
    } else {
        "mixed"
    }
}

/// Budget (spec §4.3), rounded with `round9_api`.
pub fn budget(d_hat: f64, coh_star: f64, r: f64, p: &VerifyParams) -> f64 {
    let b = p.base + p.alpha * (1.0 - r) + p.beta * (d_hat - p.d0).max(0.0) + p.gamma * coh_star;
    round9_api(b.clamp(0.0, 1.0))
}

/// Longest echo of an untrusted value inside a reason string.
const MAX_ECHO: usize = 96;

fn structure_error(p: &Pcs, derived: &str) -> Option<String> {
    if p.pcs_id.is_empty() {
        return Some("pcs_id is required".into());
    }
    if p.schema != SCHEMA {
        let got: String = p.schema.chars().take(MAX_ECHO).collect();
        return Some(format!("invalid schema: expected {SCHEMA}, got {got}"));
    }
    if p.version.is_empty() {
        return Some("version is required".into());
    }
    if p.shard_id.is_empty() {
        return Some("shard_id is required".into());
    }
    if p.epoch < 0 {
        return Some("epoch must be non-negative".into());
    }
    if p.scales.is_empty() {
        return Some("scales cannot be empty".into());
    }
    if p.merkle_root.is_empty() {
        return Some("merkle_root is required".into());
    }
    if p.pcs_id != derived {
        let got: String = p.pcs_id.chars().take(MAX_ECHO).collect();
        return Some(format!("pcs_id mismatch: expected {derived}, got {got}"));
    }
    None
}

/// Runs the checks of spec §4 in order.
pub fn verify(p: &Pcs, params: &VerifyParams) -> Outcome {
    // Derived once: it decides both the structure check and whether the result may be cached.
    let derived = expected_pcs_id(p);
    let cacheable = !p.pcs_id.is_empty() && p.pcs_id == derived;
    let escalate = |accepted, d_hat, budget, reason: String| Outcome {
        result: VerifyResult {
            accepted,
            recomputed_d_hat: d_hat,
            recomputed_budget: budget,
            reason: Some(reason),
            escalated: true,
            risk: None,
            code: None,
            ensemble: None,
        },
        cacheable,
    };

    if let Some(msg) = structure_error(p, &derived) {
        return escalate(false, None, None, format!("validation failed: {msg}"));
    }
    let d_rec = match recompute_d_hat(&p.scales, &p.n_j) {
        Ok(d) => d,
        Err(e) => {
            return escalate(
                false,
                None,
                None,
                format!("D_hat recomputation failed: {e}"),
            )
        }
    };
    let diff = (p.d_hat - d_rec).abs();
    if diff > params.tol_d || diff.is_nan() {
        return escalate(
            false,
            Some(d_rec),
            None,
            format!(
                "D_hat out of tolerance: claimed={:.4}, recomputed={:.4}, diff={:.4} > tol={:.4}",
                p.d_hat, d_rec, diff, params.tol_d
            ),
        );
    }
    let coh_max = 1.0 + params.tol_coh;
    if !(0.0..=coh_max).contains(&p.coh_star) {
        return escalate(
            false,
            Some(d_rec),
            None,
            format!(
                "coh_star out of bounds: {:.4} not in [0, {:.4}]",
                p.coh_star, coh_max
            ),
        );
    }
    if params.strict_r && !(0.0..=1.0).contains(&p.r) {
        return escalate(
            false,
            Some(d_rec),
            None,
            format!("r out of bounds: {:.4} not in [0, 1]", p.r),
        );
    }
    let b_rec = budget(p.d_hat, p.coh_star, p.r, params);
    let expected = classify_regime(p.d_hat, p.coh_star, params);
    if p.regime != expected {
        let claimed: String = p.regime.chars().take(MAX_ECHO).collect();
        return escalate(
            true,
            Some(d_rec),
            Some(b_rec),
            format!("regime mismatch: claimed={claimed}, expected={expected}"),
        );
    }
    if (p.budget - b_rec).abs() > params.budget_tol {
        return escalate(
            true,
            Some(d_rec),
            Some(b_rec),
            format!(
                "budget deviation: claimed={:.4}, recomputed={:.4}",
                p.budget, b_rec
            ),
        );
    }
    Outcome {
        result: VerifyResult {
            accepted: true,
            recomputed_d_hat: Some(d_rec),
            recomputed_budget: Some(b_rec),
            reason: None,
            escalated: false,
            risk: None,
            code: None,
            ensemble: None,
        },
        cacheable,
    }
}
