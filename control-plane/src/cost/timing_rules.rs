//! The advisor's two rules over recorded times (migration 0033):
//!
//! * `micro_vote_deadline`, per tenant whose policy enables the micro-vote: the callout waits
//!   the filter's cost tracer measured (`decision_log.microvote_ns`, dispatch to answer or
//!   timeout) over the last 30 days. With no call at or over the deadline in force and the
//!   headroom-padded 99th percentile below it, the deadline is lowered to that value: it bounds
//!   the worst case a submission waits. Money does not change (a call costs the same however
//!   long it runs), so the projected saving is 0; the risk is the share of recorded calls the
//!   new deadline would have cut.
//! * `dedup_ttl`, for the whole deployment (the TTL is `dedup_ttl_secs` in `kakeya.toml`): the
//!   ages of resubmissions over the last 30 days, those answered from dedup (`dedup_hits`,
//!   age of the answer they got) and those that came after their answer expired (a second
//!   decision-log row of the same cacheable `(tenant, pcs_id)`, age = the gap between them).
//!   The recommended TTL covers their headroom-padded 99th percentile, rounded up to the hour.
//!   Saving, modelled on the 30 days: (late resubmissions the new TTL would answer − hits it
//!   would lose) × the mean cost of a decision, since a dedup answer is a decision not made.
//!
//! Percentiles are nearest-rank (the smallest value with at least 99 % of the sample at or
//! below it), so a fixture's expected figure can be computed by hand.

use super::advisor::{Fresh, MODEL_DAYS};
use super::prices::{day_of_ms, DAY_MS};
use super::{options::CostOptions, record, CostError};
use crate::store::Db;
use kakeya_core::ensemble_policy::EnsemblePolicy;
use sqlx::Row;

/// Fewest samples (calls, resubmissions) a rule believes.
pub const MIN_SAMPLES: usize = 20;
/// The recommended bound is this multiple of the 99th percentile: room for a slower week.
pub const HEADROOM: f64 = 1.25;
/// A TTL recommendation is made only when it differs from the configured one by this share.
pub const MIN_TTL_CHANGE: f64 = 0.1;
const HOUR_MS: i64 = 3_600_000;

/// Nearest-rank percentile `p` (0 < p ≤ 1) of `v` (sorted in place); `None` when empty.
pub fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let rank = (p * v.len() as f64).ceil() as usize;
    v.get(rank.max(1) - 1).copied()
}

/// The deadline recommendation from one tenant's callout waits (ns) under `deadline_ms`:
/// `(proposed_ms, calls_over_proposed)`, or `None` when there is nothing to recommend.
pub fn deadline_from(waits_ns: &[i64], deadline_ms: u32) -> Option<(u32, usize)> {
    if waits_ns.len() < MIN_SAMPLES {
        return None;
    }
    let limit_ns = i64::from(deadline_ms) * 1_000_000;
    // A call that reached the deadline was cut: its true latency is unknown, so no tighter
    // bound can be justified.
    if waits_ns.iter().any(|&w| w >= limit_ns) {
        return None;
    }
    let mut ms: Vec<f64> = waits_ns.iter().map(|&w| w as f64 / 1e6).collect();
    let p99 = percentile(&mut ms, 0.99)?;
    let proposed = ((p99 * HEADROOM).ceil() as u32).max(1);
    if proposed >= deadline_ms {
        return None;
    }
    let over = ms.iter().filter(|&&m| m > f64::from(proposed)).count();
    Some((proposed, over))
}

/// The tenant's policy with the micro-vote's deadline set to `ms`, under a derived id.
pub fn with_deadline(policy: &EnsemblePolicy, ms: u32) -> EnsemblePolicy {
    let mut p = policy.clone();
    if let Some(s) = p.strategies.get_mut("micro_vote") {
        s.deadline_ms = Some(ms);
    }
    p.policy_id = format!("{}-deadline-{ms}ms", policy.policy_id);
    p
}

/// The deadline in force for the micro-vote under `policy` (the gate's default without one).
pub fn deadline_of(policy: &EnsemblePolicy) -> Option<u32> {
    let s = policy.strategies.get("micro_vote")?;
    Some(
        s.deadline_ms
            .unwrap_or(kakeya_core::pipeline::DEFAULT_MICROVOTE_DEADLINE_MS),
    )
}

