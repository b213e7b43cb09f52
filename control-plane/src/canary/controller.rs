//! One tick of the controller: apply an operator's request, start a pending deployment, check
//! the running step's gates and advance, hold, promote or roll back. Run by the leader every
//! `[canary] tick_every` ([`super::LEASE`]); tests call it with their own clock.

use super::gates::{self, ArmOf, HealthCheck, Recommendation};
use super::options::CanaryOptions;
use super::store::{self, Deployment, Status};
use super::{Action, CanaryError};
use crate::registry::history::{Actor, Reason, Why};
use crate::registry::{self, CANARY, CHAMPION};
use crate::store::Db;
use std::sync::OnceLock;

/// `kakeya_canary_deployments_total{outcome}`: finished deployments (`promoted`,
/// `rolled_back`, `aborted`).
pub fn outcomes_total() -> &'static prometheus::IntCounterVec {
    static C: OnceLock<prometheus::IntCounterVec> = OnceLock::new();
    C.get_or_init(|| {
        prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "kakeya_canary_deployments_total",
                "Canary deployments finished, by outcome (promoted, rolled_back, aborted)",
            ),
            &["outcome"],
        )
        .expect("a valid metric name and label")
    })
}

/// `kakeya_canary_rollbacks_total{trigger}`: `auto` (gates) or `manual` (abort).
pub fn rollbacks_total() -> &'static prometheus::IntCounterVec {
    static C: OnceLock<prometheus::IntCounterVec> = OnceLock::new();
    C.get_or_init(|| {
        prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "kakeya_canary_rollbacks_total",
                "Canary rollbacks to weight 0, by trigger (auto: the gates, manual: an abort)",
            ),
            &["trigger"],
        )
        .expect("a valid metric name and label")
    })
}

/// `kakeya_canary_rollback_seconds`: from the tick that decided a rollback to the published
/// bundle without the canary.
pub fn rollback_seconds() -> &'static prometheus::Histogram {
    static H: OnceLock<prometheus::Histogram> = OnceLock::new();
    H.get_or_init(|| {
        prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "kakeya_canary_rollback_seconds",
                "Time from a rollback decision to the published bundle without the canary",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
        )
        .expect("a valid metric name")
    })
}

/// `kakeya_canary_step_duration_seconds`: how long passed steps took (pauses and holds
/// included).
pub fn step_seconds() -> &'static prometheus::Histogram {
    static H: OnceLock<prometheus::Histogram> = OnceLock::new();
    H.get_or_init(|| {
        prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "kakeya_canary_step_duration_seconds",
                "Duration of passed canary steps, from start to the next step or promotion",
            )
            .buckets(vec![
                1.0, 10.0, 60.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
            ]),
        )
        .expect("a valid metric name")
    })
}

fn why(d: &Deployment, reason: Reason, what: &str) -> Why {
    Why {
        actor: Actor::Scheduler,
        reason,
        comment: Some(format!("canary {}: {what}", d.id)),
    }
}

/// What a tick did to the active deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticked {
    pub deployment: Deployment,
    /// The event kind written, if the tick made a transition.
    pub event: Option<&'static str>,
}

/// Removes the canary alias if it is still this deployment's; true when it removed it.
async fn remove_canary(
    db: &Db,
    seed: &[u8; 32],
    d: &Deployment,
    w: &Why,
    now: i64,
) -> Result<bool, CanaryError> {
    let ours = canary_alias(db).await?.as_deref() == Some(d.canary_version.as_str());
    if ours {
        registry::remove_alias(db, seed, CANARY, w, now).await?;
    }
    Ok(ours)
}

/// The upstream route a deployment canaries (`None`: a scoring version).
fn route(d: &Deployment) -> Option<&str> {
    super::upstream::target_route(d.target.as_deref())
}

/// Takes the canary out of traffic: the canary alias (if still this deployment's), or the
/// route's weight to 0; true when it moved something.
async fn withdraw(
    db: &Db,
    seed: &[u8; 32],
    d: &Deployment,
    w: &Why,
    now: i64,
) -> Result<bool, CanaryError> {
    match route(d) {
        None => remove_canary(db, seed, d, w, now).await,
        Some(r) => {
            if super::upstream::weight(db, r).await? <= 0.0 {
                return Ok(false);
            }
            let key = d.upstream_base.as_ref().map(|b| b.key).unwrap_or_default();
            super::upstream::set_weight(db, seed, r, 0.0, key, now).await?;
            Ok(true)
        }
    }
}

