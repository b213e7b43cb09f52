//! The pipeline through a test [`Host`]: the votes, the aggregation and the statuses.

use super::*;
use crate::bundle::{Bundle, Scorer, BUNDLE_FORMAT};
use crate::ensemble_policy::{EnsembleSection, Stack, StrategyConfig};
use crate::evidence::{evidence_sha256, Citation, Evidence};
use crate::features::{TenantStats, FEATURE_NAMES, SCHEMA_VERSION};
use crate::model::{HrsModel, Platt, Thresholds, TrainingMeta, KIND_LOGISTIC};
use crate::verify::VerifyResult;
use crate::vote::VoteOutcome;
use std::collections::BTreeMap;

const G1: &[u8] = include_bytes!("../../tests/data/pcs_tiny_case_1.json");

/// A host with a counting clock and a scripted micro-vote (`None`: pends).
pub(super) struct TestHost {
    t: u64,
    pub micro: Option<MicroVoteResult>,
    pub asked: Vec<(MicroVoteRequest, u32)>,
}

impl TestHost {
    pub fn new(micro: Option<MicroVoteResult>) -> Self {
        TestHost {
            t: 0,
            micro,
            asked: Vec::new(),
        }
    }
}

impl Host for TestHost {
    fn now_ns(&mut self) -> u64 {
        self.t += 1000;
        self.t
    }
    fn micro_vote(&mut self, req: &MicroVoteRequest, deadline_ms: u32) -> Option<MicroVoteResult> {
        self.asked.push((req.clone(), deadline_ms));
        self.micro.clone()
    }
}

pub(super) fn gate() -> Gate {
    let key = crate::signature::ed25519_public_b64(&[1; 32]);
    let cfg = serde_json::json!({
        "keyring": {"global": {"alg": "hmac", "keys": ["testsecret"]}},
        "bundle": {"cluster": "admin", "public_keys": [key], "failure_mode": "open"},
    });
    Gate::from_json(cfg.to_string().as_bytes()).unwrap()
}

/// A bundle whose constant model scores every request `σ(-intercept)`-ish (Platt a = -1).
pub(super) fn bundle(intercept: f64, ensemble: EnsembleSection) -> Bundle {
    let n = FEATURE_NAMES.len();
    Bundle {
        format: BUNDLE_FORMAT.into(),
        version: 9,
        created_at_ms: 0,
        champion: HrsModel {
            kind: KIND_LOGISTIC.into(),
            schema_version: SCHEMA_VERSION.into(),
            feature_names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
            mean: vec![0.0; n],
            std: vec![1.0; n],
            weights: vec![0.0; n],
            intercept,
            platt: Platt { a: -1.0, b: 0.0 },
            thresholds: Thresholds { escalate: 0.5 },
            tenant: TenantStats::fresh(),
            training: TrainingMeta {
                seed: 0,
                rows: 0,
                dataset_sha256: String::new(),
                recipe_version: String::new(),
                l2: 1.0,
                cv_metrics: serde_json::json!({}),
            },
        }
        .into(),
        challenger: None,
        challenger_weight: 0.0,
        canary: None,
        tenant_stats: Default::default(),
        policy: Default::default(),
        ensemble,
        budgets: Default::default(),
        task_models: Default::default(),
        upstreams: Default::default(),
        anomaly: Default::default(),
    }
}

/// Golden case 1 as PCS v0.2 carrying `ev`, signed with `testsecret`.
pub(super) fn body_with(ev: &Evidence) -> Vec<u8> {
    body_claiming(ev, 0.0)
}

