//! The chat route ([`crate::chat`]): the evidence of a conversation and its answer is scored by
//! the stages of a submitted PCS (4–8), with the PCS built here from the answer text (recipe v1
//! of [`crate::pcs_builder`], bound to the evidence: `pcs-id-v2`), so a gateway answer gets the
//! risk that the same answer submitted as a PCS by `kakeya pcs build` gets.
//!
//! The micro-vote does not call out on this route yet: it abstains (`no_callout`). The tenant's
//! budget is enforced before the backend call ([`super::chat_head::enforce_budget`]); the action
//! in force (`alert`, `degrade`) is applied here as on the PCS path.

use super::reply::{Decision, Forward, LocalReply};
use super::{score_stages, Host, Step, H_ARM, H_BUNDLE_VERSION, H_MODEL_VERSION, H_RESULT};
use super::{H_RISK, H_RISK_BAND, H_VOTES};
use crate::budget::BudgetAction;
use crate::bundle::Scorer;
use crate::chat::{ChatRequest, ContextSource};
use crate::evidence::{evidence_sha256, Evidence};
use crate::microvote::MicroVoteResult;
use crate::pcs_builder::{build, BuildOptions};
use crate::task::TaskKind;
use crate::verify::VerifyResult;
use crate::Gate;

/// The response header with the verdict.
pub const H_DECISION: &str = "x-kakeya-decision";
/// The decision's id in the decision log (the built PCS's `pcs_id`), for labels and reviews.
pub const H_DECISION_ID: &str = "x-kakeya-decision-id";
/// Where the context came from ([`ContextSource::as_str`]).
pub const H_CONTEXT: &str = "x-kakeya-context";

/// The gateway's verdict on one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// High risk, or the answer's PCS did not verify: flagged for review.
    Escalate,
    /// The tenant's ensemble policy rejected the answer.
    Reject,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Escalate => "escalate",
            Verdict::Reject => "reject",
        }
    }
}

/// A scored answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub verdict: Verdict,
    /// The `x-kakeya-*` headers of the decision (as forwarded to ingest on the submit route).
    pub headers: Vec<(&'static str, String)>,
    /// The built PCS (v0.2, unsigned) with its evidence: the body recorded at ingest.
    pub pcs_body: Vec<u8>,
    /// The decision-log id ([`H_DECISION_ID`]).
    pub pcs_id: String,
    pub forward: Forward,
}

impl Scored {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The headers the client gets on the response: the verdict, the risk fields and the votes.
    pub fn client_headers(&self, source: ContextSource) -> Vec<(&'static str, String)> {
        let mut out = vec![
            (H_DECISION, self.verdict.as_str().to_string()),
            (H_CONTEXT, source.as_str().to_string()),
            (H_DECISION_ID, self.pcs_id.clone()),
        ];
        for name in [
            H_RISK,
            H_RISK_BAND,
            H_MODEL_VERSION,
            H_ARM,
            H_BUNDLE_VERSION,
            H_VOTES,
        ] {
            if let Some(v) = self.header(name) {
                out.push((name, v.to_string()));
            }
        }
        out
    }

    /// The `kakeya` object of a blocked body or of the final stream chunk.
    pub fn kakeya_json(&self, source: ContextSource) -> serde_json::Value {
        let result: Option<VerifyResult> = self
            .header(H_RESULT)
            .and_then(|r| serde_json::from_str(r).ok());
        // The exact score (the header has 6 decimals).
        let risk = result
            .as_ref()
            .and_then(|r| r.risk.as_ref())
            .map(|r| r.score);
        serde_json::json!({
            "decision": self.verdict.as_str(),
            "id": self.pcs_id,
            "risk": risk,
            "band": self.header(H_RISK_BAND),
            "model_version": self.header(H_MODEL_VERSION),
            "bundle_version": self.header(H_BUNDLE_VERSION).and_then(|v| v.parse::<u64>().ok()),
            "arm": self.header(H_ARM),
            "context": source.as_str(),
            "reason": result.as_ref().and_then(|r| r.reason.clone()),
            "votes": result.and_then(|r| r.ensemble).map(|e| e.votes),
        })
    }
}

