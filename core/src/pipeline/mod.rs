//! The gate's decision pipeline, pure and hostcall-free, so the same code runs in the Envoy
//! filter and natively in tests. The filter only adapts Envoy's callbacks to it through a
//! [`Host`] (the shape of Kuadrant's wasm-shim): once over the hostcalls, once for tests.
//!
//! Stages, one file each, in order:
//!
//! 0. [`headers`]: strip client `x-kakeya-*`, route, method (405), content type (415), tenant;
//! 1. [`parse`] (400);
//! 2. [`signature`] (401);
//! 3. [`binding`]: the evidence bound to the signature (400/401);
//!    then [`budget`]: the signed tenant's budget action (402 deny, 429 throttle);
//! 4. [`verify`]: spec §4, a result whatever the input;
//!    then [`anomaly`]: the VAE's score in the tenant's mode (403 `anomaly_blocked` when
//!    blocking; a vote in stage 6 under guardrail);
//! 5. [`features`]: features and the HRS score from the bundle (503 `no_bundle` when closed);
//! 6. [`votes`]: the strategies the tenant's ensemble policy enables (`micro_vote` asks the
//!    host, which may answer later: [`Step::Pending`]);
//! 7. [`aggregate`]: weighted N-of-M and the stacked `risk.score`;
//! 8. [`decision`]: the result and the forwarded headers.
//!
//! Without an ensemble policy for the tenant, stages 6–7 do not run and the decision is
//! verification plus the HRS thresholds, byte for byte as before the pipeline existed.

pub mod aggregate;
pub mod anomaly;
pub mod binding;
pub mod budget;
pub mod chat;
pub mod chat_head;
pub mod decision;
pub mod features;
pub mod headers;
pub mod parse;
pub mod reply;
pub mod signature;
pub mod verify;
pub mod votes;

#[cfg(test)]
mod tests;

pub use decision::*;
pub use features::{Scoring, NO_BUNDLE_REASON};
pub use headers::{
    is_json_content_type, is_kakeya_header, is_submit_path, on_headers, valid_tenant, Head,
    HeadVerdict, KAKEYA_HEADER_PREFIX, TENANT_HEADER,
};
pub use reply::{error_body, on_response, Answered, Decision, Forward, LocalReply};

use crate::budget::BudgetAction;
use crate::bundle::Scorer;
use crate::ensemble_policy::{EnsemblePolicy, StrategyConfig};
use crate::evidence::Evidence;
use crate::grounding::Sources;
use crate::microvote::{MicroVoteRequest, MicroVoteResult};
use crate::verify::Outcome;
use crate::Gate;
use votes::Cast;

/// What the pipeline needs from its host.
pub trait Host {
    /// The host clock, ns (for `x-kakeya-verify-ns` and `x-kakeya-score-ns`).
    fn now_ns(&mut self) -> u64;
    /// Asks the micro-vote for `req` under `deadline_ms`. `Some` is an answer now (a cache
    /// hit, a dispatch that failed, a test host); `None` means a callout is in flight and the
    /// host will call [`Paused::resume`] with its result.
    fn micro_vote(&mut self, req: &MicroVoteRequest, deadline_ms: u32) -> Option<MicroVoteResult>;
}

pub use crate::gate_config::DEFAULT_MICROVOTE_DEADLINE_MS;

/// Where the body stage ended.
#[derive(Debug)]
pub enum Step {
    Done(Decision),
    /// Waiting for the micro-vote; resume with [`Paused::resume`].
    Pending(Box<Paused>),
}

/// A request paused for its micro-vote: everything the remaining stages need.
#[derive(Debug)]
pub struct Paused {
    tenant: String,
    outcome: Outcome,
    scoring: Scoring,
    bundle_version: u64,
    verify_ns: u64,
    policy: EnsemblePolicy,
    casts: Vec<Cast>,
    /// Time of the `rag_grounding` vote, ns (when cast and traced).
    rag_ns: Option<u64>,
    escalate_at: f64,
    medium_risk: f64,
    budget: BudgetAction,
    anomaly: Option<anomaly::Scored>,
    /// What was asked (the host keys its cache by it).
    pub request: MicroVoteRequest,
    pub deadline_ms: u32,
}

impl Paused {
    /// Finishes the request with the micro-vote's result (or its absence: `Timeout`,
    /// `Unavailable`).
    pub fn resume(mut self, result: &MicroVoteResult) -> Decision {
        let cfg = self
            .policy
            .strategies
            .get(votes::MICRO_VOTE)
            .cloned()
            .unwrap_or_else(default_strategy);
        self.casts.push(votes::micro_vote(Some(result), &cfg));
        let mut d = finish(
            &self.tenant,
            self.outcome,
            self.scoring,
            self.bundle_version,
            self.verify_ns,
            self.budget,
            Some((
                &self.policy,
                &self.casts,
                self.escalate_at,
                self.medium_risk,
                self.rag_ns,
            )),
        );
        anomaly::annotate(&mut d, self.anomaly.as_ref());
        d
    }
}

