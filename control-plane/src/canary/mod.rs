//! The canary controller (issue 7): a persisted state machine that moves the registry's
//! `canary` alias step by step while its gates hold, and promotes or rolls back.
//!
//! ```text
//!   start ──▶ pending ──tick──▶ running(step 0) ──due, gates pass──▶ running(step k+1) … ─▶ promoted
//!                                 │    ▲   │ due, 1 gate fails: held (≤ max_hold), then ─┐
//!                          pause  │    │   │ critical gate / ≥ 2 measured failures ──────┴─▶ rolled_back
//!                                 ▼    │ resume
//!                               paused ┘          abort (any active state) ──▶ aborted
//! ```
//!
//! * Only the replica holding the [`LEASE`] ticks ([`controller::tick`], every `[canary]
//!   tick_every`); the API and the CLI record an operator's request (pause, resume, abort) in
//!   the deployment's row and the leader applies it at its next tick, so two replicas never
//!   move one canary. Every write of the row is a compare-and-set on its revision.
//! * The weight moves through the registry's own functions ([`crate::registry::move_canary`],
//!   [`crate::registry::move_alias`], [`crate::registry::remove_alias`]): each publishes the
//!   next signed bundle, which every filter takes within one poll interval.
//! * Every transition is an event ([`store::Event`]) with its reason and the gate values.
//! * Time is the caller's (`now_ms`): the tick is a plain function tests call with any clock.

pub mod api;
pub mod bench;
pub mod controller;
pub mod envoy_stats;
pub mod gates;
pub mod options;
pub mod store;
#[cfg(test)]
mod tests;
pub mod upstream;
#[cfg(test)]
mod upstream_tests;

pub use gates::{Gates, HealthCheck};
pub use options::{CanaryOptions, Step};
pub use store::{Deployment, Event, Status};

use crate::store::Db;
use serde::{Deserialize, Serialize};

/// Lease of the controller's tick.
pub const LEASE: &str = "canary-controller";
/// Longest deployment name.
pub const MAX_NAME_CHARS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    #[error("{0}")]
    Invalid(String),
    #[error("no canary deployment {0}")]
    NotFound(String),
    /// A conflict with its own stable code (`canary_active`, `canary_in_use`, `not_champion`,
    /// `not_active`, …).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// An upstream canary could not read Envoy's stats (the controller retries next tick).
    #[error(transparent)]
    EnvoyStats(#[from] envoy_stats::ScrapeError),
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
}

fn conflict(code: &'static str, message: impl Into<String>) -> CanaryError {
    CanaryError::Conflict {
        code,
        message: message.into(),
    }
}

/// `POST /v1/operator/canary/start`.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CanaryStartRequest)]
pub struct StartRequest {
    /// 1..=64 characters of A-Z a-z 0-9 . _ -
    #[schema(max_length = 64)]
    pub name: String,
    /// What the canary moves: absent for a scoring version (a registered model), or
    /// `upstream:<name>` for the canary cluster of a configured `[[upstream]]` route.
    #[serde(default)]
    #[schema(max_length = 80)]
    pub target: Option<String>,
    /// The current champion's version (the control arm); empty for an upstream target (the
    /// route's stable cluster is the control).
    #[serde(default)]
    #[schema(max_length = 128)]
    pub control_version: String,
    /// A registered version to canary; empty for an upstream target.
    #[serde(default)]
    #[schema(max_length = 128)]
    pub canary_version: String,
    /// An upstream target's hash key: `tenant` (default, sticky per tenant) or `request`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub key: Option<kakeya_core::upstream::UpstreamKey>,
    #[serde(default)]
    pub gates: Gates,
    /// The schedule; default `[canary] weights` and `durations`.
    #[serde(default)]
    pub steps: Option<Vec<Step>>,
    /// Fewest canary decisions a step needs to pass; default `[canary] min_requests`.
    #[serde(default)]
    pub min_requests: Option<u64>,
}

/// What `start` answers.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = CanaryStarted)]
pub struct Started {
    pub deployment_id: String,
    pub steps: Vec<Step>,
}

fn check_version(what: &str, v: &str) -> Result<(), CanaryError> {
    if v.is_empty() || v.len() > 128 {
        return Err(CanaryError::Invalid(format!(
            "{what} must be 1..=128 characters"
        )));
    }
    Ok(())
}

