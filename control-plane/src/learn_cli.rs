//! `kakeya hrs train` and `kakeya hrs jobs …`: training jobs on the database directly, through
//! the same functions as `POST /v1/hrs/train` and `GET /v1/hrs/jobs` (the job is recorded in
//! `training_jobs` like one the server ran).

use anyhow::Context;
use clap::{Args, Subcommand};
use kakeya_control_plane::api::decisions::{finish_page, page_args};
use kakeya_control_plane::config::Config;
use kakeya_control_plane::learn::jobs::{self, JobParams, JobStatus, Progress};
use kakeya_control_plane::learn::{parse_rfc3339, ModelKind};
use kakeya_control_plane::store::Db;
use std::sync::Arc;
use std::time::Duration;

#[derive(Subcommand)]
pub enum HrsCmd {
    /// Train a hallucination-risk model on the labelled decisions of a time range (the job of
    /// POST /v1/hrs/train, run here with a progress bar): build the dataset, fit on the older
    /// part, measure on the newest, register the version (not promoted) and print the result
    /// JSON. Fails with the dataset's typed error (JSON, with its counts) when the range has too
    /// few labels.
    Train(TrainArgs),
    /// Training jobs (of the server and of `kakeya hrs train`).
    Jobs {
        #[command(subcommand)]
        cmd: Option<JobsCmd>,
    },
    /// A/B experiments: a registered model against the champion on a share of the tenants
    /// (same code path as /v1/hrs/ab).
    Ab {
        #[command(subcommand)]
        cmd: crate::ab_cli::AbCmd,
    },
    /// Scheduled retraining and the auto-deploy gate: status, runs, and a run now (same code
    /// path as /v1/hrs/scheduler).
    Schedule {
        #[command(subcommand)]
        cmd: crate::scheduler_cli::ScheduleCmd,
    },
    /// Drift of the champion and challenger against their training reference and card; its
    /// alerts (same code path as /v1/hrs/drift).
    Drift {
        #[command(subcommand)]
        cmd: crate::drift_cli::DriftCmd,
    },
}

#[derive(Args)]
pub struct TrainArgs {
    /// Start of the range (inclusive): RFC 3339 (2026-01-01T00:00:00Z) or a duration before now
    /// (7d, 36h, 90m).
    #[arg(long, value_parser = parse_when)]
    since: When,
    /// End of the range (exclusive), same forms; default now.
    #[arg(long, value_parser = parse_when)]
    until: Option<When>,
    /// Learner.
    #[arg(long, value_enum, default_value = "lr")]
    model_kind: ModelKind,
    /// Seed of the calibration split and the bootstrap.
    #[arg(long, default_value_t = kakeya_control_plane::ml::eval::DEFAULT_SEED)]
    seed: u64,
}

#[derive(Subcommand)]
pub enum JobsCmd {
    /// One page of jobs, newest first, as JSON (like GET /v1/hrs/jobs; pass the printed
    /// next_cursor as --cursor for the next one). The default.
    List {
        /// Only jobs of this status.
        #[arg(long, value_enum)]
        status: Option<JobStatus>,
        /// Jobs per page, 1..=1000.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// next_cursor of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One job as JSON (like GET /v1/hrs/jobs/{job_id}).
    Show { job_id: i64 },
}

/// A time on the command line: absolute, or that long before now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    At(i64),
    Ago(Duration),
}