/// As [`body_with`], with `budget_shift` added to the claimed budget (signed).
pub(super) fn body_claiming(ev: &Evidence, budget_shift: f64) -> Vec<u8> {
    let mut p = crate::parse(G1).unwrap();
    p.budget += budget_shift;
    p.evidence_sha256 = evidence_sha256(ev);
    p.pcs_id = crate::ids::expected_pcs_id(&p);
    p.sig = crate::signature::sign_hmac(
        crate::canonical::signing_payload(&p).as_bytes(),
        b"testsecret",
    );
    let mut v: serde_json::Value = serde_json::from_slice(G1).unwrap();
    v["sig"] = serde_json::json!(p.sig);
    v["pcs_id"] = serde_json::json!(p.pcs_id);
    v["evidence_sha256"] = serde_json::json!(p.evidence_sha256);
    v["evidence"] = serde_json::to_value(ev).unwrap();
    v["budget"] = serde_json::json!(p.budget);
    v.to_string().into_bytes()
}

pub(super) fn readme_evidence(response: &str) -> Evidence {
    Evidence {
        question: "Who wrote the first computer program?".into(),
        context: "Ada Lovelace wrote the first computer program in 1843, for Charles \
                  Babbage's Analytical Engine."
            .into(),
        citations: Vec::new(),
        response: response.into(),
        task: None,
    }
}

pub(super) const HOPPER: &str = "Grace Hopper wrote it in 1952 on the UNIVAC at Harvard.";
pub(super) const LOVELACE: &str =
    "Ada Lovelace wrote the first computer program, for the Analytical Engine.";

pub(super) fn strategy(weight: f64) -> StrategyConfig {
    StrategyConfig {
        weight,
        accept_below: None,
        reject_above: None,
        deadline_ms: None,
    }
}

pub(super) fn policy(n: u32, names: &[&str], fail_open: bool) -> EnsemblePolicy {
    EnsemblePolicy {
        policy_id: format!("test-{n}of{}", names.len()),
        n,
        strategies: names
            .iter()
            .map(|s| (s.to_string(), strategy(1.0)))
            .collect(),
        min_confidence: 0.5,
        reject_confidence: 0.6,
        fail_open,
        stack: Stack::default(),
        sources: None,
    }
}

fn section(p: EnsemblePolicy) -> EnsembleSection {
    EnsembleSection {
        default: Some(p),
        tenants: BTreeMap::new(),
    }
}

fn run(b: &Bundle, body: &[u8], host: &mut TestHost) -> Step {
    let scorer = Scorer::new(b.clone());
    on_body("default", body, &gate(), Some(&scorer), host)
}

fn done(step: Step) -> Decision {
    match step {
        Step::Done(d) => d,
        Step::Pending(p) => panic!("unexpected pending: {p:?}"),
    }
}

fn forward(d: Decision) -> Forward {
    match d {
        Decision::Forward(f) => f,
        other => panic!("expected forward, got {other:?}"),
    }
}

fn header<'a>(f: &'a Forward, name: &str) -> Option<&'a str> {
    f.headers
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

fn result(f: &Forward) -> VerifyResult {
    serde_json::from_str(header(f, H_RESULT).unwrap()).unwrap()
}

fn vote<'a>(r: &'a VerifyResult, strategy: &str) -> &'a crate::vote::Vote {
    r.ensemble
        .as_ref()
        .unwrap()
        .votes
        .iter()
        .find(|v| v.strategy == strategy)
        .unwrap()
}

#[test]
fn without_a_policy_the_readme_counter_example_is_accepted() {
    // A low-risk model (intercept -5: risk 0.0067) and no ensemble: 200, no votes, as before.
    let f = forward(done(run(
        &bundle(-5.0, EnsembleSection::default()),
        &body_with(&readme_evidence(HOPPER)),
        &mut TestHost::new(None),
    )));
    let r = result(&f);
    assert_eq!(r.status(), 200);
    assert!(r.ensemble.is_none() && header(&f, H_VOTES).is_none());
}