/// Records a new deployment (`pending`; the leader's next tick starts it). Refused while
/// another is active on the same target (409 `canary_active`; the scoring alias and each
/// upstream route are separate targets), while the canary alias is set by hand (409
/// `canary_in_use`), when `control_version` is not the champion (409 `not_champion`) or the
/// canary version is not registered (404) or is the champion (400).
pub async fn start(
    db: &Db,
    opts: &CanaryOptions,
    req: &StartRequest,
    now_ms: i64,
) -> Result<Started, CanaryError> {
    let name_ok = (1..=MAX_NAME_CHARS).contains(&req.name.len())
        && req
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !name_ok {
        return Err(CanaryError::Invalid(format!(
            "name must be 1..={MAX_NAME_CHARS} characters of A-Z a-z 0-9 . _ -"
        )));
    }
    req.gates.validate().map_err(CanaryError::Invalid)?;
    let steps = req.steps.clone().unwrap_or_else(|| opts.steps.clone());
    options::check_steps(&steps).map_err(|m| CanaryError::Invalid(format!("steps: {m}")))?;
    let min_requests = req.min_requests.unwrap_or(opts.min_requests);
    if min_requests > 1_000_000_000 {
        return Err(CanaryError::Invalid(
            "min_requests must be at most 1000000000".into(),
        ));
    }
    if let Some(t) = &req.target {
        return start_upstream(db, opts, req, t, &steps, min_requests, now_ms).await;
    }
    if req.key.is_some() {
        return Err(CanaryError::Invalid(
            "key applies to an upstream target only (a scoring canary keys by tenant)".into(),
        ));
    }
    check_version("control_version", &req.control_version)?;
    check_version("canary_version", &req.canary_version)?;
    if req.control_version == req.canary_version {
        return Err(CanaryError::Invalid(
            "canary_version must differ from control_version".into(),
        ));
    }
    if crate::registry::get_model(db, &req.canary_version)
        .await?
        .is_none()
    {
        return Err(CanaryError::NotFound(format!(
            "model {} (register it first)",
            req.canary_version
        )));
    }
    let aliases = {
        let mut conn = db.pool.acquire().await?;
        crate::registry::aliases(&mut conn).await?
    };
    let version_of = |a: &str| {
        aliases
            .iter()
            .find(|r| r.alias == a)
            .map(|r| r.version.clone())
    };
    if version_of(crate::registry::CHAMPION).as_deref() != Some(req.control_version.as_str()) {
        return Err(conflict(
            "not_champion",
            format!(
                "control_version {} is not the champion ({}); a canary runs against the serving champion",
                req.control_version,
                version_of(crate::registry::CHAMPION).unwrap_or_else(|| "none".into())
            ),
        ));
    }
    if let Some(v) = version_of(crate::registry::CANARY) {
        return Err(conflict(
            "canary_in_use",
            format!("the canary alias is set by hand ({v}); remove it (kakeya model remove-canary) first"),
        ));
    }
    let id = format!("canary-{}-{}", req.name, now_ms / 1000);
    let d = store::NewDeployment {
        id: &id,
        name: &req.name,
        control_version: &req.control_version,
        canary_version: &req.canary_version,
        steps: &steps,
        gates: &req.gates,
        min_requests,
        now_ms,
        target: None,
    };
    insert(db, d).await
}

/// The target a deployment moves, as said in messages.
fn target_words(target: Option<&str>) -> String {
    match upstream::target_route(target) {
        Some(r) => format!("upstream route {r}"),
        None => "the scoring canary alias".into(),
    }
}

/// Records `d` unless a deployment of its target is active (409 `canary_active`, naming it;
/// the partial unique index of migration 0036 decides a race).
async fn insert(db: &Db, d: store::NewDeployment<'_>) -> Result<Started, CanaryError> {
    let target = d.target.map(|(t, _)| t);
    let busy = |other: Option<String>| {
        conflict(
            "canary_active",
            match other {
                Some(id) => format!(
                    "deployment {id} is active (pending, running or paused) on {}: one canary per target at a time; abort it or wait for it to finish",
                    target_words(target)
                ),
                None => format!(
                    "a deployment of this name started this second, or another became active on {} meanwhile; retry",
                    target_words(target)
                ),
            },
        )
    };
    if let Some(other) = store::active_on(db, target).await? {
        return Err(busy(Some(other.id)));
    }
    if !store::insert(db, &d).await? {
        let other = store::active_on(db, target).await?.map(|o| o.id);
        return Err(busy(other));
    }
    Ok(Started {
        deployment_id: d.id.to_string(),
        steps: d.steps.to_vec(),
    })
}

