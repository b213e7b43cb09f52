//! `kakeya hrs drift …`: drift checks and alerts on the database directly, through the same
//! functions as `/v1/hrs/drift` (an auto-revert publishes the bundle a running `kakeya serve`
//! serves at once).

use crate::ab_cli::print;
use anyhow::Context;
use clap::Subcommand;
use kakeya_control_plane::config::Config;
use kakeya_control_plane::drift::{self, analysis::DriftStatus, By};
use kakeya_control_plane::registry::keys;
use kakeya_control_plane::store::Db;

#[derive(Subcommand)]
pub enum DriftCmd {
    /// Check the champion (and the challenger) now: per feature KS with Benjamini–Hochberg and
    /// PSI against the training reference, rolling labelled AUROC against the card's; stores the
    /// check and its alerts and, with [drift] auto_revert, reverts a champion whose performance
    /// drifted. Prints the report as JSON, a summary on standard error.
    Check {
        /// Start of the window: a duration before now (24h, 90m, 7d) or an RFC 3339 time;
        /// default [drift] window.
        #[arg(long)]
        since: Option<String>,
    },
    /// Alerts raised since a time, newest first, as JSON (like GET /v1/hrs/drift/alerts).
    Alerts {
        /// A duration before now (24h) or an RFC 3339 time.
        #[arg(long, default_value = "24h")]
        since: String,
        /// At most this many, 1..=10000.
        #[arg(long, default_value_t = drift::api::DEFAULT_ALERTS,
              value_parser = clap::value_parser!(u32).range(1..=10000))]
        limit: u32,
        /// Only alerts with an id below this one (the last id of the previous page).
        #[arg(long)]
        before_id: Option<i64>,
    },
}

fn status(s: DriftStatus) -> &'static str {
    match s {
        DriftStatus::Ok => "ok",
        DriftStatus::Drift => "DRIFT",
        DriftStatus::InsufficientData => "insufficient data",
        DriftStatus::NoReference => "no reference",
    }
}

pub async fn run(cfg: Config, cmd: DriftCmd) -> anyhow::Result<()> {
    let db = Db::connect(&cfg.database_url, None)
        .await
        .context("cannot open the database; check DATABASE_URL")?;
    let now = kakeya_control_plane::now_ms();
    match cmd {
        DriftCmd::Check { since } => {
            let since_ms = match since {
                Some(s) => drift::parse_since(&s, now)?,
                None => now.saturating_sub(
                    i64::try_from(cfg.drift.window.as_millis()).unwrap_or(i64::MAX),
                ),
            };
            // The key is needed only to publish an auto-revert.
            let seed = if cfg.drift.auto_revert {
                Some(
                    keys::load_seed(&cfg.bundle_signing_seed_file)
                        .context("bundle signing key (KAKEYA_BUNDLE_SIGNING_SEED_FILE)")?,
                )
            } else {
                None
            };
            let spinner = kakeya_control_plane::progress::spinner("drift check");
            spinner.enable_steady_tick(std::time::Duration::from_millis(120));
            let r = drift::check(&db, seed.as_ref(), &cfg.drift, since_ms, By::Cli, now).await;
            spinner.finish_and_clear();
            let r = r?;
            for m in &r.models {
                eprintln!(
                    "{} {}: features {} ({} decisions), performance {} ({} labelled)",
                    m.alias,
                    m.model_version,
                    status(m.features.status),
                    m.features.n_used,
                    status(m.performance.status),
                    m.performance.labelled
                );
            }
            eprintln!(
                "check {} since {}: {} ({} alerts)",
                r.check_id,
                r.since,
                r.outcome.as_str(),
                r.alerts.len()
            );
            for a in r.alerts.iter().filter(|a| a.action.is_some()) {
                eprintln!(
                    "alert {} ({}): {}",
                    a.id,
                    a.action.map_or("", |x| x.as_str()),
                    a.action_detail.as_deref().unwrap_or("")
                );
            }
            print(&r)
        }
        DriftCmd::Alerts {
            since,
            limit,
            before_id,
        } => {
            let since_ms = drift::parse_since(&since, now)?;
            print(&drift::store::alerts(&db, since_ms, before_id, i64::from(limit)).await?)
        }
    }
}