fn default_strategy() -> StrategyConfig {
    StrategyConfig {
        weight: 1.0,
        accept_below: None,
        reject_above: None,
        deadline_ms: None,
    }
}

type EnsembleParts<'a> = (&'a EnsemblePolicy, &'a [Cast], f64, f64, Option<u64>);

fn finish(
    tenant: &str,
    outcome: Outcome,
    scoring: Scoring,
    bundle_version: u64,
    verify_ns: u64,
    budget: BudgetAction,
    ensemble: Option<EnsembleParts<'_>>,
) -> Decision {
    decision::decide(decision::Parts {
        tenant,
        outcome,
        scoring,
        bundle_version,
        verify_ns,
        budget,
        rag_ns: ensemble.and_then(|e| e.4),
        ensemble: ensemble.map(
            |(policy, casts, escalate_at, medium_risk, _)| decision::Ensemble {
                policy,
                casts,
                escalate_at,
                medium_risk,
            },
        ),
    })
}

/// The micro-vote request for `ev` (question and context sent only when non-empty).
pub fn microvote_request(ev: &Evidence) -> MicroVoteRequest {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    MicroVoteRequest {
        question: some(&ev.question),
        context: some(&ev.context),
        response: ev.response.clone(),
        // The signed task kind picks the micro-vote's per-task head (none: its global head).
        task: ev.task,
    }
}

/// Body stage for a request whose header stage said [`HeadVerdict::AwaitBody`]: stages 1–8.
/// The micro-vote's deadline is the policy's `deadline_ms`, else the gate's
/// `microvote_deadline_ms`.
pub fn on_body(
    tenant: &str,
    body: &[u8],
    gate: &Gate,
    bundle: Option<&Scorer>,
    host: &mut dyn Host,
) -> Step {
    match body_stages(tenant, body, gate, bundle, host) {
        Ok(step) => step,
        Err(reply) => Step::Done(Decision::LocalReply(reply)),
    }
}

fn body_stages(
    tenant: &str,
    body: &[u8],
    gate: &Gate,
    bundle: Option<&Scorer>,
    host: &mut dyn Host,
) -> Result<Step, LocalReply> {
    let start = host.now_ns();
    let verifier = signature::verifier(gate, tenant)?;
    let pcs = parse::parse(body)?;
    signature::check(verifier, &pcs)?;
    let evidence = binding::bind(&pcs)?;
    let budget = budget::enforce(tenant, bundle)?;
    score_stages(tenant, &pcs, evidence, gate, bundle, budget, host, start)
}

/// Stages 4–8 for a parsed PCS whose evidence (if any) is bound, under the tenant's `budget`
/// action; `start` is when the request's stages began (host clock). Shared by the submit route
/// and the chat route ([`chat`]).
#[allow(clippy::too_many_arguments)]
fn score_stages(
    tenant: &str,
    pcs: &crate::pcs::Pcs,
    evidence: Option<&Evidence>,
    gate: &Gate,
    bundle: Option<&Scorer>,
    budget: BudgetAction,
    host: &mut dyn Host,
    start: u64,
) -> Result<Step, LocalReply> {
    let mut outcome = verify::run(pcs, gate);
    let verified = host.now_ns();
    let verify_ns = verified.saturating_sub(start);
    let scored_anomaly = anomaly::assess(tenant, pcs, &outcome, evidence, bundle)?;
    let scoring = {
        let mut elapsed = || host.now_ns().saturating_sub(verified);
        features::score(tenant, pcs, &outcome, evidence, gate, bundle, &mut elapsed)?
    };
    let bundle_version = bundle.map_or(0, |b| b.version);
    let policy = bundle.and_then(|b| b.ensemble.for_tenant(tenant));
    let (Some(policy), Some(b)) = (policy, bundle) else {
        if let Some(s) = &scored_anomaly {
            anomaly::escalate_flagged(&mut outcome.result, s);
        }
        let mut d = finish(
            tenant,
            outcome,
            scoring,
            bundle_version,
            verify_ns,
            budget,
            None,
        );
        anomaly::annotate(&mut d, scored_anomaly.as_ref());
        return Ok(Step::Done(d));
    };
    let risk = match &scoring {
        Scoring::Scored { risk, .. } => Some(&**risk),
        _ => None,
    };
    let escalate_at = risk.map_or(b.champion.thresholds().escalate, |r| {
        b.model(r.arm).thresholds().escalate
    });
    let (mut casts, rag_ns) = {
        // Timed only with the cost tracer on (its headers travel together).
        let mut clock = || host.now_ns();
        let clock: Option<&mut dyn FnMut() -> u64> = if gate.cost_tracer {
            Some(&mut clock)
        } else {
            None
        };
        cast_votes(policy, &outcome, risk, escalate_at, evidence, clock)
    };
    // Guardrail: the anomaly votes, with weight 1 unless the policy configures the strategy.
    let guarded = scored_anomaly
        .as_ref()
        .filter(|s| s.mode == crate::anomaly_policy::Mode::Guardrail);
    let guarded_policy;
    let policy = match guarded {
        Some(s) => {
            casts.push(anomaly::vote(s));
            if policy.strategies.contains_key(anomaly::STRATEGY) {
                policy
            } else {
                let mut p = policy.clone();
                p.strategies
                    .insert(anomaly::STRATEGY.to_string(), default_strategy());
                guarded_policy = p;
                &guarded_policy
            }
        }
        None => policy,
    };
    let micro = policy.strategies.get(votes::MICRO_VOTE);
    let degraded = budget == BudgetAction::Degrade;
    let (Some(cfg), Some(ev), false) = (micro, evidence, degraded) else {
        let mut casts = casts;
        if micro.is_some() {
            // Degraded: abstains without asking the host, so an over-budget tenant costs no
            // model call; the decision comes from the other votes.
            casts.push(if degraded {
                votes::budget_degraded()
            } else {
                votes::micro_vote(None, &default_strategy())
            });
        }
        let mut d = finish(
            tenant,
            outcome,
            scoring,
            bundle_version,
            verify_ns,
            budget,
            Some((policy, &casts, escalate_at, b.policy.medium_risk, rag_ns)),
        );
        anomaly::annotate(&mut d, scored_anomaly.as_ref());
        return Ok(Step::Done(d));
    };
    let request = microvote_request(ev);
    let deadline_ms = cfg.deadline_ms.unwrap_or(gate.microvote_deadline_ms);
    let paused = Paused {
        tenant: tenant.to_string(),
        outcome,
        scoring,
        bundle_version,
        verify_ns,
        policy: policy.clone(),
        casts,
        rag_ns,
        escalate_at,
        medium_risk: b.policy.medium_risk,
        budget,
        anomaly: scored_anomaly,
        request,
        deadline_ms,
    };
    Ok(match host.micro_vote(&paused.request, deadline_ms) {
        Some(result) => Step::Done(paused.resume(&result)),
        None => Step::Pending(Box::new(paused)),
    })
}