#[test]
fn with_rag_grounding_the_readme_counter_example_is_rejected() {
    let p = policy(2, &["pcs_recompute", "hrs", "rag_grounding"], true);
    let b = bundle(-5.0, section(p));
    let f = forward(done(run(
        &b,
        &body_with(&readme_evidence(HOPPER)),
        &mut TestHost::new(None),
    )));
    let r = result(&f);
    // Two confident accepts (verification, a low HRS) against one confident reject:
    // r = 0.98/3 < 0.6, agreed 2 ≥ n, a = (1 + 0.99)/3 = 0.66 ≥ 0.5 → accept. The lexical vote
    // alone does not outvote two others; a policy that trusts it more rejects:
    assert_eq!(vote(&r, "rag_grounding").outcome, VoteOutcome::Reject);
    assert_eq!(vote(&r, "rag_grounding").reason, "unsupported_date");
    assert_eq!(r.status(), 200, "{r:?}");

    let mut strict = policy(3, &["pcs_recompute", "hrs", "rag_grounding"], true);
    strict.reject_confidence = 0.3;
    let f = forward(done(run(
        &bundle(-5.0, section(strict)),
        &body_with(&readme_evidence(HOPPER)),
        &mut TestHost::new(None),
    )));
    let r = result(&f);
    assert_eq!(r.status(), 422, "{r:?}");
    assert_eq!(r.code.as_deref(), Some("hallucination_rejected"));
    assert!(!r.accepted && !r.escalated);
    assert!(r.reason.as_deref().unwrap().contains("rejected"), "{r:?}");
    let votes = header(&f, H_VOTES).unwrap();
    assert!(votes.contains("\"verdict\":\"reject\""), "{votes}");
    assert!(votes.len() <= MAX_VOTES_HEADER);
    // The supported answer passes the same policy.
    let f = forward(done(run(
        &bundle(
            -5.0,
            section({
                let mut s = policy(3, &["pcs_recompute", "hrs", "rag_grounding"], true);
                s.reject_confidence = 0.3;
                s
            }),
        ),
        &body_with(&readme_evidence(LOVELACE)),
        &mut TestHost::new(None),
    )));
    assert_eq!(result(&f).status(), 200, "{:?}", result(&f));
}

#[test]
fn the_rag_vote_is_timed_with_the_cost_tracer_on_only() {
    // The test clock advances 1000 ns per read: the RAG vote is exactly the two reads around
    // it, forwarded as x-kakeya-rag-ns for the advisor's rag_off saving.
    let b = bundle(-5.0, section(policy(1, &["hrs", "rag_grounding"], true)));
    let body = body_with(&readme_evidence(LOVELACE));
    let f = forward(done(run(&b, &body, &mut TestHost::new(None))));
    assert_eq!(header(&f, H_RAG_NS), Some("1000"));
    // No RAG vote, no header.
    let no_rag = bundle(-5.0, section(policy(1, &["hrs"], true)));
    let f = forward(done(run(&no_rag, &body, &mut TestHost::new(None))));
    assert_eq!(header(&f, H_RAG_NS), None);
    // Tracer off: not timed (and the decision is the same).
    let mut g = gate();
    g.cost_tracer = false;
    let scorer = Scorer::new(b.clone());
    let off = forward(done(on_body(
        "default",
        &body,
        &g,
        Some(&scorer),
        &mut TestHost::new(None),
    )));
    assert_eq!(header(&off, H_RAG_NS), None);
    let on = forward(done(run(&b, &body, &mut TestHost::new(None))));
    assert_eq!(header(&off, H_RESULT), header(&on, H_RESULT));
}

#[test]
fn rag_grounding_alone_does_not_accept_the_counter_example() {
    // n = 1 over rag_grounding only: its reject decides.
    let p = policy(1, &["rag_grounding"], true);
    let f = forward(done(run(
        &bundle(-5.0, section(p)),
        &body_with(&readme_evidence(HOPPER)),
        &mut TestHost::new(None),
    )));
    assert_eq!(result(&f).status(), 422);
}

