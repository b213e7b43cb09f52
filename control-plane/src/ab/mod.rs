//! A/B experiments: a registered model (the treatment) against the champion (the control) on
//! a share of the tenants, with statistics computed from the decision log and the labels.
//!
//! An experiment drives the served bundle. Its start makes the treatment the challenger with
//! weight = `traffic_split`, and every bundle published while it runs carries
//! `policy.arm_key = tenant` and `policy.experiment = <id>` ([`publication_policy`], called by
//! the registry's one publication path): a tenant's arm is
//! `experiment_bucket(id, tenant) < split × 10,000` ([`kakeya_core::bundle::experiment_bucket`]),
//! the same in every bundle of the experiment, independent between experiments.
//!
//! * Start ([`start`]): the control must be the current champion (else 409
//!   `control_not_champion`: an experiment never changes what the other tenants get; promote
//!   first), no challenger may be set (409 `challenger_in_use`), no canary either (409
//!   `canary_in_use`), at most one experiment is pending or running (one scope, `global`,
//!   enforced by a unique index: 409 `experiment_running`).
//! * Canaries: while an experiment is pending or running, no canary may be set (409
//!   `experiment_running`), and an experiment does not start while a canary is set. Both are
//!   checked under the publication lock ([`publication_policy`]). Why exclusion rather than the
//!   canary taking its share first (which the filter would do): a canary's weight rises step
//!   by step, and every step would move tenants out of the experiment's arms, so "a tenant never
//!   flips arm" would no longer hold and the arms' populations would drift during the
//!   experiment, biasing its statistics; and a canary on the experiment's control would be
//!   measured against a control that is itself part of a running comparison.
//! * Stop ([`stop`], [`expire_due`]): removes the challenger; the publication that removes it
//!   ends the experiment (`stopped`, or `completed` at `ends_at`). Any other alias change that
//!   breaks its arms (a promotion, another challenger or weight, a removal) ends it as well,
//!   with `stop_reason = aliases_changed`, in the same transaction.
//! * Statistics ([`stats`]): the decision-log rows scored by the experiment's bundles
//!   (`first_bundle_version ≤ bundle_version < end_bundle_version`), per arm.
//!
//! Alias changes go through [`move_challenger`] only.

pub mod api;
pub mod stats;
pub mod store;
#[cfg(test)]
mod tests;

use crate::registry::{
    self, Actor, AliasRow, Published, RegistryError, Why, CANARY, CHALLENGER, CHAMPION,
};
use crate::store::Db;
use kakeya_core::bundle::{is_experiment_id, ArmKey, Policy};
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use std::time::Duration;

/// The one scope for now: one experiment at a time on the whole deployment.
pub const SCOPE: &str = "global";
/// Longest accepted experiment name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Shortest and longest accepted duration.
pub const MIN_DURATION: Duration = Duration::from_secs(60);
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);
/// How often `kakeya serve` ends experiments past their `ends_at` ([`expire_due`]).
pub const EXPIRY_TICK: Duration = Duration::from_secs(5);

/// Where an experiment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Its start is publishing (milliseconds).
    Pending,
    Running,
    /// Ended at `ends_at`.
    Completed,
    /// Ended by an operator or by an alias change outside the experiment.
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Stopped => "stopped",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::Running,
            Status::Completed,
            Status::Stopped,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// Why an experiment ended (or is ending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `POST /v1/hrs/ab/{id}/stop` or `kakeya hrs ab stop`.
    Manual,
    /// `ends_at` was reached.
    Expired,
    /// An alias change outside the experiment broke its arms.
    AliasesChanged,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Manual => "manual",
            StopReason::Expired => "expired",
            StopReason::AliasesChanged => "aliases_changed",
        }
    }

    fn parse(s: &str) -> Option<StopReason> {
        [
            StopReason::Manual,
            StopReason::Expired,
            StopReason::AliasesChanged,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    /// The status an experiment ends with.
    fn final_status(self) -> Status {
        match self {
            StopReason::Expired => Status::Completed,
            _ => Status::Stopped,
        }
    }
}

/// A stored experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Experiment {
    /// `ab-<name>-<unix seconds>`.
    pub id: String,
    pub name: String,
    /// `global`: one experiment at a time.
    pub scope: String,
    /// The champion's model version (arm `champion` of the decision log).
    pub control: String,
    /// The challenger's model version (arm `challenger`).
    pub treatment: String,
    /// Share of tenants scored by the treatment, in (0, 1).
    pub traffic_split: f64,
    pub status: Status,
    pub started_at_ms: i64,
    pub ends_at_ms: i64,
    /// Set when a stop is requested (the row is still `running` until the challenger is gone)
    /// and kept when it ends.
    pub stop_reason: Option<StopReason>,
    pub stopped_at_ms: Option<i64>,
    /// The bundle its start published, the first to carry its salt.
    pub first_bundle_version: Option<i64>,
    /// The bundle that ended it; its decisions were scored by bundles in
    /// [first_bundle_version, end_bundle_version).
    pub end_bundle_version: Option<i64>,
}