/// Recorded callout waits per tenant in `[from_ms, to_ms)`, tenants in order.
async fn waits(db: &Db, from_ms: i64, to_ms: i64) -> Result<Vec<(String, Vec<i64>)>, CostError> {
    let rows = sqlx::query(
        "SELECT tenant, microvote_ns FROM decision_log WHERE microvote_ns IS NOT NULL \
         AND created_at_ms >= $1 AND created_at_ms < $2 ORDER BY tenant",
    )
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(&db.pool)
    .await?;
    let mut out: Vec<(String, Vec<i64>)> = Vec::new();
    for r in &rows {
        let (t, w): (String, i64) = (r.try_get("tenant")?, r.try_get("microvote_ns")?);
        match out.last_mut() {
            Some((last, v)) if *last == t => v.push(w),
            _ => out.push((t, vec![w])),
        }
    }
    Ok(out)
}

/// `micro_vote_deadline` over the last [`MODEL_DAYS`] days before `now_ms`; the reason when
/// no wait is recorded.
pub async fn deadline_rule(
    db: &Db,
    now_ms: i64,
) -> Result<(Vec<Fresh>, Option<String>), CostError> {
    let per_tenant = waits(db, now_ms - MODEL_DAYS * DAY_MS, now_ms).await?;
    if per_tenant.is_empty() {
        return Ok((
            Vec::new(),
            Some(
                "no decision of the last 30 days records a micro-vote wait (the filter's cost \
                 tracer sends it after a callout)"
                    .into(),
            ),
        ));
    }
    let mut fresh = Vec::new();
    for (t, w) in per_tenant {
        let Some(view) = crate::ensemble::policy_view(db, &t)
            .await
            .map_err(|e| CostError::Invalid(format!("the ensemble policy of {t}: {e}")))?
        else {
            continue;
        };
        let Some(current) = deadline_of(&view.policy) else {
            continue;
        };
        let Some((proposed, over)) = deadline_from(&w, current) else {
            continue;
        };
        let next = with_deadline(&view.policy, proposed);
        let share = over as f64 / w.len() as f64;
        fresh.push(Fresh {
            kind: "micro_vote_deadline",
            tenant: Some(t.clone()),
            saving: 0.0,
            risk: if share <= 0.01 { "low" } else { "medium" },
            rationale: format!(
                "{n} micro-vote calls in the last {MODEL_DAYS} days, none cut by the {current} ms \
                 deadline; 99th percentile wait × {HEADROOM} rounds up to {proposed} ms, which \
                 {over} of them ({pct:.1} %) exceeded. A call costs the same however long it \
                 runs, so no money is saved: the deadline bounds how long a submission waits",
                n = w.len(),
                pct = share * 100.0
            ),
            diff: serde_json::json!({
                "path": format!("ensemble.{t}.strategies.micro_vote.deadline_ms"),
                "from": current, "to": proposed,
                "policy_id": {"from": view.policy.policy_id, "to": next.policy_id}}),
        });
    }
    Ok((fresh, None))
}

/// The integer column `col` of `sql`'s rows, its `$1`/`$2` bound to `[from_ms, to_ms)`.
async fn column(
    db: &Db,
    sql: &str,
    col: &str,
    (from_ms, to_ms): (i64, i64),
) -> Result<Vec<i64>, CostError> {
    let rows = sqlx::query(sql)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&db.pool)
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get(col))
        .collect::<Result<_, _>>()?)
}

/// Resubmission ages in `window`: (answered from dedup, came after expiry), ms.
async fn resubmissions(db: &Db, window: (i64, i64)) -> Result<(Vec<i64>, Vec<i64>), CostError> {
    let hits = column(
        db,
        "SELECT age_ms FROM dedup_hits WHERE hit_at_ms >= $1 AND hit_at_ms < $2",
        "age_ms",
        window,
    )
    .await?;
    // A cacheable pcs_id logged twice: its dedup answer had expired (a live one would have
    // answered, other content is refused with 409 and not logged).
    let late = column(
        db,
        "SELECT gap FROM (SELECT created_at_ms - LAG(created_at_ms) OVER \
         (PARTITION BY tenant, pcs_id ORDER BY created_at_ms) AS gap FROM decision_log \
         WHERE cacheable = 1 AND pcs_id <> '' AND created_at_ms >= $1 AND created_at_ms < $2) g \
         WHERE gap IS NOT NULL",
        "gap",
        window,
    )
    .await?;
    Ok((hits, late))
}

/// The TTL covering the headroom-padded 99th percentile of `ages`, whole hours, at least one.
pub fn ttl_for(ages: &[i64]) -> Option<i64> {
    let mut v: Vec<f64> = ages.iter().map(|&a| a as f64).collect();
    let p99 = percentile(&mut v, 0.99)?;
    let hours = (p99 * HEADROOM / HOUR_MS as f64).ceil() as i64;
    Some(hours.max(1) * HOUR_MS)
}