#[test]
fn zero_citations_and_no_context_abstain() {
    let ev = Evidence {
        question: "q".into(),
        context: String::new(),
        citations: Vec::new(),
        response: "Grace Hopper wrote it in 1952.".into(),
        task: None,
    };
    let p = policy(1, &["rag_grounding"], true);
    let f = forward(done(run(
        &bundle(-5.0, section(p)),
        &body_with(&ev),
        &mut TestHost::new(None),
    )));
    let r = result(&f);
    let v = vote(&r, "rag_grounding");
    assert_eq!(
        (v.outcome, v.reason.as_ref()),
        (VoteOutcome::Abstain, "no_context")
    );
    // The only vote abstained: undecided, escalated under fail_open, never accepted.
    assert_eq!(r.status(), 202);
    assert!(r.escalated);
}

#[test]
fn a_micro_vote_timeout_abstains_and_escalates_under_fail_open() {
    let p = policy(2, &["hrs", "micro_vote"], true);
    let mut host = TestHost::new(Some(MicroVoteResult::Timeout));
    let f = forward(done(run(
        &bundle(-5.0, section(p)),
        &body_with(&readme_evidence(LOVELACE)),
        &mut host,
    )));
    let r = result(&f);
    let v = vote(&r, "micro_vote");
    assert_eq!(
        (v.outcome, v.reason.as_ref()),
        (VoteOutcome::Abstain, "timeout")
    );
    assert_eq!(r.status(), 202, "{r:?}");
    // The host was asked with the gate's default deadline and the evidence.
    assert_eq!(host.asked.len(), 1);
    assert_eq!(host.asked[0].1, DEFAULT_MICROVOTE_DEADLINE_MS);
    assert_eq!(host.asked[0].0.response, LOVELACE);
    // Unavailable likewise; and fail_open off rejects the undecided answer.
    let p = policy(2, &["hrs", "micro_vote"], false);
    let mut host = TestHost::new(Some(MicroVoteResult::Unavailable("no_cluster")));
    let r = result(&forward(done(run(
        &bundle(-5.0, section(p)),
        &body_with(&readme_evidence(LOVELACE)),
        &mut host,
    ))));
    assert_eq!(vote(&r, "micro_vote").reason, "no_cluster");
    assert_eq!(r.status(), 422);
}

#[test]
fn two_of_three_confident_accepts_accept() {
    let p = policy(2, &["pcs_recompute", "hrs", "micro_vote"], true);
    let answer = MicroVoteResult::Answer {
        p_hallucinated: 0.9,
        model: "mv-test".into(),
        server_us: 100,
        cache_hit: false,
    };
    let r = result(&forward(done(run(
        &bundle(-5.0, section(p)),
        &body_with(&readme_evidence(LOVELACE)),
        &mut TestHost::new(Some(answer)),
    ))));
    assert_eq!(vote(&r, "pcs_recompute").outcome, VoteOutcome::Accept);
    assert_eq!(vote(&r, "hrs").outcome, VoteOutcome::Accept);
    assert_eq!(vote(&r, "micro_vote").outcome, VoteOutcome::Reject);
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.ensemble.as_ref().unwrap().verdict, "accept");
}

#[test]
fn a_pending_micro_vote_resumes_with_its_answer() {
    let mut p = policy(1, &["micro_vote"], true);
    p.strategies.get_mut("micro_vote").unwrap().deadline_ms = Some(12);
    let b = bundle(-5.0, section(p));
    let mut host = TestHost::new(None);
    let Step::Pending(paused) = run(&b, &body_with(&readme_evidence(LOVELACE)), &mut host) else {
        panic!("expected a pending step")
    };
    assert_eq!(
        paused.deadline_ms, 12,
        "the policy's deadline overrides the gate's"
    );
    let answer = MicroVoteResult::Answer {
        p_hallucinated: 0.05,
        model: "mv-test".into(),
        server_us: 100,
        cache_hit: true,
    };
    let r = result(&forward(paused.resume(&answer)));
    assert_eq!(r.status(), 200, "{r:?}");
}