/// `POST /v1/hrs/ab/start` and `kakeya hrs ab start`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// 1..=64 characters of `A-Z a-z 0-9 . _ -`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// The current champion's model version.
    #[schema(min_length = 1)]
    pub control: String,
    /// A registered model version other than the control.
    #[schema(min_length = 1)]
    pub treatment: String,
    /// Share of tenants the treatment scores, strictly between 0 and 1 (honoured to 1/10,000).
    #[schema(exclusive_minimum = 0.0, exclusive_maximum = 1.0)]
    pub traffic_split: f64,
    /// How long it runs: `90m`, `36h`, `7d`, `1h 30m` (humantime), from 1 minute to 366 days.
    #[schema(min_length = 1, max_length = 64)]
    pub duration: String,
}

/// What a start answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Started {
    pub experiment_id: String,
    /// RFC 3339, UTC.
    pub ends_at: String,
    pub ends_at_ms: i64,
    /// The bundle that started it (treatment as the challenger, salted split).
    pub bundle_version: i64,
    pub experiment: Experiment,
}

/// Who acts on an experiment (recorded with its alias moves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// The admin API.
    Api,
    /// `kakeya hrs ab …`.
    Cli,
    /// The expiry job of `kakeya serve`.
    Expiry,
}

#[derive(Debug, thiserror::Error)]
pub enum AbError {
    #[error("{0}")]
    Invalid(String),
    #[error("no experiment {0}")]
    NoExperiment(String),
    #[error("control {control} is not the champion ({champion}); promote it first")]
    ControlNotChampion { control: String, champion: String },
    #[error("a challenger ({0}) is set; remove it before starting an experiment")]
    ChallengerInUse(String),
    #[error("a canary ({0}) is set; remove it before starting an experiment")]
    CanaryInUse(String),
    #[error("experiment {0} is already running; stop it first (one experiment at a time)")]
    Running(String),
    #[error("experiment {id} is {status}, not running", status = .status.as_str())]
    NotRunning { id: String, status: Status },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
}

/// Parses a duration such as `7d`, `36h`, `90m` or `1h 30m` (humantime's syntax) within
/// [`MIN_DURATION`]..=[`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, AbError> {
    let bad = |why: String| AbError::Invalid(format!("duration {s:?}: {why}"));
    if s.len() > 64 {
        return Err(AbError::Invalid(
            "duration must be at most 64 characters".into(),
        ));
    }
    let d = humantime::parse_duration(s.trim()).map_err(|e| bad(e.to_string()))?;
    if d < MIN_DURATION || d > MAX_DURATION {
        return Err(bad("must be from 1 minute to 366 days".into()));
    }
    Ok(d)
}