/// The evidence of `req` answered with `answer`.
pub fn evidence(req: &ChatRequest, answer: &str, task: Option<TaskKind>) -> Evidence {
    Evidence {
        question: req.question.clone(),
        context: req.context.clone(),
        citations: Vec::new(),
        response: answer.to_string(),
        task,
    }
}

/// Scores `ev` for `tenant` under its `budget` action (a local reply only when the gate must
/// fail closed: no bundle under failure mode `closed`).
pub fn score(
    tenant: &str,
    ev: &Evidence,
    gate: &Gate,
    bundle: Option<&Scorer>,
    budget: BudgetAction,
    host: &mut dyn Host,
) -> Result<Scored, LocalReply> {
    let start = host.now_ns();
    let built = build(&ev.response, &BuildOptions::default()).bind_evidence(&evidence_sha256(ev));
    let mut json = built.to_json("");
    if let Some(obj) = json.as_object_mut() {
        obj.insert(
            "evidence".into(),
            serde_json::to_value(ev).unwrap_or_default(),
        );
    }
    let internal = |m: String| LocalReply::new(500, "internal", &m);
    let pcs_body = serde_json::to_vec(&json).map_err(|e| internal(e.to_string()))?;
    let pcs = crate::parse(&pcs_body).map_err(|e| internal(format!("built PCS: {e}")))?;
    let step = score_stages(tenant, &pcs, Some(ev), gate, bundle, budget, host, start)?;
    let decision = match step {
        Step::Done(d) => d,
        Step::Pending(p) => p.resume(&MicroVoteResult::Unavailable("no_callout")),
    };
    let forward = match decision {
        Decision::Forward(f) => f,
        Decision::LocalReply(r) => return Err(r),
    };
    let rejected = forward
        .headers
        .iter()
        .find(|(k, _)| *k == H_RESULT)
        .and_then(|(_, r)| serde_json::from_str::<VerifyResult>(r).ok())
        .is_some_and(|r| r.is_rejected());
    let verdict = if rejected {
        Verdict::Reject
    } else if forward.accepted {
        Verdict::Accept
    } else {
        Verdict::Escalate
    };
    Ok(Scored {
        verdict,
        headers: forward.headers.clone(),
        pcs_body,
        pcs_id: pcs.pcs_id.clone(),
        forward,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{bundle, gate, policy, readme_evidence, TestHost, HOPPER, LOVELACE};
    use super::*;
    use crate::ensemble_policy::EnsembleSection;
    use crate::features::{features, PcsSignals};

    fn scored(ev: &Evidence, b: &crate::bundle::Bundle) -> Scored {
        let scorer = Scorer::new(b.clone());
        score(
            "default",
            ev,
            &gate(),
            Some(&scorer),
            BudgetAction::None,
            &mut TestHost::new(None),
        )
        .unwrap()
    }

    /// A model whose weights make every feature count.
    fn weighted() -> crate::bundle::Bundle {
        let mut b = bundle(0.2, EnsembleSection::default());
        let json = serde_json::to_value(&b.champion).unwrap();
        let mut json = json;
        let n = json["weights"].as_array().unwrap().len();
        json["weights"] = (0..n)
            .map(|i| if i % 2 == 0 { 0.3 } else { -0.2 })
            .collect::<Vec<f64>>()
            .into();
        b.champion = serde_json::from_value(json).unwrap();
        b
    }

    #[test]
    fn the_served_risk_is_the_native_one_bit_for_bit() {
        let b = weighted();
        for response in [LOVELACE, HOPPER] {
            let ev = readme_evidence(response);
            let s = scored(&ev, &b);
            let built = build(response, &BuildOptions::default());
            let x = features(
                &PcsSignals::from_built(&built),
                Some(&ev),
                b.champion.tenant(),
            );
            let native = b.champion.platt().apply(b.champion.decision(&x));
            let header = |n: &str| s.headers.iter().find(|(k, _)| *k == n).unwrap().1.clone();
            assert_eq!(
                crate::feature_wire::decode(&header(crate::feature_wire::HEADER)).unwrap(),
                x
            );
            assert_eq!(header(H_RISK), format!("{native:.6}"));
            assert_eq!(
                s.kakeya_json(ContextSource::Tool)["risk"],
                serde_json::json!(native)
            );
            // The recorded body is a PCS v0.2 bound to the evidence.
            let pcs = crate::parse(&s.pcs_body).unwrap();
            assert_eq!(pcs.evidence.as_ref(), Some(&ev));
            assert_eq!(crate::evidence::bound_evidence(&pcs), Ok(Some(&ev)));
        }
    }

    #[test]
    fn an_ensemble_reject_is_a_reject_and_grounded_answers_pass() {
        let mut b = bundle(-5.0, EnsembleSection::default());
        b.ensemble = EnsembleSection {
            default: Some(policy(1, &["rag_grounding"], false)),
            tenants: Default::default(),
        };
        let hopper = scored(&readme_evidence(HOPPER), &b);
        assert_eq!(hopper.verdict, Verdict::Reject, "{:?}", hopper.headers);
        let lovelace = scored(&readme_evidence(LOVELACE), &b);
        assert_eq!(lovelace.verdict, Verdict::Accept, "{:?}", lovelace.headers);
        let h = lovelace.client_headers(ContextSource::Tool);
        assert!(h.contains(&(H_DECISION, "accept".to_string())));
        assert!(h.iter().any(|(k, _)| *k == H_VOTES));
    }

    fn budgeted(action: BudgetAction) -> Scorer {
        let mut b = bundle(0.2, EnsembleSection::default());
        b.budgets.tenants.insert(
            "default".into(),
            crate::budget::TenantBudget {
                month: "2026-12".into(),
                spent: 12.0,
                soft_cap: 10.0,
                hard_cap: 11.0,
                action,
                retry_after_s: 60,
            },
        );
        Scorer::new(b)
    }

    #[test]
    fn over_budget_tenants_get_openai_errors_and_degraded_ones_are_scored() {
        use super::super::chat_head::enforce_budget;
        for (action, status, code, kind) in [
            (
                BudgetAction::Deny,
                402,
                "budget_exceeded",
                "insufficient_quota",
            ),
            (
                BudgetAction::Throttle,
                429,
                "budget_throttled",
                "rate_limit_exceeded",
            ),
        ] {
            let r = enforce_budget("default", Some(&budgeted(action))).unwrap_err();
            assert_eq!((r.status, r.code), (status, code));
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(v["code"], code);
            assert_eq!(v["error"]["code"], code);
            assert_eq!(v["error"]["type"], kind);
            assert!(v["error"]["message"].as_str().unwrap().contains("budget"));
            let retry = r
                .headers
                .iter()
                .any(|(k, v)| k == "retry-after" && v == "60");
            assert_eq!(retry, action == BudgetAction::Throttle);
        }
        // Another tenant, and no bundle: nothing in force.
        let deny = budgeted(BudgetAction::Deny);
        assert_eq!(enforce_budget("t2", Some(&deny)), Ok(BudgetAction::None));
        assert_eq!(enforce_budget("default", None), Ok(BudgetAction::None));
        // Degraded: served, the micro-vote abstains, the decision says so.
        let scorer = budgeted(BudgetAction::Degrade);
        let action = enforce_budget("default", Some(&scorer)).unwrap();
        let s = score(
            "default",
            &readme_evidence(LOVELACE),
            &gate(),
            Some(&scorer),
            action,
            &mut TestHost::new(None),
        )
        .unwrap();
        let budget = s
            .headers
            .iter()
            .find(|(k, _)| *k == super::super::budget::H_BUDGET);
        assert_eq!(budget.map(|(_, v)| v.as_str()), Some("degrade"));
    }

    #[test]
    fn high_risk_escalates() {
        let s = scored(
            &readme_evidence(LOVELACE),
            &bundle(5.0, EnsembleSection::default()),
        );
        assert_eq!(s.verdict, Verdict::Escalate, "{:?}", s.headers);
        assert_eq!(s.kakeya_json(ContextSource::System)["decision"], "escalate");
    }
}
