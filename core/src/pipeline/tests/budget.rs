//! Budget enforcement in the pipeline: each action's status, code and headers, no micro-vote
//! call when degraded or refused, and forged or invalid input keeping its own status.

use super::*;
use crate::budget::{BudgetAction, TenantBudget};
use crate::pipeline::budget as stage;

fn budgeted(action: BudgetAction, retry_after_s: u32) -> Bundle {
    let mut b = bundle(-5.0, section(policy(1, &["hrs", "micro_vote"], true)));
    b.budgets.tenants.insert(
        "default".into(),
        TenantBudget {
            month: "2026-12".into(),
            spent: 12.0,
            soft_cap: 10.0,
            hard_cap: 11.0,
            action,
            retry_after_s,
        },
    );
    b
}

fn local(d: Decision) -> LocalReply {
    match d {
        Decision::LocalReply(r) => r,
        other => panic!("expected a local reply, got {other:?}"),
    }
}

fn code_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(v["error"].is_string(), "{body}");
    v["code"].as_str().unwrap().to_string()
}

#[test]
fn deny_is_402_budget_exceeded_without_a_micro_vote_call() {
    let mut host = TestHost::new(Some(MicroVoteResult::Timeout));
    let r = local(done(run(
        &budgeted(BudgetAction::Deny, 0),
        &body_with(&readme_evidence(LOVELACE)),
        &mut host,
    )));
    assert_eq!((r.status, r.code), (402, stage::EXCEEDED_CODE));
    assert_eq!(code_of(&r.body), "budget_exceeded");
    assert!(host.asked.is_empty());
}

#[test]
fn throttle_is_429_with_retry_after() {
    for (retry, header) in [(3600, "3600"), (0, "1")] {
        let mut host = TestHost::new(Some(MicroVoteResult::Timeout));
        let r = local(done(run(
            &budgeted(BudgetAction::Throttle, retry),
            &body_with(&readme_evidence(LOVELACE)),
            &mut host,
        )));
        assert_eq!((r.status, r.code), (429, stage::THROTTLED_CODE));
        assert_eq!(code_of(&r.body), "budget_throttled");
        assert!(r.all_headers().contains(&("retry-after", header)), "{r:?}");
        assert!(host.asked.is_empty());
    }
}

#[test]
fn degrade_skips_the_micro_vote_and_decides_by_the_other_votes() {
    // The host would answer a confident reject: were it asked, the request would be refused.
    let reject = MicroVoteResult::Answer {
        p_hallucinated: 0.99,
        model: "m".into(),
        server_us: 1,
        cache_hit: false,
    };
    let mut host = TestHost::new(Some(reject));
    let f = forward(done(run(
        &budgeted(BudgetAction::Degrade, 0),
        &body_with(&readme_evidence(LOVELACE)),
        &mut host,
    )));
    assert!(host.asked.is_empty(), "degraded: no call to the host");
    let r = result(&f);
    let v = vote(&r, "micro_vote");
    assert_eq!(
        (v.outcome, v.reason.as_ref()),
        (VoteOutcome::Abstain, stage::DEGRADED_REASON)
    );
    // The HRS vote (a low-risk model) decides alone: accepted.
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(header(&f, stage::H_BUDGET), Some("degrade"));
    assert_eq!(f.budget, BudgetAction::Degrade);
}

#[test]
fn alert_is_served_as_usual_and_says_so() {
    let mut host = TestHost::new(Some(MicroVoteResult::Timeout));
    let f = forward(done(run(
        &budgeted(BudgetAction::Alert, 0),
        &body_with(&readme_evidence(LOVELACE)),
        &mut host,
    )));
    assert_eq!(host.asked.len(), 1, "alert still asks the micro-vote");
    assert_eq!(header(&f, stage::H_BUDGET), Some("alert"));
    // Without an action in force, no budget header.
    let f = forward(done(run(
        &budgeted(BudgetAction::None, 0),
        &body_with(&readme_evidence(LOVELACE)),
        &mut TestHost::new(Some(MicroVoteResult::Timeout)),
    )));
    assert_eq!(header(&f, stage::H_BUDGET), None);
}

#[test]
fn forged_and_invalid_requests_keep_their_own_status() {
    let mut v: serde_json::Value =
        serde_json::from_slice(&body_with(&readme_evidence(LOVELACE))).unwrap();
    v["sig"] = serde_json::json!(crate::signature::sign_hmac(b"forged", b"not-the-key"));
    for action in [BudgetAction::Deny, BudgetAction::Throttle] {
        let mut host = TestHost::new(None);
        let b = budgeted(action, 60);
        let forged = local(done(run(&b, v.to_string().as_bytes(), &mut host)));
        assert_eq!((forged.status, forged.code), (401, "bad_signature"));
        let invalid = local(done(run(&b, b"{not json", &mut host)));
        assert_eq!(invalid.status, 400, "{invalid:?}");
        assert!(host.asked.is_empty());
    }
}

#[test]
fn another_tenants_budget_changes_nothing() {
    let mut b = budgeted(BudgetAction::Deny, 0);
    if let Some(t) = b.budgets.tenants.remove("default") {
        b.budgets.tenants.insert("acme".into(), t);
    }
    let f = forward(done(run(
        &b,
        &body_with(&readme_evidence(LOVELACE)),
        &mut TestHost::new(Some(MicroVoteResult::Timeout)),
    )));
    assert_eq!(f.budget, BudgetAction::None);
}
