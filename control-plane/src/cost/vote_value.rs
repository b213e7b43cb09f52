//! Whether a strategy's vote ever changed a decision: the advisor's `micro_vote_off` and
//! `rag_off` rules. Every decision the decision log recorded with its votes
//! (`decision_log.votes`, migration 0018) is decided again by the N-of-M rule
//! ([`kakeya_core::ensemble_policy::decide`], the code the filter runs) with and without the
//! strategy's vote; removing a strategy from a policy is exactly its abstaining, since the
//! tally ignores strategies the policy does not enable.

use super::CostError;
use crate::store::Db;
use kakeya_core::ensemble_policy::{decide, EnsemblePolicy, VoteKind};
use kakeya_core::verify::EnsembleSummary;
use kakeya_core::vote::VoteOutcome;
use sqlx::Row;

/// Fewest decisions the strategy voted in before "never changed a decision" is believed.
pub const MIN_VOTES: u64 = 20;

/// One recorded decision's non-abstaining votes.
pub type Votes = Vec<(String, VoteKind, f64)>;

/// What dropping `strategy` would have done to the decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impact {
    /// Decisions replayed (recorded under the policy in force).
    pub decisions: u64,
    /// Those in which the strategy cast a vote (not an abstention).
    pub voted: u64,
    /// Those whose decision differs without its vote.
    pub changed: u64,
}

/// The votes of a stored `EnsembleSummary`, when it was decided under `policy_id` (`None`
/// otherwise, or when it does not parse: never guessed).
pub fn votes_of(json: &str, policy_id: &str) -> Option<Votes> {
    let s: EnsembleSummary = serde_json::from_str(json).ok()?;
    if s.policy_id != policy_id {
        return None;
    }
    Some(
        s.votes
            .iter()
            .filter_map(|v| {
                let kind = match v.outcome {
                    VoteOutcome::Accept => VoteKind::Accept,
                    VoteOutcome::Reject => VoteKind::Reject,
                    VoteOutcome::Abstain => return None,
                };
                Some((v.strategy.to_string(), kind, v.confidence))
            })
            .collect(),
    )
}

/// Replays `decisions` under `policy` with and without `strategy`'s vote.
pub fn impact(policy: &EnsemblePolicy, decisions: &[Votes], strategy: &str) -> Impact {
    let mut out = Impact {
        decisions: decisions.len() as u64,
        voted: 0,
        changed: 0,
    };
    for votes in decisions {
        let all = votes.iter().map(|(n, k, c)| (n.as_str(), *k, *c));
        if !votes.iter().any(|(n, _, _)| n == strategy) {
            continue;
        }
        out.voted += 1;
        let without = all.clone().filter(|(n, _, _)| *n != strategy);
        if decide(policy, all) != decide(policy, without) {
            out.changed += 1;
        }
    }
    out
}

/// Tenants with recorded votes in `[from_ms, to_ms)`.
pub async fn tenants(db: &Db, from_ms: i64, to_ms: i64) -> Result<Vec<String>, CostError> {
    let rows = sqlx::query(
        "SELECT DISTINCT tenant FROM decision_log WHERE votes IS NOT NULL \
         AND created_at_ms >= $1 AND created_at_ms < $2 ORDER BY tenant",
    )
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get("tenant"))
        .collect::<Result<_, _>>()?)
}

/// The tenant's recorded decisions in `[from_ms, to_ms)` decided under `policy_id`, and how
/// many others (another policy, or unreadable) were left out.
pub async fn decisions(
    db: &Db,
    tenant: &str,
    policy_id: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<(Vec<Votes>, u64), CostError> {
    let rows = sqlx::query(
        "SELECT votes FROM decision_log WHERE tenant = $1 AND votes IS NOT NULL \
         AND created_at_ms >= $2 AND created_at_ms < $3",
    )
    .bind(tenant)
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(&db.pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    let mut other = 0;
    for r in &rows {
        let json: String = r.try_get("votes")?;
        match votes_of(&json, policy_id) {
            Some(v) => out.push(v),
            None => other += 1,
        }
    }
    Ok((out, other))
}

/// A 2-of-M test policy `p` over `strategies`, weights 1, accept from confidence 0.5, reject
/// from 0.8, fail-open.
#[cfg(test)]
pub fn test_policy(strategies: &[&str]) -> EnsemblePolicy {
    let s = || kakeya_core::ensemble_policy::StrategyConfig {
        weight: 1.0,
        accept_below: None,
        reject_above: None,
        deadline_ms: None,
    };
    EnsemblePolicy {
        policy_id: "p".into(),
        n: 2,
        strategies: strategies.iter().map(|k| (k.to_string(), s())).collect(),
        min_confidence: 0.5,
        reject_confidence: 0.8,
        fail_open: true,
        stack: Default::default(),
        sources: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use VoteKind::{Accept, Reject};

    fn policy() -> EnsemblePolicy {
        test_policy(&["pcs_recompute", "hrs", "micro_vote"])
    }

    fn d(v: &[(&str, VoteKind, f64)]) -> Votes {
        v.iter().map(|(n, k, c)| (n.to_string(), *k, *c)).collect()
    }

    #[test]
    fn counts_the_decisions_a_vote_changed() {
        let p = policy();
        let decisions = [
            // Two accepts without the micro-vote too: unchanged.
            d(&[
                ("pcs_recompute", Accept, 1.0),
                ("hrs", Accept, 0.9),
                ("micro_vote", Accept, 0.9),
            ]),
            // Its accept is the second one N = 2 needs: changed (accept → escalate).
            d(&[
                ("pcs_recompute", Accept, 1.0),
                ("hrs", Reject, 0.3),
                ("micro_vote", Accept, 0.9),
            ]),
            // It abstained: not counted as voting.
            d(&[("pcs_recompute", Accept, 1.0), ("hrs", Accept, 0.9)]),
        ];
        assert_eq!(
            impact(&p, &decisions, "micro_vote"),
            Impact {
                decisions: 3,
                voted: 2,
                changed: 1
            }
        );
        // hrs: in the first, pcs + micro still make two accepts; in the second the accept
        // confidence is 1.9 / 3 = 0.63 with its reject and 1.9 / 2 = 0.95 without, both
        // accept; in the third its accept is the second one needed.
        assert_eq!(
            impact(&p, &decisions, "hrs"),
            Impact {
                decisions: 3,
                voted: 3,
                changed: 1
            }
        );
    }

    #[test]
    fn reads_stored_summaries_of_its_policy_only() {
        let json = r#"{"policy_id":"p","verdict":"accept","votes":[
            {"strategy":"hrs","outcome":"accept","confidence":0.9,"reason":""},
            {"strategy":"micro_vote","outcome":"abstain","confidence":0,"reason":"deadline"}]}"#;
        assert_eq!(votes_of(json, "p"), Some(d(&[("hrs", Accept, 0.9)])));
        assert_eq!(votes_of(json, "q"), None);
        assert_eq!(votes_of("not json", "p"), None);
    }
}
