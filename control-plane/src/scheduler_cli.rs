//! `kakeya hrs schedule …`: the retraining scheduler on the database directly, through the same
//! functions as `/v1/hrs/scheduler` (a run started here is recorded in `scheduler_runs` like one
//! the server ran, and counts as the one run in progress).

use crate::ab_cli::{db, print};
use anyhow::Context;
use clap::Subcommand;
use kakeya_control_plane::api::decisions::{finish_page, page_args};
use kakeya_control_plane::config::Config;
use kakeya_control_plane::learn::jobs::Progress;
use kakeya_control_plane::scheduler::{self, Claim, RunOutcome, RunTrigger, Settings};
use kakeya_control_plane::store::Db;
use std::sync::Arc;

#[derive(Subcommand)]
pub enum ScheduleCmd {
    /// The scheduler as JSON (like GET /v1/hrs/scheduler): [scheduler] configuration, who holds
    /// the scheduled-retrain lease (PostgreSQL), the run in progress, the last run, when the next
    /// scheduled run is due.
    Status,
    /// One page of runs, newest first, as JSON (like GET /v1/hrs/scheduler/runs; pass the printed
    /// next_cursor as --cursor for the next one).
    Runs {
        /// Runs per page, 1..=1000.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// next_cursor of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Run one now, here, with a progress bar (like POST /v1/hrs/scheduler/run): train on
    /// [now − train_window, now), evaluate the gate against the champion and, with
    /// [scheduler] auto_deploy = true, promote a candidate that passes. Prints the run as JSON.
    /// Refused while another run is in progress.
    Run,
}

pub async fn schedule(cfg: Config, cmd: ScheduleCmd) -> anyhow::Result<()> {
    let db = db(&cfg).await?;
    let now = kakeya_control_plane::now_ms();
    match cmd {
        ScheduleCmd::Status => print(&scheduler::status(&db, &cfg.scheduler, None, now).await?),
        ScheduleCmd::Runs { limit, cursor } => {
            let (limit, before) = page_args(Some(limit), cursor.as_deref())?;
            let mut rows = scheduler::store::page(&db.pool, before, i64::from(limit) + 1).await?;
            let next_cursor = finish_page(&mut rows, limit, |r| r.run_id);
            print(&serde_json::json!({"runs": rows, "next_cursor": next_cursor}))
        }
        ScheduleCmd::Run => run(&cfg, &db, now).await,
    }
}

async fn run(cfg: &Config, db: &Db, now: i64) -> anyhow::Result<()> {
    // Only `kakeya serve` creates the signing key.
    let seed = kakeya_control_plane::registry::keys::load_seed(&cfg.bundle_signing_seed_file)
        .context("bundle signing key (KAKEYA_BUNDLE_SIGNING_SEED_FILE)")?;
    let settings = Settings {
        config: cfg.scheduler.clone(),
        training: cfg.training,
    };
    let id = match scheduler::claim(db, &settings, RunTrigger::Manual, now).await? {
        Claim::Started(id) => id,
        Claim::Busy(r) | Claim::PeriodDone(r) => anyhow::bail!(
            "scheduler run {} ({}) is in progress since {}; wait for it (kakeya hrs schedule status)",
            r.run_id,
            r.trigger.as_str(),
            kakeya_control_plane::learn::rfc3339(r.started_at_ms)
        ),
    };
    let c = &cfg.scheduler;
    eprintln!(
        "scheduler run {id}: {} on the last {} of decisions, gate auroc >= {}, ece <= {}, drop \
         alpha {}, auto_deploy {}",
        c.model_kind.as_str(),
        c.train_window,
        c.gate.auroc_floor,
        c.gate.ece_ceiling,
        c.gate.drop_alpha,
        c.auto_deploy
    );
    let pb = kakeya_control_plane::progress::bar("scheduler run", 1000);
    let bar = pb.clone();
    let progress: Progress =
        Arc::new(move |p| bar.set_position((p.clamp(0.0, 1.0) * 1000.0) as u64));
    let r = scheduler::execute(db, &seed, &settings, id, Some(progress)).await?;
    pb.finish_and_clear();
    print(&r)?;
    let outcome = r.outcome.unwrap_or(RunOutcome::Error);
    let candidate = r.candidate_version.as_deref().unwrap_or("no candidate");
    let detail = r.detail.clone().unwrap_or_default();
    let why = match outcome {
        RunOutcome::Deployed => format!(
            "{candidate} is the champion (was {}), bundle {}",
            r.champion_version.as_deref().unwrap_or("none"),
            detail["bundle_version"]
        ),
        RunOutcome::GatePassed => format!(
            "{candidate} passed the gate, not deployed: {}",
            detail["not_deployed"].as_str().unwrap_or_default()
        ),
        RunOutcome::GateFailed => format!("{candidate} failed {}", detail["failed_checks"]),
        RunOutcome::DatasetError | RunOutcome::TrainingFailed => format!(
            "training job {} failed: {}",
            detail["job_id"],
            detail["error"]["error"].as_str().unwrap_or_default()
        ),
        RunOutcome::Error | RunOutcome::Interrupted => {
            anyhow::bail!(
                "scheduler run {id} ended with {}: {}",
                outcome.as_str(),
                detail["error"].as_str().unwrap_or_default()
            )
        }
    };
    eprintln!("scheduler run {id}: {}: {why}", outcome.as_str());
    Ok(())
}
