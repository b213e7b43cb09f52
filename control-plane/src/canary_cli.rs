//! `kakeya canary …`: the canary controller's deployments on the database directly, through
//! the same functions as `/v1/operator/canary` (the leader of a running `kakeya serve` applies
//! starts and requests at its next tick).

use crate::ab_cli::print;
use anyhow::Context;
use clap::Subcommand;
use kakeya_control_plane::canary::gates::{GateName, GateStatus, Gates};
use kakeya_control_plane::canary::{self, store, Action, StartRequest, Status};
use kakeya_control_plane::config::Config;
use kakeya_control_plane::store::Db;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub enum CanaryCmd {
    /// Start a canary of CANARY_VERSION against the champion CONTROL_VERSION, or of an upstream
    /// route's canary cluster with --target upstream:NAME (recorded as pending; the leader's
    /// next tick sets the first step's weight). Prints {deployment_id, steps}.
    Start {
        /// 1..=64 characters of A-Z a-z 0-9 . _ -
        #[arg(long)]
        name: String,
        /// `upstream:NAME`: canary the canary cluster of the [[upstream]] route NAME against
        /// its stable one (gates from Envoy's stats); without it, a scoring version.
        #[arg(long)]
        target: Option<String>,
        /// The current champion's version (scoring canaries).
        #[arg(long, required_unless_present = "target", conflicts_with = "target")]
        control: Option<String>,
        /// A registered version to canary (scoring canaries).
        #[arg(long, required_unless_present = "target", conflicts_with = "target")]
        canary: Option<String>,
        /// What an upstream route's hash keys by: tenant (sticky per tenant) or request.
        #[arg(long, requires = "target", value_parser = ["tenant", "request"])]
        key: Option<String>,
        /// A JSON file with the gates body ({latency, error_budget, containment, cost, skip});
        /// default the built-in gates.
        #[arg(long)]
        gates: Option<PathBuf>,
        /// Skip these gates (a skipped gate never blocks; without data a gate fails).
        #[arg(long, value_delimiter = ',', value_parser = ["latency", "error_budget", "containment", "cost"])]
        skip: Vec<String>,
        /// Fewest canary decisions a step needs to pass; default [canary] min_requests.
        #[arg(long)]
        min_requests: Option<u64>,
    },
    /// A deployment as JSON (like GET /v1/operator/canary/status): without an id, the active
    /// one (else the newest).
    Status { id: Option<String> },
    /// Ask the controller to pause: the weight holds, no step advances.
    Pause { id: String },
    /// Ask the controller to resume a paused deployment where it was.
    Resume { id: String },
    /// Ask the controller to abort: the canary alias is removed (weight 0), the champion serves
    /// everything.
    Abort { id: String },
    /// Send all of upstream route NAME's traffic to its stable cluster again (weight 0, a
    /// new bundle): after a promoted upstream canary, once its backend is the route's stable
    /// one in [[upstream]]. Refused while a canary of the route is active.
    ClearUpstream { name: String },
    /// The deployment's transitions in order, as JSON.
    Events {
        id: String,
        /// Only events after this id.
        #[arg(long)]
        after_id: Option<i64>,
    },
    /// Follow a deployment live: a progress bar of its schedule, one line per event, until it
    /// finishes (Ctrl-C to stop watching; the canary carries on).
    Watch {
        id: Option<String>,
        /// How often to look.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        every: Duration,
    },
}

fn skip_name(s: &str) -> Option<GateName> {
    [
        GateName::Latency,
        GateName::ErrorBudget,
        GateName::Containment,
        GateName::Cost,
    ]
    .into_iter()
    .find(|g| g.as_str() == s)
}

async fn find(db: &Db, id: Option<String>) -> anyhow::Result<store::Deployment> {
    let d = match id {
        Some(id) => store::get(db, &id).await?,
        None => match store::active(db).await? {
            Some(d) => Some(d),
            None => store::list(db, 1).await?.into_iter().next(),
        },
    };
    d.context("no such canary deployment (kakeya canary status lists the newest)")
}

