//! `kakeya hrs ab …`: A/B experiments on the database directly, through the same functions as
//! `/v1/hrs/ab` (a running `kakeya serve` serves the new bundle at once and ends the experiment
//! at its `ends_at`).

use anyhow::Context;
use clap::Subcommand;
use kakeya_control_plane::ab::{self, stats, By, StartRequest, StopReason};
use kakeya_control_plane::config::Config;
use kakeya_control_plane::registry::keys;
use kakeya_control_plane::store::Db;

#[derive(Subcommand)]
pub enum AbCmd {
    /// Start an experiment: TREATMENT becomes the challenger for a share of the tenants
    /// (consistent hash of experiment and tenant, so a tenant never changes arm); CONTROL must
    /// be the champion. Prints the experiment as JSON.
    Start {
        /// Experiment name (1..=64 characters of A-Z a-z 0-9 . _ -); the id is
        /// ab-<name>-<unix seconds>.
        #[arg(long)]
        name: String,
        /// The champion's model version.
        #[arg(long)]
        control: String,
        /// The registered model version to try.
        #[arg(long)]
        treatment: String,
        /// Share of tenants scored by the treatment, strictly between 0 and 1.
        #[arg(long)]
        split: f64,
        /// How long it runs, e.g. 90m, 36h, 7d (1 minute to 366 days).
        #[arg(long)]
        duration: String,
    },
    /// Print an experiment's statistics as JSON: per arm requests, escalation rate with its
    /// Wilson interval, verify_ns percentiles, AUROC with its DeLong interval; the verdict.
    Status {
        /// ab-<name>-<unix seconds>.
        experiment_id: String,
    },
    /// Stop a running experiment (removes the challenger, publishing a new signed bundle).
    Stop {
        /// ab-<name>-<unix seconds>.
        experiment_id: String,
    },
    /// List experiments, newest first, as JSON.
    List {
        /// At most this many, 1..=1000.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
}

pub(crate) async fn db(cfg: &Config) -> anyhow::Result<Db> {
    Db::connect(&cfg.database_url, None)
        .await
        .context("cannot open the database; check DATABASE_URL")
}

/// The server's signing key, read, never created (as `kakeya model promote` reads it).
fn seed(cfg: &Config) -> anyhow::Result<[u8; 32]> {
    keys::load_seed(&cfg.bundle_signing_seed_file)
        .context("bundle signing key (KAKEYA_BUNDLE_SIGNING_SEED_FILE)")
}

/// Pretty JSON on stdout; a closed pipe (`| head`) is an error, not a panic.
pub(crate) fn print(v: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    writeln!(
        std::io::stdout().lock(),
        "{}",
        serde_json::to_string_pretty(v)?
    )
    .context("cannot write to stdout")
}

pub async fn ab(cfg: Config, cmd: AbCmd) -> anyhow::Result<()> {
    let db = db(&cfg).await?;
    let now = kakeya_control_plane::now_ms();
    match cmd {
        AbCmd::Start {
            name,
            control,
            treatment,
            split,
            duration,
        } => {
            let r = StartRequest {
                name,
                control,
                treatment,
                traffic_split: split,
                duration,
            };
            let s = ab::start(&db, &seed(&cfg)?, &r, By::Cli, now).await?;
            eprintln!(
                "started {} until {} (bundle {})",
                s.experiment_id, s.ends_at, s.bundle_version
            );
            print(&s)
        }
        AbCmd::Status { experiment_id } => {
            let e = ab::store::get(&db.pool, &experiment_id)
                .await?
                .with_context(|| format!("no experiment {experiment_id}"))?;
            print(&stats::report(&db.pool, &e).await?)
        }
        AbCmd::Stop { experiment_id } => {
            let e = ab::stop(
                &db,
                &seed(&cfg)?,
                &experiment_id,
                StopReason::Manual,
                By::Cli,
                now,
            )
            .await?;
            eprintln!("{} is {}", e.id, e.status.as_str());
            print(&e)
        }
        AbCmd::List { limit } => print(&ab::store::list(&db.pool, i64::from(limit)).await?),
    }
}