/// [`start`] of an upstream route's canary cluster (`target = upstream:<name>`): the route
/// must be configured (`[[upstream]]`) and take no traffic on its canary yet; the versions are
/// the route's two clusters.
async fn start_upstream(
    db: &Db,
    opts: &CanaryOptions,
    req: &StartRequest,
    target: &str,
    steps: &[Step],
    min_requests: u64,
    now_ms: i64,
) -> Result<Started, CanaryError> {
    let Some(route) = upstream::target_route(Some(target)) else {
        return Err(CanaryError::Invalid(format!(
            "target must be upstream:<name> (got {target:?}); leave it out for a scoring canary"
        )));
    };
    if !opts.upstreams.iter().any(|u| u == route) {
        return Err(CanaryError::NotFound(format!(
            "upstream route {route} (configured: {}; add it as [[upstream]] in kakeya.toml)",
            if opts.upstreams.is_empty() {
                "none".to_string()
            } else {
                opts.upstreams.join(", ")
            }
        )));
    }
    if !req.control_version.is_empty() || !req.canary_version.is_empty() {
        return Err(CanaryError::Invalid(
            "control_version and canary_version apply to scoring canaries; an upstream canary compares its route's stable and canary clusters".into(),
        ));
    }
    let w = upstream::weight(db, route).await?;
    if w > 0.0 {
        return Err(conflict(
            "canary_in_use",
            format!("upstream {route} already sends {} % to its canary side outside a deployment: kakeya canary clear-upstream {route} (or POST /v1/operator/canary/upstream/{route}/clear) first", w * 100.0),
        ));
    }
    // After a promotion the route's stable cluster is its `canary` one, and the next canary
    // runs on the other (blue/green).
    let serving = upstream::stable_cluster(db, route).await?;
    let (stable, canary) = (
        upstream::cluster_name(route, serving),
        upstream::cluster_name(route, serving.other()),
    );
    let id = format!("canary-{}-{}", req.name, now_ms / 1000);
    let base = envoy_stats::Base {
        key: req.key.unwrap_or_default(),
        ..Default::default()
    };
    let d = store::NewDeployment {
        id: &id,
        name: &req.name,
        control_version: &stable,
        canary_version: &canary,
        steps,
        gates: &req.gates,
        min_requests,
        now_ms,
        target: Some((target, &base)),
    };
    insert(db, d).await
}

/// An operator's request, applied by the leader's next tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Pause,
    Resume,
    Abort,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Abort => "abort",
        }
    }
}

/// Records `action` for deployment `id`: 404 unknown, 409 `not_active` when it is finished,
/// `not_running` for a pause of a deployment not running, `not_paused` for a resume of one not
/// paused. An abort replaces any other pending request.
pub async fn request(db: &Db, id: &str, action: Action) -> Result<Deployment, CanaryError> {
    let d = store::get(db, id)
        .await?
        .ok_or_else(|| CanaryError::NotFound(id.to_string()))?;
    if !d.status.is_active() {
        return Err(conflict(
            "not_active",
            format!(
                "deployment {id} is {}: nothing to {}",
                d.status.as_str(),
                action.as_str()
            ),
        ));
    }
    match action {
        Action::Pause if d.status != Status::Running && d.status != Status::Pending => {
            return Err(conflict(
                "not_running",
                format!("deployment {id} is {}", d.status.as_str()),
            ))
        }
        Action::Resume if d.status != Status::Paused => {
            return Err(conflict(
                "not_paused",
                format!("deployment {id} is {}", d.status.as_str()),
            ))
        }
        _ => {}
    }
    if !store::set_request(db, id, action).await? {
        return Err(conflict(
            "not_active",
            format!("deployment {id} finished meanwhile"),
        ));
    }
    store::get(db, id)
        .await?
        .ok_or_else(|| CanaryError::NotFound(id.to_string()))
}

/// Registers the canary metrics in `registry` (called by [`crate::metrics::Metrics::new`]).
pub fn register_metrics(registry: &prometheus::Registry) -> prometheus::Result<()> {
    registry.register(Box::new(controller::outcomes_total().clone()))?;
    registry.register(Box::new(controller::rollbacks_total().clone()))?;
    // Both triggers exported from the start (at 0), so an alert on them has a series to read.
    for trigger in ["auto", "manual"] {
        controller::rollbacks_total().with_label_values(&[trigger]);
    }
    registry.register(Box::new(controller::rollback_seconds().clone()))?;
    registry.register(Box::new(controller::step_seconds().clone()))?;
    Ok(())
}