/// `dedup_ttl` over the last [`MODEL_DAYS`] days before `now_ms`; the reason when there are
/// too few resubmissions.
pub async fn ttl_rule(
    db: &Db,
    opts: &CostOptions,
    now_ms: i64,
) -> Result<(Vec<Fresh>, Option<String>), CostError> {
    let (hits, late) = resubmissions(db, (now_ms - MODEL_DAYS * DAY_MS, now_ms)).await?;
    let n = hits.len() + late.len();
    if n < MIN_SAMPLES {
        return Ok((
            Vec::new(),
            Some(format!(
                "{n} resubmissions in the last 30 days ({} answered from dedup, {} after \
                 expiry), fewer than {MIN_SAMPLES}",
                hits.len(),
                late.len()
            )),
        ));
    }
    let all: Vec<i64> = hits.iter().chain(&late).copied().collect();
    let Some(proposed) = ttl_for(&all) else {
        return Ok((Vec::new(), None));
    };
    let current = opts.dedup_ttl_ms;
    if ((proposed - current).abs() as f64) < MIN_TTL_CHANGE * current as f64 {
        return Ok((Vec::new(), None));
    }
    let gained = late.iter().filter(|&&a| a <= proposed).count();
    let lost = hits.iter().filter(|&&a| a > proposed).count();
    let today = day_of_ms(now_ms);
    let sel = record::Selection {
        from_day: today - MODEL_DAYS,
        to_day: today,
        ..Default::default()
    };
    let days = super::rollup(db, opts, &sel).await?;
    let decisions: u64 = days.iter().map(|d| d.usage.decisions).sum();
    let total: f64 = days.iter().filter_map(|d| d.cost.map(|c| c.total())).sum();
    let per_decision = if decisions > 0 {
        total / decisions as f64
    } else {
        0.0
    };
    let saving = (gained as f64 - lost as f64) * per_decision * 30.0 / MODEL_DAYS as f64;
    let hours = |ms: i64| ms as f64 / HOUR_MS as f64;
    Ok((
        vec![Fresh {
            kind: "dedup_ttl",
            tenant: None,
            saving,
            risk: if lost == 0 { "low" } else { "medium" },
            rationale: format!(
                "{n} resubmissions in the last {MODEL_DAYS} days: {} answered from dedup, {} \
                 after their answer expired; 99th percentile age × {HEADROOM} rounds up to {:.0} \
                 h (now {:.1} h). The new TTL would answer {gained} of the late ones and lose \
                 {lost} hits, at {per_decision:.6} per decision. dedup_ttl_secs is read from \
                 kakeya.toml at start: set it there and restart",
                hits.len(),
                late.len(),
                hours(proposed),
                hours(current)
            ),
            diff: serde_json::json!({"path": "dedup_ttl_secs", "from": current / 1000,
                                     "to": proposed / 1000}),
        }],
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentile_and_the_deadline_it_gives() {
        // 1..=100: the 99th percentile is the 99th value.
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.99), Some(99.0));
        let mut few = vec![3.0, 1.0, 2.0];
        assert_eq!(percentile(&mut few, 0.99), Some(3.0));
        assert_eq!(percentile(&mut [], 0.99), None);
        // 40 waits of 1..=40 ms: p99 = 40 (rank ceil(39.6) = 40), × 1.25 = 50 ms.
        let w: Vec<i64> = (1..=40).map(|m| m * 1_000_000).collect();
        assert_eq!(deadline_from(&w, 100), Some((50, 0)));
        // Not lower than the deadline in force: nothing.
        assert_eq!(deadline_from(&w, 50), None);
        // One call reached the deadline: its latency is unknown, nothing.
        let mut cut = w.clone();
        cut.push(100_000_000);
        assert_eq!(deadline_from(&cut, 100), None);
        // Too few calls.
        assert_eq!(deadline_from(&w[..19], 100), None);
        // 100 waits 1..=100 ms under 200 ms: p99 99 → 124 ms (123.75 up); none above.
        let w: Vec<i64> = (1..=100).map(|m| m * 1_000_000).collect();
        assert_eq!(deadline_from(&w, 200), Some((124, 0)));
    }

    #[test]
    fn ttl_rounds_the_padded_percentile_up_to_the_hour() {
        // Ages 1..=20 h: p99 = 20 h, × 1.25 = 25 h.
        let ages: Vec<i64> = (1..=20).map(|h| h * HOUR_MS).collect();
        assert_eq!(ttl_for(&ages), Some(25 * HOUR_MS));
        assert_eq!(ttl_for(&[1]), Some(HOUR_MS), "at least an hour");
        assert_eq!(ttl_for(&[]), None);
    }
}