fn describe(d: &store::Deployment) -> String {
    let check = d.last_check.as_ref().map(|c| {
        c.gates
            .iter()
            .map(|g| {
                let s = match g.status {
                    GateStatus::Pass => "pass",
                    GateStatus::Fail => "FAIL",
                    GateStatus::NoData => "no data",
                    GateStatus::Skipped => "skipped",
                };
                format!("{} {s}", g.gate.as_str())
            })
            .collect::<Vec<_>>()
            .join(", ")
    });
    format!(
        "{} · {} % · {}",
        d.status.as_str(),
        d.traffic_percent,
        check.unwrap_or_else(|| "no check yet".into())
    )
}

async fn watch(db: &Db, id: Option<String>, every: Duration) -> anyhow::Result<()> {
    let d = find(db, id).await?;
    let pb = kakeya_control_plane::progress::bar(&d.id, u64::from(d.total_steps));
    let mut after = None;
    loop {
        let d = find(db, Some(d.id.clone())).await?;
        for e in store::events(db, &d.id, after, 1000).await? {
            pb.println(format!(
                "{} {} step {} at {} %: {}",
                e.at_ms,
                e.kind,
                e.step,
                e.weight * 100.0,
                e.reason
            ));
            after = Some(e.id);
        }
        let done = match d.status {
            Status::Promoted => u64::from(d.total_steps),
            _ => u64::from(d.current_step),
        };
        pb.set_position(done);
        pb.set_message(describe(&d));
        if !d.status.is_active() {
            pb.finish();
            eprintln!("{}: {}", d.id, d.status.as_str());
            return Ok(());
        }
        tokio::time::sleep(every).await;
    }
}

pub async fn run(mut cfg: Config, cmd: CanaryCmd) -> anyhow::Result<()> {
    let db = Db::connect(&cfg.database_url, None)
        .await
        .context("cannot open the database; check DATABASE_URL")?;
    let now = kakeya_control_plane::now_ms();
    match cmd {
        CanaryCmd::Start {
            name,
            target,
            control,
            canary: version,
            key,
            gates,
            skip,
            min_requests,
        } => {
            let mut g: Gates = match gates {
                Some(p) => {
                    let text = std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read {}", p.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not a gates body", p.display()))?
                }
                None => Gates::default(),
            };
            g.skip.extend(skip.iter().filter_map(|s| skip_name(s)));
            let req = StartRequest {
                name,
                target,
                control_version: control.unwrap_or_default(),
                canary_version: version.unwrap_or_default(),
                key: key
                    .as_deref()
                    .and_then(kakeya_core::upstream::UpstreamKey::parse),
                gates: g,
                steps: None,
                min_requests,
            };
            print(&canary::start(&db, &cfg.canary, &req, now).await?)
        }
        CanaryCmd::Status { id } => print(&find(&db, id).await?),
        CanaryCmd::Pause { id } => print(&canary::request(&db, &id, Action::Pause).await?),
        CanaryCmd::Resume { id } => print(&canary::request(&db, &id, Action::Resume).await?),
        CanaryCmd::Abort { id } => print(&canary::request(&db, &id, Action::Abort).await?),
        CanaryCmd::ClearUpstream { name } => {
            let seed = cfg.load_bundle_key()?;
            let v = canary::upstream::clear(&db, &seed, &cfg.canary, &name, now).await?;
            let stable = canary::upstream::stable_cluster(&db, &name).await?;
            print(&canary::api::UpstreamCleared {
                canary_weight: 0.0,
                stable_cluster: canary::upstream::cluster_name(&name, stable),
                upstream: name,
                bundle_version: v,
            })
        }
        CanaryCmd::Events { id, after_id } => {
            find(&db, Some(id.clone())).await?;
            print(&store::events(&db, &id, after_id, 10_000).await?)
        }
        CanaryCmd::Watch { id, every } => watch(&db, id, every).await,
    }
}