/// Sets the canary's traffic to `weight`: the canary alias through the registry, or the
/// route's weight with a fresh scrape of Envoy's stats as the step's base (taken before the
/// weight moves, so the step counts only its own traffic).
async fn set_traffic(
    db: &Db,
    seed: &[u8; 32],
    opts: &CanaryOptions,
    d: &mut Deployment,
    weight: f64,
    w: &Why,
    now: i64,
) -> Result<(), CanaryError> {
    let Some(r) = route(d).map(str::to_string) else {
        registry::move_canary(db, seed, &d.canary_version, weight, None, w, now).await?;
        return Ok(());
    };
    let stats =
        super::envoy_stats::scrape(&opts.envoy_admins, &d.control_version, &d.canary_version)
            .await?;
    let mut base = d.upstream_base.clone().unwrap_or_default();
    if d.status == Status::Pending {
        base.run = stats.clone();
    }
    base.step = stats;
    super::upstream::set_weight(db, seed, &r, weight, base.key, now).await?;
    d.upstream_base = Some(base);
    Ok(())
}

async fn canary_alias(db: &Db) -> Result<Option<String>, sqlx::Error> {
    alias(db, CANARY).await
}

async fn alias(db: &Db, name: &str) -> Result<Option<String>, sqlx::Error> {
    let mut conn = db.pool.acquire().await?;
    Ok(registry::aliases(&mut conn)
        .await?
        .into_iter()
        .find(|a| a.alias == name)
        .map(|a| a.version))
}

/// Writes `d` (already changed) with its event; `None` when the row moved meanwhile.
async fn commit(
    db: &Db,
    before: &Deployment,
    mut d: Deployment,
    kind: &'static str,
    reason: &str,
    check: Option<&HealthCheck>,
    now: i64,
) -> Result<Option<Ticked>, CanaryError> {
    d.revision = before.revision;
    if !store::transition(db, &d, Some((kind, before.status, reason, check)), now).await? {
        tracing::warn!(deployment = %d.id, "canary row changed during the tick; next tick re-reads it");
        return Ok(None);
    }
    d.revision += 1;
    tracing::info!(deployment = %d.id, event = kind, status = d.status.as_str(), step = d.current_step, reason, "canary transition");
    if let Some(outcome) = match d.status {
        Status::Promoted | Status::RolledBack | Status::Aborted => Some(d.status.as_str()),
        _ => None,
    } {
        outcomes_total().with_label_values(&[outcome]).inc();
        if d.status != Status::Aborted && route(&d).is_none() {
            record_accuracy(db, &d, now).await;
        }
    }
    Ok(Some(Ticked {
        deployment: d,
        event: Some(kind),
    }))
}

fn finish(d: &mut Deployment, status: Status, now: i64) {
    d.status = status;
    d.requested = None;
    d.finished_at_ms = Some(now);
    d.paused_at_ms = None;
}

/// One tick at `now_ms` of every active deployment (at most one per target: the scoring
/// canary and each upstream route move independently), oldest first: each deployment's id and
/// what its tick did. One deployment's failure (Envoy's stats unreadable) does not keep the
/// others from ticking.
pub async fn tick_all(
    db: &Db,
    seed: &[u8; 32],
    opts: &CanaryOptions,
    now_ms: i64,
) -> Result<Vec<(String, Result<Option<Ticked>, CanaryError>)>, CanaryError> {
    let mut out = Vec::new();
    for d in store::active_all(db).await? {
        let id = d.id.clone();
        out.push((id, tick_deployment(db, seed, opts, d, now_ms).await));
    }
    Ok(out)
}

/// [`tick_all`], answering with the oldest active deployment's tick (none active:
/// `Ok(None)`): what a test of one deployment at a time reads.
pub async fn tick(
    db: &Db,
    seed: &[u8; 32],
    opts: &CanaryOptions,
    now_ms: i64,
) -> Result<Option<Ticked>, CanaryError> {
    match tick_all(db, seed, opts, now_ms).await?.into_iter().next() {
        Some((_, r)) => r,
        None => Ok(None),
    }
}