#[test]
fn the_default_stack_serves_the_hrs_probability() {
    let p = policy(1, &["hrs", "pcs_recompute"], true);
    let with = forward(done(run(
        &bundle(-5.0, section(p)),
        &body_with(&readme_evidence(LOVELACE)),
        &mut TestHost::new(None),
    )));
    let without = forward(done(run(
        &bundle(-5.0, EnsembleSection::default()),
        &body_with(&readme_evidence(LOVELACE)),
        &mut TestHost::new(None),
    )));
    assert_eq!(header(&with, H_RISK), header(&without, H_RISK));
    assert_eq!(
        result(&with).risk.unwrap().score.to_bits(),
        result(&without).risk.unwrap().score.to_bits()
    );
}

#[test]
fn a_stack_changes_the_served_score_and_band() {
    let mut p = policy(1, &["hrs", "rag_grounding"], true);
    p.stack = Stack {
        bias: 0.0,
        coef: BTreeMap::from([("hrs".into(), 1.0), ("rag_grounding".into(), 2.0)]),
        abstain: BTreeMap::new(),
    };
    let f = forward(done(run(
        &bundle(-5.0, section(p)),
        &body_with(&readme_evidence(HOPPER)),
        &mut TestHost::new(None),
    )));
    let score = result(&f).risk.unwrap().score;
    assert!(score > 0.5, "unsupported answer, stacked: {score}");
    assert_eq!(header(&f, H_RISK_BAND), Some("high"));
}

#[test]
fn verification_failures_are_never_accepted_by_votes() {
    // A signed PCS whose claimed budget is off: verification accepts but escalates. A policy
    // whose only vote (HRS, low risk) accepts still escalates it.
    let body = body_claiming(&readme_evidence(LOVELACE), 0.5);
    let p = policy(1, &["hrs"], true);
    let r = result(&forward(done(run(
        &bundle(-5.0, section(p)),
        &body,
        &mut TestHost::new(None),
    ))));
    assert_eq!(vote(&r, "hrs").outcome, VoteOutcome::Accept);
    assert_eq!(r.status(), 202, "{r:?}");
    assert!(
        r.reason.as_deref().unwrap().contains("budget deviation"),
        "{r:?}"
    );
}