impl When {
    fn at(self, now_ms: i64) -> i64 {
        match self {
            When::At(ms) => ms,
            When::Ago(d) => now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

/// RFC 3339, else a humantime duration ("7d", "36h", "1h 30m").
fn parse_when(s: &str) -> Result<When, String> {
    if let Ok(ms) = parse_rfc3339(s) {
        return Ok(When::At(ms));
    }
    humantime::parse_duration(s.trim())
        .map(When::Ago)
        .map_err(|_| {
            format!(
                "{s:?} is neither an RFC 3339 time (2026-01-01T00:00:00Z) nor a duration (7d, 36h)"
            )
        })
}

async fn db(cfg: &Config) -> anyhow::Result<Db> {
    Db::connect(&cfg.database_url, None)
        .await
        .context("cannot open the database; check DATABASE_URL")
}

pub async fn run(cfg: Config, cmd: HrsCmd) -> anyhow::Result<()> {
    match cmd {
        HrsCmd::Train(a) => train(cfg, a).await,
        HrsCmd::Ab { cmd } => crate::ab_cli::ab(cfg, cmd).await,
        HrsCmd::Schedule { cmd } => crate::scheduler_cli::schedule(cfg, cmd).await,
        HrsCmd::Drift { cmd } => crate::drift_cli::run(cfg, cmd).await,
        HrsCmd::Jobs { cmd } => {
            let db = db(&cfg).await?;
            match cmd.unwrap_or(JobsCmd::List {
                status: None,
                limit: 100,
                cursor: None,
            }) {
                JobsCmd::List {
                    status,
                    limit,
                    cursor,
                } => {
                    let (limit, before) = page_args(Some(limit), cursor.as_deref())?;
                    let mut rows = jobs::page(&db, status, before, i64::from(limit) + 1).await?;
                    let next_cursor = finish_page(&mut rows, limit, |j| j.job_id);
                    let page = serde_json::json!({"jobs": rows, "next_cursor": next_cursor});
                    println!("{}", serde_json::to_string_pretty(&page)?);
                }
                JobsCmd::Show { job_id } => {
                    let job = jobs::get(&db, job_id)
                        .await?
                        .with_context(|| format!("no training job {job_id}"))?;
                    println!("{}", serde_json::to_string_pretty(&job)?);
                }
            }
            Ok(())
        }
    }
}

async fn train(cfg: Config, a: TrainArgs) -> anyhow::Result<()> {
    let now = kakeya_control_plane::now_ms();
    let (start, end) = (a.since.at(now), a.until.map_or(now, |u| u.at(now)));
    if start >= end {
        anyhow::bail!(
            "--since ({}) must be before --until ({})",
            kakeya_control_plane::learn::rfc3339(start),
            kakeya_control_plane::learn::rfc3339(end)
        );
    }
    let db = db(&cfg).await?;
    // Only `kakeya serve` creates the signing key.
    let seed = kakeya_control_plane::registry::keys::load_seed(&cfg.bundle_signing_seed_file)
        .context("bundle signing key (KAKEYA_BUNDLE_SIGNING_SEED_FILE)")?;
    let params = JobParams::new(start, end, a.model_kind, a.seed);
    let id = jobs::create_running(&db, &params, now).await?;
    eprintln!(
        "training job {id} ({}) on the decisions from {} to {}",
        params.model_kind.as_str(),
        params.start_time,
        params.end_time
    );
    let pb = kakeya_control_plane::progress::bar("training", 1000);
    let bar = pb.clone();
    let progress: Progress =
        Arc::new(move |p| bar.set_position((p.clamp(0.0, 1.0) * 1000.0) as u64));
    let job = jobs::run(&db, &seed, id, &params, &cfg.training, Some(progress)).await?;
    pb.finish_and_clear();
    match (job.status, job.result, job.error) {
        (JobStatus::Succeeded, Some(result), _) => {
            println!("{}", serde_json::to_string_pretty(&result)?);
            eprintln!(
                "registered {v} (not promoted: kakeya model promote {v} --challenger to try it)",
                v = result["version"].as_str().unwrap_or_default()
            );
            Ok(())
        }
        (_, _, error) => {
            let error = error.unwrap_or_default();
            println!("{}", serde_json::to_string_pretty(&error)?);
            anyhow::bail!(
                "training job {id} failed ({}): {}",
                error["code"].as_str().unwrap_or("unknown"),
                error["error"].as_str().unwrap_or_default()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_absolute_or_before_now() {
        let now = 1_767_225_600_000;
        assert_eq!(
            parse_when("2026-01-01T01:00:00+01:00").unwrap().at(now),
            now
        );
        assert_eq!(parse_when("7d").unwrap().at(now), now - 7 * 86_400_000);
        assert_eq!(parse_when("1h 30m").unwrap().at(now), now - 5_400_000);
        let e = parse_when("soon").unwrap_err();
        assert!(e.contains("RFC 3339") && e.contains("7d"), "{e}");
    }
}