/// One tick of active deployment `d` (`Ok(None)` when its row moved meanwhile).
async fn tick_deployment(
    db: &Db,
    seed: &[u8; 32],
    opts: &CanaryOptions,
    d: Deployment,
    now_ms: i64,
) -> Result<Option<Ticked>, CanaryError> {
    let before = d.clone();
    let mut d = d;
    let unchanged = |d: Deployment| {
        Ok(Some(Ticked {
            deployment: d,
            event: None,
        }))
    };

    // An operator's request first.
    match d.requested {
        Some(Action::Abort) => {
            let started = std::time::Instant::now();
            let removed = withdraw(
                db,
                seed,
                &d,
                &why(&d, Reason::Manual, "aborted by an operator"),
                now_ms,
            )
            .await?;
            if removed {
                rollbacks_total().with_label_values(&["manual"]).inc();
                rollback_seconds().observe(started.elapsed().as_secs_f64());
            }
            finish(&mut d, Status::Aborted, now_ms);
            let reason = if route(&d).is_some() {
                "aborted by an operator; the route's canary weight is 0, its stable cluster serves everything"
            } else {
                "aborted by an operator; the canary alias is removed, the champion serves everything"
            };
            return commit(db, &before, d, "aborted", reason, None, now_ms).await;
        }
        Some(Action::Pause) if d.status == Status::Running || d.status == Status::Pending => {
            d.status = Status::Paused;
            d.requested = None;
            d.paused_at_ms = Some(now_ms);
            return commit(
                db,
                &before,
                d,
                "paused",
                "paused by an operator; the weight holds and no step advances",
                None,
                now_ms,
            )
            .await;
        }
        Some(Action::Resume) if d.status == Status::Paused => {
            let paused_for = now_ms - d.paused_at_ms.unwrap_or(now_ms);
            // The step's remaining time is what it had when paused.
            d.step_due_at_ms = d.step_due_at_ms.map(|t| t + paused_for);
            d.status = if d.step_started_at_ms.is_some() {
                Status::Running
            } else {
                Status::Pending
            };
            d.requested = None;
            d.paused_at_ms = None;
            let reason = format!(
                "resumed by an operator after {} s paused; the step's due time moves by as much",
                paused_for / 1000
            );
            return commit(db, &before, d, "resumed", &reason, None, now_ms).await;
        }
        Some(_) => {
            // A request that no longer applies (a pause of a paused one): drop it.
            d.requested = None;
            if !store::transition(db, &d, None, now_ms).await? {
                return Ok(None);
            }
            d.revision += 1;
            return unchanged(d);
        }
        None => {}
    }
    if d.status == Status::Paused {
        return unchanged(d);
    }

    // The aliases are the controller's while it runs: a change by hand aborts it.
    let champion = alias(db, CHAMPION).await?;
    if route(&d).is_none() && champion.as_deref() != Some(d.control_version.as_str()) {
        remove_canary(
            db,
            seed,
            &d,
            &why(&d, Reason::Manual, "the champion changed"),
            now_ms,
        )
        .await?;
        finish(&mut d, Status::Aborted, now_ms);
        let reason = format!(
            "the champion is now {} (not the control {}): the comparison no longer holds; the canary alias is removed",
            champion.unwrap_or_else(|| "unset".into()),
            before.control_version
        );
        return commit(db, &before, d, "aborted", &reason, None, now_ms).await;
    }

    if d.status == Status::Pending {
        let Some(first) = d.schedule.first().copied() else {
            finish(&mut d, Status::Aborted, now_ms);
            return commit(db, &before, d, "aborted", "empty schedule", None, now_ms).await;
        };
        let w = why(
            &d,
            Reason::Gate,
            &format!("step 0 ({} %)", first.weight * 100.0),
        );
        match set_traffic(db, seed, opts, &mut d, first.weight, &w, now_ms).await {
            Ok(()) => {}
            // Envoy's stats unreadable: stay pending, the next tick tries again.
            Err(e @ CanaryError::EnvoyStats(_)) => return Err(e),
            Err(CanaryError::Registry(
                e @ (registry::RegistryError::ConflictWith { .. }
                | registry::RegistryError::Integrity(_)
                | registry::RegistryError::NoModel(_)
                | registry::RegistryError::Invalid(_)),
            )) => {
                finish(&mut d, Status::Aborted, now_ms);
                let reason = format!("could not set the canary alias: {e}");
                return commit(db, &before, d, "aborted", &reason, None, now_ms).await;
            }
            Err(e) => return Err(e),
        }
        d.status = Status::Running;
        d.current_step = 0;
        d.step_started_at_ms = Some(now_ms);
        d.step_due_at_ms = Some(now_ms + i64::try_from(first.duration_ms).unwrap_or(i64::MAX));
        let reason = format!(
            "canary {} at {} % of traffic against champion {}",
            d.canary_version,
            first.weight * 100.0,
            d.control_version
        );
        return commit(db, &before, d, "started", &reason, None, now_ms).await;
    }

    // Running.
    if route(&d).is_none() && canary_alias(db).await?.as_deref() != Some(d.canary_version.as_str())
    {
        finish(&mut d, Status::Aborted, now_ms);
        return commit(
            db,
            &before,
            d,
            "aborted",
            "the canary alias was moved or removed outside the controller",
            None,
            now_ms,
        )
        .await;
    }
    let started = d.step_started_at_ms.unwrap_or(now_ms);
    let due = d.step_due_at_ms.unwrap_or(now_ms);
    // At 100 % the control serves nobody in the step: it is compared over the whole run.
    let all_traffic = d
        .schedule
        .get(d.current_step as usize)
        .is_some_and(|s| s.weight >= 1.0);
    let control_since = if all_traffic {
        d.created_at_ms
    } else {
        started
    };
    let check = match route(&d) {
        None => {
            let (canary, control) = arms(&d);
            gates::check(
                db,
                &d.gates,
                &canary,
                &control,
                (started, control_since),
                now_ms.max(started + 1),
            )
            .await?
        }
        Some(_) => {
            let scraped = super::envoy_stats::scrape(
                &opts.envoy_admins,
                &d.control_version,
                &d.canary_version,
            )
            .await;
            if let Err(e) = &scraped {
                tracing::warn!(deployment = %d.id, error = %e, "upstream canary: no Envoy stats");
            }
            super::envoy_stats::check(
                &d,
                &scraped,
                all_traffic,
                (started, now_ms.max(started + 1)),
            )
        }
    };
    d.last_check = Some(check.clone());
    let names = |c: &HealthCheck| {
        c.failed_gates
            .iter()
            .map(|g| g.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let step_no = d.current_step;
    let enough = check.canary.requests >= d.min_requests;
    let max_hold = i64::try_from(opts.max_hold.as_millis()).unwrap_or(i64::MAX);
    let rollback_reason = if check.recommendation == Recommendation::Rollback {
        let critical = check.gates.iter().any(|g| g.critical);
        Some(if critical {
            format!(
                "critical gate: containment below {} % (failed: {})",
                gates::CRITICAL_CONTAINMENT * 100.0,
                names(&check)
            )
        } else {
            format!(
                "{} gates failed: {}",
                check.failed_gates.len(),
                names(&check)
            )
        })
    } else if now_ms >= due + max_hold
        && (check.recommendation != Recommendation::Continue || !enough)
    {
        Some(if enough {
            format!(
                "held {} s past the step's end without passing (failed: {})",
                (now_ms - due) / 1000,
                names(&check)
            )
        } else {
            format!(
                "held {} s past the step's end with {} of {} canary requests",
                (now_ms - due) / 1000,
                check.canary.requests,
                d.min_requests
            )
        })
    } else if now_ms >= due && enough && check.failed_gates.len() >= 2 {
        Some(format!(
            "step ended with {} gates failed or without data: {}",
            check.failed_gates.len(),
            names(&check)
        ))
    } else {
        None
    };
    if let Some(reason) = rollback_reason {
        let t = std::time::Instant::now();
        withdraw(
            db,
            seed,
            &d,
            &why(
                &d,
                Reason::AutoRevert,
                &format!("rolled back at step {step_no}"),
            ),
            now_ms,
        )
        .await?;
        rollbacks_total().with_label_values(&["auto"]).inc();
        rollback_seconds().observe(t.elapsed().as_secs_f64());
        finish(&mut d, Status::RolledBack, now_ms);
        return commit(db, &before, d, "rolled_back", &reason, Some(&check), now_ms).await;
    }
    if now_ms < due {
        // Mid-step: keep the check for the status page, no transition.
        if !store::transition(db, &d, None, now_ms).await? {
            return Ok(None);
        }
        d.revision += 1;
        return unchanged(d);
    }
    if check.recommendation != Recommendation::Continue || !enough {
        let already = store::last_event(db, &d.id)
            .await?
            .is_some_and(|(k, s)| k == "held" && s == step_no);
        if already {
            if !store::transition(db, &d, None, now_ms).await? {
                return Ok(None);
            }
            d.revision += 1;
            return unchanged(d);
        }
        let reason = if enough {
            format!("step {step_no} is due but does not pass (failed: {}); held up to {} s, then rolled back", names(&check), max_hold / 1000)
        } else {
            format!("step {step_no} is due with {} of {} canary requests; held up to {} s, then rolled back", check.canary.requests, d.min_requests, max_hold / 1000)
        };
        return commit(db, &before, d, "held", &reason, Some(&check), now_ms).await;
    }
    // The step passed.
    step_seconds().observe((now_ms - started).max(0) as f64 / 1000.0);
    let next = step_no as usize + 1;
    if next >= d.schedule.len() {
        // An upstream canary's cluster becomes the route's stable one, the other's weight 0,
        // in one bundle (docs/CANARY.md, "Upstream routes").
        let reason = if let Some(r) = route(&d) {
            let key = d.upstream_base.as_ref().map(|b| b.key).unwrap_or_default();
            super::upstream::promote(db, seed, r, key, now_ms).await?;
            format!(
                "every step passed: {} is the stable cluster of upstream {r} (weight 0 for {}, whose backend takes the route's next canary)",
                before.canary_version, before.control_version
            )
        } else {
            let w = why(&d, Reason::Gate, "promoted");
            registry::move_alias(db, seed, CHAMPION, &d.canary_version, None, &w, now_ms).await?;
            remove_canary(db, seed, &d, &w, now_ms).await?;
            format!(
                "every step passed: {} is the champion",
                before.canary_version
            )
        };
        finish(&mut d, Status::Promoted, now_ms);
        return commit(db, &before, d, "promoted", &reason, Some(&check), now_ms).await;
    }
    let mut step = d.schedule[next];
    let accelerated = check.excellent;
    if accelerated {
        step.duration_ms = (step.duration_ms as f64 * gates::ACCELERATION_FACTOR).round() as u64;
        d.schedule[next] = step;
    }
    let w = why(
        &d,
        Reason::Gate,
        &format!("step {next} ({} %)", step.weight * 100.0),
    );
    set_traffic(db, seed, opts, &mut d, step.weight, &w, now_ms).await?;
    d.current_step = u32::try_from(next).unwrap_or(u32::MAX);
    d.step_started_at_ms = Some(now_ms);
    d.step_due_at_ms = Some(now_ms + i64::try_from(step.duration_ms).unwrap_or(i64::MAX));
    d.last_check = None;
    let reason = if accelerated {
        format!(
            "step {step_no} passed with every gate beating its threshold by more than {} %: step {next} at {} % for {} s (accelerated by {} %)",
            gates::ACCELERATION_MARGIN * 100.0,
            step.weight * 100.0,
            step.duration_ms / 1000,
            (1.0 - gates::ACCELERATION_FACTOR) * 100.0
        )
    } else {
        format!(
            "step {step_no} passed: step {next} at {} % for {} s",
            step.weight * 100.0,
            step.duration_ms / 1000
        )
    };
    commit(db, &before, d, "step", &reason, Some(&check), now_ms).await
}

/// A scoring canary's two arms in the decision log.
fn arms(d: &Deployment) -> (ArmOf<'_>, ArmOf<'_>) {
    (
        ArmOf {
            arm: "canary",
            version: &d.canary_version,
        },
        ArmOf {
            arm: "champion",
            version: &d.control_version,
        },
    )
}

/// Compares the newest simulation of this canary's model with what its arm measured over the
/// whole run (logged, never fatal: the canary's outcome stands either way).
async fn record_accuracy(db: &Db, d: &Deployment, now: i64) {
    let (canary, control) = arms(d);
    let measured = gates::window_stats(
        db,
        &canary,
        &control,
        (d.created_at_ms, d.created_at_ms),
        now + 1,
    )
    .await;
    let res = match measured {
        Ok((c, _)) => {
            crate::simulator::record_accuracy(
                db,
                &d.id,
                &d.canary_version,
                c.escalation_rate.unwrap_or(0.0),
                c.requests,
            )
            .await
        }
        Err(e) => Err(e),
    };
    match res {
        Ok(Some(a)) => {
            tracing::info!(deployment = %d.id, accuracy = a.accuracy, "simulator accuracy recorded")
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(deployment = %d.id, error = %e, "simulator accuracy not recorded"),
    }
}