#[test]
fn a_citation_from_an_unlisted_source_counts_less() {
    let ev = Evidence {
        question: "Who wrote the first computer program?".into(),
        context: String::new(),
        citations: vec![Citation {
            id: "c1".into(),
            source: "https://blog.example.com/x".into(),
            text: "Ada Lovelace wrote the first computer program in 1843, for Charles \
                   Babbage's Analytical Engine."
                .into(),
        }],
        response: LOVELACE.into(),
        task: None,
    };
    let open = policy(1, &["rag_grounding"], true);
    let r = result(&forward(done(run(
        &bundle(-5.0, section(open.clone())),
        &body_with(&ev),
        &mut TestHost::new(None),
    ))));
    assert_eq!(
        vote(&r, "rag_grounding").outcome,
        VoteOutcome::Accept,
        "{r:?}"
    );
    let mut listed = open;
    listed.sources = Some(crate::grounding::SourcePolicy {
        allowlist: vec!["wikipedia.org".into()],
        unlisted_weight: 0.0,
        context_weight: 1.0,
    });
    let r = result(&forward(done(run(
        &bundle(-5.0, section(listed)),
        &body_with(&ev),
        &mut TestHost::new(None),
    ))));
    assert_ne!(
        vote(&r, "rag_grounding").outcome,
        VoteOutcome::Accept,
        "{r:?}"
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just(HOPPER.to_string()),
            Just(LOVELACE.to_string()),
            "[ -~]{0,120}",
            "\\PC{0,60}",
        ]
    }

    fn arb_micro() -> impl Strategy<Value = Option<MicroVoteResult>> {
        prop_oneof![
            Just(None),
            Just(Some(MicroVoteResult::Timeout)),
            Just(Some(MicroVoteResult::Unavailable("no_cluster"))),
            (-0.5f64..1.5).prop_map(|p| Some(MicroVoteResult::Answer {
                p_hallucinated: p,
                model: "mv".into(),
                server_us: 1,
                cache_hit: false
            })),
        ]
    }

    fn arb_policy() -> impl Strategy<Value = EnsemblePolicy> {
        (
            proptest::sample::subsequence(
                vec!["pcs_recompute", "hrs", "rag_grounding", "micro_vote"],
                1..=4,
            ),
            0u32..=4,
            0.0f64..=1.0,
            0.0f64..=1.5,
            any::<bool>(),
            proptest::collection::vec(0.0f64..3.0, 4),
        )
            .prop_map(|(names, n, min_c, rej_c, fail_open, w)| {
                let mut p = policy(n.min(names.len() as u32), &names, fail_open);
                for (s, w) in p.strategies.values_mut().zip(w) {
                    s.weight = w;
                }
                p.min_confidence = min_c;
                p.reject_confidence = rej_c;
                p
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Bodies with evidence and a bundle with an ensemble policy, through every stage:
        /// never a panic, a known status, and no accept without `n` accepting votes, a passed
        /// verification and, under fail_open, an accept decided by votes alone.
        #[test]
        fn the_whole_pipeline_is_total(
            q in arb_text(), ctx in arb_text(), resp in arb_text(),
            intercept in -8.0f64..8.0, p in arb_policy(), micro in arb_micro(),
            cut in proptest::option::of(0usize..2000), budget_shift in prop_oneof![Just(0.0), Just(0.5)],
        ) {
            let ev = Evidence { question: q, context: ctx, citations: Vec::new(), response: resp, task: None };
            let mut body = body_claiming(&ev, budget_shift);
            if let Some(c) = cut {
                body.truncate(c);
            }
            let b = bundle(intercept, section(p.clone()));
            let mut host = TestHost::new(micro.clone());
            let d = match run(&b, &body, &mut host) {
                Step::Done(d) => d,
                Step::Pending(paused) => paused.resume(&MicroVoteResult::Timeout),
            };
            match d {
                Decision::LocalReply(r) => {
                    prop_assert!([400, 401, 413].contains(&r.status), "{}", r.status);
                    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                    prop_assert_eq!(v["code"].as_str(), Some(r.code));
                }
                Decision::Forward(f) => {
                    for (_, v) in &f.headers {
                        prop_assert!(v.bytes().all(|b| (0x20..0x7f).contains(&b)), "{v:?}");
                    }
                    let r = result(&f);
                    prop_assert!([200, 202, 422].contains(&r.status()));
                    let e = r.ensemble.clone().unwrap();
                    let accepts = e.votes.iter().filter(|v| v.outcome == VoteOutcome::Accept).count();
                    if r.status() == 200 {
                        prop_assert!(accepts as u32 >= p.n.max(1), "{r:?}");
                        prop_assert!(budget_shift == 0.0, "a failed claim was accepted: {r:?}");
                    }
                    if r.status() == 422 {
                        prop_assert_eq!(r.code.as_deref(), Some("hallucination_rejected"));
                    }
                    prop_assert!(header(&f, H_VOTES).is_some_and(|v| v.len() <= MAX_VOTES_HEADER));
                }
            }
        }
    }
}

mod anomaly;
mod budget;

#[test]
fn the_micro_vote_request_carries_the_signed_task() {
    // The task kind picks the micro-vote's per-task head: dropping it would score every
    // request with the global head, unlike the native evaluation of the same rows.
    let mut ev = readme_evidence(LOVELACE);
    assert_eq!(super::microvote_request(&ev).task, None);
    ev.task = Some(crate::task::TaskKind::Qa);
    let req = super::microvote_request(&ev);
    assert_eq!(req.task, Some(crate::task::TaskKind::Qa));
    assert_eq!(req.response, LOVELACE);
    assert_eq!(req.question.as_deref(), Some(ev.question.as_str()));
}