/// The votes of every enabled strategy but `micro_vote` (which may call out), and the time of
/// the `rag_grounding` vote read from `clock` (ns; `None` without a clock or that vote).
fn cast_votes(
    policy: &EnsemblePolicy,
    outcome: &Outcome,
    risk: Option<&crate::bundle::Risk>,
    escalate_at: f64,
    evidence: Option<&Evidence>,
    mut clock: Option<&mut dyn FnMut() -> u64>,
) -> (Vec<Cast>, Option<u64>) {
    let mut casts = Vec::with_capacity(policy.strategies.len());
    let mut rag_ns = None;
    for (name, cfg) in &policy.strategies {
        match name.as_str() {
            votes::PCS_RECOMPUTE => casts.push(votes::pcs_recompute(&outcome.result)),
            votes::HRS => casts.push(votes::hrs(risk, escalate_at, cfg)),
            votes::RAG_GROUNDING => {
                let started = clock.as_mut().map(|c| c());
                let sources = policy
                    .sources
                    .as_ref()
                    .map(Sources::new)
                    .unwrap_or_default();
                casts.push(votes::rag_grounding(evidence, &sources));
                if let (Some(t0), Some(c)) = (started, clock.as_mut()) {
                    rag_ns = Some(c().saturating_sub(t0));
                }
            }
            // micro_vote is cast by the caller; unknown names are refused by validation.
            _ => {}
        }
    }
    (casts, rag_ns)
}

/// A host for callers without callouts (tests, tools): a clock closure; the micro-vote is
/// `Unavailable("no_callout")`, an abstention.
pub struct ClockHost<'a>(pub &'a mut dyn FnMut() -> u64);

impl Host for ClockHost<'_> {
    fn now_ns(&mut self) -> u64 {
        (self.0)()
    }
    fn micro_vote(&mut self, _: &MicroVoteRequest, _: u32) -> Option<MicroVoteResult> {
        Some(MicroVoteResult::Unavailable("no_callout"))
    }
}

/// Runs the body stages to a decision with a host that always answers at once (a pending
/// step is resumed as unavailable, so this is total).
pub fn on_body_now(
    tenant: &str,
    body: &[u8],
    gate: &Gate,
    bundle: Option<&Scorer>,
    host: &mut dyn Host,
) -> Decision {
    match on_body(tenant, body, gate, bundle, host) {
        Step::Done(d) => d,
        Step::Pending(p) => p.resume(&MicroVoteResult::Unavailable("no_callout")),
    }
}

/// One whole request, both stages. `None` for requests that are not on the submit route.
pub fn decide(
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    gate: &Gate,
    bundle: Option<&Scorer>,
    host: &mut dyn Host,
) -> (Head, Option<Decision>) {
    let head = on_headers(headers, gate);
    let decision = match &head.verdict {
        HeadVerdict::PassThrough => None,
        HeadVerdict::Reply(r) => Some(Decision::LocalReply(r.clone())),
        HeadVerdict::AwaitBody { tenant } => Some(on_body_now(tenant, body, gate, bundle, host)),
    };
    (head, decision)
}