/// Validates a start; returns its duration in ms.
fn check_start(r: &StartRequest) -> Result<i64, AbError> {
    let name_ok = (1..=MAX_NAME_CHARS).contains(&r.name.len())
        && r.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !name_ok {
        return Err(AbError::Invalid(format!(
            "name must be 1..={MAX_NAME_CHARS} characters of A-Z a-z 0-9 . _ -"
        )));
    }
    if !(r.traffic_split > 0.0 && r.traffic_split < 1.0) {
        return Err(AbError::Invalid(
            "traffic_split must be strictly between 0 and 1".into(),
        ));
    }
    if r.control.is_empty() || r.treatment.is_empty() {
        return Err(AbError::Invalid(
            "control and treatment must name model versions".into(),
        ));
    }
    if r.control == r.treatment {
        return Err(AbError::Invalid(
            "treatment must differ from control".into(),
        ));
    }
    let d = parse_duration(&r.duration)?;
    Ok(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// RFC 3339 (UTC, milliseconds) of an epoch-ms time.
pub fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// Starts an experiment (see the module docs): validates, checks that none is running, that
/// both models load (registered, integrity intact), that the control is the champion and no
/// challenger is set,
/// records it `pending`, and makes the treatment the challenger; the publication marks it
/// `running` with that bundle. On any failure nothing stays changed.
pub async fn start(
    db: &Db,
    seed: &[u8; 32],
    r: &StartRequest,
    by: By,
    now_ms: i64,
) -> Result<Started, AbError> {
    let duration_ms = check_start(r)?;
    if let Some(a) = store::active(&db.pool).await? {
        return Err(AbError::Running(a.id));
    }
    let key = registry::keys::public_key_b64(seed);
    for v in [&r.control, &r.treatment] {
        registry::verified_model(db, v, &key).await?;
    }
    {
        let mut conn = db.pool.acquire().await?;
        let al = registry::aliases(&mut conn).await?;
        let champion = alias(&al, CHAMPION).map(|a| a.version.clone());
        if champion.as_deref() != Some(r.control.as_str()) {
            return Err(AbError::ControlNotChampion {
                control: r.control.clone(),
                champion: champion.unwrap_or_else(|| "none".into()),
            });
        }
        if let Some(c) = alias(&al, CHALLENGER) {
            return Err(AbError::ChallengerInUse(c.version.clone()));
        }
        if let Some(c) = alias(&al, CANARY) {
            return Err(AbError::CanaryInUse(c.version.clone()));
        }
    }
    let e = Experiment {
        id: format!("ab-{}-{}", r.name, now_ms.div_euclid(1000)),
        name: r.name.clone(),
        scope: SCOPE.into(),
        control: r.control.clone(),
        treatment: r.treatment.clone(),
        traffic_split: r.traffic_split,
        status: Status::Pending,
        started_at_ms: now_ms,
        ends_at_ms: now_ms.saturating_add(duration_ms),
        stop_reason: None,
        stopped_at_ms: None,
        first_bundle_version: None,
        end_bundle_version: None,
    };
    if !store::insert_pending(&db.pool, &e).await? {
        return Err(match store::active(&db.pool).await? {
            Some(a) => AbError::Running(a.id),
            None => AbError::Invalid(format!(
                "an experiment {} exists already; wait a second or pick another name",
                e.id
            )),
        });
    }
    let to = Some((r.treatment.as_str(), r.traffic_split));
    let published = match move_challenger(db, seed, to, &e.id, by, now_ms).await {
        Ok(p) => p,
        Err(err) => {
            store::delete_pending(&db.pool, &e.id).await?;
            return Err(err.into());
        }
    };
    let e = store::get(&db.pool, &e.id)
        .await?
        .ok_or_else(|| AbError::NoExperiment(e.id.clone()))?;
    tracing::info!(experiment = %e.id, bundle = published.bundle_version, "A/B experiment started");
    Ok(Started {
        experiment_id: e.id.clone(),
        ends_at: rfc3339(e.ends_at_ms),
        ends_at_ms: e.ends_at_ms,
        bundle_version: published.bundle_version,
        experiment: e,
    })
}

/// Ends a running experiment: records the stop `reason`, then removes the challenger; that
/// publication ends it (`stopped`, or `completed` for [`StopReason::Expired`]). 409 when it is
/// not running.
pub async fn stop(
    db: &Db,
    seed: &[u8; 32],
    id: &str,
    reason: StopReason,
    by: By,
    now_ms: i64,
) -> Result<Experiment, AbError> {
    if !store::request_stop(&db.pool, id, reason).await? {
        return Err(match store::get(&db.pool, id).await? {
            None => AbError::NoExperiment(id.into()),
            Some(e) => AbError::NotRunning {
                id: id.into(),
                status: e.status,
            },
        });
    }
    match move_challenger(db, seed, None, id, by, now_ms).await {
        Ok(_) => {}
        // Another stop removed it first (the experiment has ended), or the challenger is gone
        // without a publication (the aliases table was written outside the control plane):
        // then publishing the aliases as they are ends it.
        Err(RegistryError::NoChallenger) => {
            let still = store::get(&db.pool, id).await?;
            if still.is_some_and(|e| e.status == Status::Running) {
                registry::republish(db, seed, now_ms).await?;
            }
        }
        Err(e) => return Err(e.into()),
    }
    let e = store::get(&db.pool, id)
        .await?
        .ok_or_else(|| AbError::NoExperiment(id.into()))?;
    tracing::info!(experiment = %e.id, status = e.status.as_str(), "A/B experiment ended");
    Ok(e)
}

/// Ends every running experiment whose `ends_at` is at or before `now_ms` (status
/// `completed`); returns them. `kakeya serve` calls it every [`EXPIRY_TICK`].
pub async fn expire_due(db: &Db, seed: &[u8; 32], now_ms: i64) -> Result<Vec<Experiment>, AbError> {
    let mut done = Vec::new();
    for id in store::due(&db.pool, now_ms).await? {
        match stop(db, seed, &id, StopReason::Expired, By::Expiry, now_ms).await {
            Ok(e) => done.push(e),
            // Stopped by someone else in the meantime.
            Err(AbError::NotRunning { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The experiment's alias moves, all of them: the treatment becomes the challenger with
/// `weight` (`to = Some`), or the challenger is removed (`None`), through the registry's
/// publication path. `experiment` and `by` say what and who moved it (for the alias history).
pub async fn move_challenger(
    db: &Db,
    seed: &[u8; 32],
    to: Option<(&str, f64)>,
    experiment: &str,
    by: By,
    now_ms: i64,
) -> Result<Published, RegistryError> {
    tracing::debug!(experiment, ?by, ?to, "A/B experiment moves the challenger");
    // Recorded in the alias history as `manual`: an operator started the experiment and set
    // its duration, so its end at `ends_at` is their move too, made by the scheduler.
    let (actor, what) = match by {
        By::Api => (Actor::AdminApi, "operator"),
        By::Cli => (Actor::cli(), "operator"),
        By::Expiry => (Actor::Scheduler, "ends_at reached"),
    };
    let comment = match to {
        Some(_) => format!("A/B experiment {experiment} started"),
        None => format!("A/B experiment {experiment} ended ({what})"),
    };
    let why = Why::manual(actor, Some(&comment));
    match to {
        Some((version, weight)) => {
            registry::move_alias(db, seed, CHALLENGER, version, Some(weight), &why, now_ms).await
        }
        None => registry::remove_alias(db, seed, CHALLENGER, &why, now_ms).await,
    }
}

fn alias<'a>(al: &'a [AliasRow], name: &str) -> Option<&'a AliasRow> {
    al.iter().find(|a| a.alias == name)
}

/// True when the aliases are the experiment's arms: champion = control, challenger =
/// treatment with weight = split.
fn arms_match(al: &[AliasRow], e: &Experiment) -> bool {
    let champion = alias(al, CHAMPION).map(|a| a.version.as_str());
    let challenger = alias(al, CHALLENGER).map(|a| (a.version.as_str(), a.weight));
    champion == Some(e.control.as_str())
        && challenger == Some((e.treatment.as_str(), e.traffic_split))
}

/// The policy of the bundle `bundle_version` that the registry is publishing from the aliases
/// `al`, inside its transaction (under the publication lock), and the experiment's state
/// change that goes with it:
///
/// * no pending or running experiment: the default policy;
/// * a canary is set while an experiment is pending (its start is publishing: refused with
///   `canary_in_use`, the start fails and changes nothing) or running with its arms intact
///   (a canary move: refused with `experiment_running`);
/// * the aliases are the experiment's arms: `arm_key = tenant`, `experiment = <id>`; a pending
///   experiment becomes `running` with `first_bundle_version = bundle_version`;
/// * a pending experiment whose treatment is being set while the arms do not match (the
///   champion changed since the start checked it): the publication is refused, so the start
///   fails and changes nothing;
/// * otherwise a pending experiment is left alone (default policy), and a running one ends
///   with this bundle as `end_bundle_version`, its requested stop reason or `aliases_changed`.
pub async fn publication_policy(
    conn: &mut AnyConnection,
    al: &[AliasRow],
    bundle_version: i64,
    now_ms: i64,
) -> Result<Policy, RegistryError> {
    let Some(e) = store::active_in(conn).await? else {
        return Ok(Policy::default());
    };
    if let Some(c) = alias(al, CANARY) {
        let refuse = |code: &'static str, message: String| {
            Err(RegistryError::ConflictWith { code, message })
        };
        match e.status {
            Status::Pending => {
                return refuse(
                    "canary_in_use",
                    format!(
                        "a canary ({}) is set; remove it before starting an experiment",
                        c.version
                    ),
                )
            }
            _ if arms_match(al, &e) => {
                return refuse(
                    "experiment_running",
                    format!(
                        "experiment {} is running; no canary while it runs (stop it first)",
                        e.id
                    ),
                )
            }
            // The experiment is ending (its arms are broken): let it end.
            _ => {}
        }
    }
    let salted = Policy {
        arm_key: ArmKey::Tenant,
        experiment: Some(e.id.clone()).filter(|id| is_experiment_id(id)),
        ..Policy::default()
    };
    match (e.status, arms_match(al, &e)) {
        (Status::Pending, true) => {
            store::mark_running(conn, &e.id, bundle_version).await?;
            Ok(salted)
        }
        (_, true) => Ok(salted),
        (Status::Pending, false) => {
            if alias(al, CHALLENGER).is_some_and(|c| c.version == e.treatment) {
                return Err(RegistryError::Conflict(format!(
                    "experiment {}: control {} is no longer the champion",
                    e.id, e.control
                )));
            }
            Ok(Policy::default())
        }
        (_, false) => {
            let reason = e.stop_reason.unwrap_or(StopReason::AliasesChanged);
            store::finish(conn, &e.id, reason, bundle_version, now_ms).await?;
            if reason == StopReason::AliasesChanged {
                tracing::warn!(experiment = %e.id, bundle = bundle_version,
                    "an alias change outside the experiment ended it");
            }
            Ok(Policy::default())
        }
    }
}
