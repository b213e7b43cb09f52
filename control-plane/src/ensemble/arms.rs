//! The tuner's arm space and each arm's replayed record on labelled outcomes.
//!
//! An arm is a candidate [`EnsemblePolicy`] over the strategies the tenant's outcomes
//! actually carry (an arm never references a strategy that does not vote for this tenant —
//! the reference tuner's 3-of-4 arms named one that did not exist):
//!
//! * strategy set: all of them, and all but `micro_vote` when it is among them (the one
//!   strategy that calls out, so the latency and callout caps can choose without it);
//! * N from 1 to the set's size;
//! * weights: uniform (1 each), or each strategy's own accuracy on the labelled rows where it
//!   voted (floored at 0.05);
//! * `min_confidence` ∈ {0.5, 0.6, 0.7, 0.8}.
//!
//! Everything else (`reject_confidence`, `fail_open`, per-strategy cut-offs and deadlines)
//! comes from the base policy. At four strategies that is 2 · 4 · 2 · 4 + 3 · 2 · 4 = 88 arms.
//!
//! An arm's record replays its decision on every labelled outcome with the exact
//! [`decide`] of the filter: successes (right decisions), failures, and the honest-escalation
//! rate (faithful answers not accepted), the feasibility constraint together with the
//! latency and callout caps.

use super::outcomes::{right, Outcome};
use kakeya_core::ensemble_policy::{decide, Decision, EnsemblePolicy, Stack, StrategyConfig};
use serde::Serialize;
use std::collections::BTreeMap;

pub const MIN_CONFIDENCES: [f64; 4] = [0.5, 0.6, 0.7, 0.8];
/// The strategy that calls out (latency and cost).
pub const CALLOUT: &str = "micro_vote";
/// Latency of a callout strategy without its own `deadline_ms` (the micro-vote's default).
pub const DEFAULT_CALLOUT_MS: u32 = 30;
/// Votes a strategy needs among the labelled outcomes to be part of the arms.
pub const MIN_VOTES: usize = 10;

/// What an arm's policy derives from when the tenant has none yet.
pub fn base_policy() -> EnsemblePolicy {
    EnsemblePolicy {
        policy_id: "base".into(),
        n: 1,
        strategies: BTreeMap::new(),
        min_confidence: 0.6,
        reject_confidence: 0.8,
        fail_open: true,
        stack: Stack::default(),
        sources: None,
    }
}

/// The strategies with at least [`MIN_VOTES`] votes among `rows`, with their accuracy there.
pub fn voting_strategies(rows: &[Outcome]) -> BTreeMap<String, f64> {
    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for o in rows {
        for v in &o.votes {
            let e = seen.entry(v.strategy_name.clone()).or_default();
            e.0 += 1;
            // A vote is right when accept ⇔ faithful.
            if v.accepted != o.hallucinated {
                e.1 += 1;
            }
        }
    }
    seen.into_iter()
        .filter(|(_, (n, _))| *n >= MIN_VOTES)
        .map(|(s, (n, ok))| (s, ok as f64 / n as f64))
        .collect()
}

/// The arms over `strategies` (name → accuracy), derived from `base`.
pub fn arms(
    base: &EnsemblePolicy,
    strategies: &BTreeMap<String, f64>,
    tenant: &str,
) -> Vec<EnsemblePolicy> {
    let all: Vec<&String> = strategies.keys().collect();
    let mut sets = vec![all.clone()];
    if all.len() > 1 && all.iter().any(|s| *s == CALLOUT) {
        sets.push(all.iter().copied().filter(|s| *s != CALLOUT).collect());
    }
    let config = |name: &str, weight: f64| StrategyConfig {
        weight,
        ..base
            .strategies
            .get(name)
            .cloned()
            .unwrap_or(StrategyConfig {
                weight,
                accept_below: None,
                reject_above: None,
                deadline_ms: None,
            })
    };
    let mut out = Vec::new();
    for set in sets {
        for (wname, by_accuracy) in [("u", false), ("a", true)] {
            let strategies: BTreeMap<String, StrategyConfig> = set
                .iter()
                .map(|s| {
                    let w = if by_accuracy {
                        (strategies[*s].max(0.05) * 1000.0).round() / 1000.0
                    } else {
                        1.0
                    };
                    ((*s).clone(), config(s, w))
                })
                .collect();
            let tag: String = set.iter().map(|s| initial(s)).collect();
            for n in 1..=set.len() as u32 {
                for &mc in &MIN_CONFIDENCES {
                    out.push(EnsemblePolicy {
                        policy_id: format!("tuned-{tenant}-{tag}-{n}of{}-{wname}-{mc}", set.len()),
                        n,
                        strategies: strategies.clone(),
                        min_confidence: mc,
                        ..base.clone()
                    });
                }
            }
        }
    }
    out
}

fn initial(s: &str) -> char {
    match s {
        "pcs_recompute" => 'p',
        "hrs" => 'h',
        "rag_grounding" => 'r',
        "micro_vote" => 'm',
        _ => 'x',
    }
}

/// Worst-case added latency of `policy`: the longest deadline of its callout strategies.
pub fn latency_ms(policy: &EnsemblePolicy) -> u32 {
    policy
        .strategies
        .get(CALLOUT)
        .map_or(0, |s| s.deadline_ms.unwrap_or(DEFAULT_CALLOUT_MS))
}

/// Callouts per request of `policy`.
pub fn callouts(policy: &EnsemblePolicy) -> u32 {
    u32::from(policy.strategies.contains_key(CALLOUT))
}

/// An arm's replayed record.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ArmRecord {
    pub policy_id: String,
    /// Right decisions (accept faithful, escalate or reject hallucinated).
    pub successes: u64,
    pub failures: u64,
    /// Faithful answers not accepted, over the faithful ones (0 without any).
    pub honest_escalation_rate: f64,
    /// Hallucinated answers escalated or rejected, over the hallucinated ones.
    pub containment_rate: f64,
    pub latency_ms: u32,
    pub callouts: u32,
    /// Within every cap (honest escalation, latency, callouts).
    pub feasible: bool,
}

/// The feasibility caps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Caps {
    pub max_honest_escalation: f64,
    pub max_latency_ms: u32,
    pub max_callouts: u32,
}

pub fn record(policy: &EnsemblePolicy, rows: &[Outcome], caps: &Caps) -> ArmRecord {
    let (mut ok, mut bad, mut faithful, mut escalated, mut halluc, mut contained) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for o in rows {
        let d = decide(policy, o.votes());
        if right(d, o.hallucinated) {
            ok += 1;
        } else {
            bad += 1;
        }
        if o.hallucinated {
            halluc += 1;
            contained += u64::from(d != Decision::Accept);
        } else {
            faithful += 1;
            escalated += u64::from(d != Decision::Accept);
        }
    }
    let rate = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let honest = rate(escalated, faithful);
    let (latency_ms, callouts) = (latency_ms(policy), callouts(policy));
    ArmRecord {
        policy_id: policy.policy_id.clone(),
        successes: ok,
        failures: bad,
        honest_escalation_rate: honest,
        containment_rate: rate(contained, halluc),
        latency_ms,
        callouts,
        feasible: honest <= caps.max_honest_escalation
            && latency_ms <= caps.max_latency_ms
            && callouts <= caps.max_callouts,
    }
}
