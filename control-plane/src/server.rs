//! `kakeya serve`: start-up order, background jobs and graceful shutdown.
//!
//! Order matters: connect + migrate, load the bundle signing key and (first start only) train
//! and publish the default model, **replay the WAL tail after the checkpoint** (crash
//! recovery), then apply WAL retention (never at or past the checkpoint's segment), and only
//! then start the committer and bind the listeners, so no new submission is answered before
//! old ones are back in the database. Shutdown runs
//! the other way: stop accepting, let in-flight requests finish, drain the committer (which
//! fsyncs and writes the checkpoint). The training-job runner ([`crate::learn::jobs::runner`])
//! starts with the listeners and stops with them. Background jobs: WAL retention (daily, every
//! replica), and under their leader leases ([`crate::lease`]) the dedup TTL cleanup (hourly),
//! the evidence purge and the end of A/B experiments at their `ends_at`
//! ([`crate::ab::expire_due`], every [`crate::ab::EXPIRY_TICK`]), and the drift check
//! ([`crate::drift::run_periodic`], every `[drift] check_every`).

use crate::api::auth::Secret;
use crate::api::{admin_router, ingest_router, AdminState, IngestState};
use crate::config::Config;
use crate::ingest::{self, CommitterConfig};
use crate::lease::{run_as_leader, Leases};
use crate::metrics::Metrics;
use crate::store::{dedup, Db};
use crate::wal::retention;
use anyhow::Context;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The lease of the hourly dedup TTL cleanup.
pub const DEDUP_EXPIRY_LEASE: &str = "dedup-expiry";
/// Lease of the evidence purge ([`crate::evidence::purge`]).
pub const EVIDENCE_PURGE_LEASE: &str = "evidence-purge";
/// Lease of the end of A/B experiments at their `ends_at` ([`crate::ab::expire_due`]).
pub const AB_EXPIRY_LEASE: &str = "ab-expiry";

/// A running control plane (both listeners bound).
pub struct Running {
    /// Actual bound addresses (useful with port 0).
    pub ingest_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub db: Db,
    pub metrics: Metrics,
    stop: watch::Sender<bool>,
    join: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Graceful shutdown; returns once the committer has drained and the checkpoint is written.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.join.await.context("server task panicked")?
    }
}

async fn bind(addr: SocketAddr, what: &str, var: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind the {what} listener on {addr}; is another process using it? Set {var} to change it"))
}

/// Deletes old WAL segments that are entirely before the persisted checkpoint (see
/// [`retention`]); failures are logged, never fatal.
fn run_retention(wal_dir: &std::path::Path, now_ms: i64, days: u32) {
    match retention::apply(wal_dir, now_ms, days) {
        Ok(d) if !d.is_empty() => tracing::info!(deleted = d.len(), "WAL retention"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "WAL retention failed"),
    }
}

/// Says whether evidence is retained, for whom and how long (never any evidence).
fn log_evidence_retention(e: &crate::evidence::EvidenceConfig) {
    if e.tenants.is_none() {
        tracing::info!("evidence retention: off (no tenant opted in)");
    } else {
        tracing::info!(
            tenants = %serde_json::to_string(&e.tenants).unwrap_or_default(),
            ttl_hours = e.ttl_hours,
            "evidence retention: on, encrypted, deleted on the first label or at the TTL"
        );
    }
}

/// Starts everything and returns once both listeners accept connections.
pub async fn start(cfg: &Config) -> anyhow::Result<Running> {
    // Before anything else: never expose an unauthenticated listener.
    cfg.check_exposure()?;
    let admin_token = cfg.load_admin_token()?;
    if admin_token.generated {
        tracing::info!(path = %admin_token.source, "generated the admin token (mode 0600)");
    }
    // Where the token is, never the token itself.
    tracing::info!("admin token: {}", admin_token.source);
    let ingest_secret = cfg.load_ingest_secret()?;
    let metrics = Metrics::new().context("metrics registry")?;
    let db = Db::connect(&cfg.database_url, None)
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}; check DATABASE_URL",
                crate::config::redact_url(&cfg.database_url)
            )
        })?;
    let seed = crate::registry::keys::load_or_create_seed(&cfg.bundle_signing_seed_file)
        .context("bundle signing key (KAKEYA_BUNDLE_SIGNING_SEED_FILE)")?;
    let evidence_key =
        crate::evidence::crypto::EvidenceKey::load_or_create(&cfg.evidence_key_path())
            .context("evidence key (KAKEYA_EVIDENCE_KEY_FILE)")?;
    let evidence = crate::evidence::Vault::new(evidence_key, cfg.review.evidence.clone());
    log_evidence_retention(&cfg.review.evidence);
    // The settings every publication and /v1/ensemble route reads.
    cfg.apply_process_settings();
    crate::registry::bootstrap::start(&db, &seed).await?;
    std::fs::create_dir_all(&cfg.wal_dir).with_context(|| {
        format!(
            "cannot create WAL_DIR {}; check permissions",
            cfg.wal_dir.display()
        )
    })?;
    let params = cfg.apply_params();
    let (stats, checkpoint) = ingest::replay(
        &db,
        &cfg.wal_dir,
        false,
        &params,
        cfg.group_commit_max_batch,
        |_| {},
    )
    .await
    .context("WAL crash-recovery replay failed")?;
    if stats.read > 0 {
        tracing::info!(
            read = stats.read,
            fresh = stats.applied_fresh,
            present = stats.already_present,
            invalid = stats.invalid,
            "WAL recovery replay"
        );
    }
    if stats.corrupt_bytes > 0 || stats.torn_tail_bytes > 0 {
        tracing::error!(
            corrupt_ranges = stats.corrupt_ranges,
            corrupt_bytes = stats.corrupt_bytes,
            torn_tail_bytes = stats.torn_tail_bytes,
            "WAL recovery replay skipped unreadable bytes"
        );
    }
    // Retention only after replay, and only before the checkpoint replay just stored: a
    // segment older than the retention period may still hold records never applied.
    run_retention(&cfg.wal_dir, crate::now_ms(), cfg.wal_retention_days);
    let (handle, committer) = ingest::spawn(
        CommitterConfig {
            wal_dir: cfg.wal_dir.clone(),
            max_batch: cfg.group_commit_max_batch,
            dedup_ttl_ms: params.dedup_ttl_ms,
            audit_sample_rate: params.audit_sample_rate,
        },
        db.clone(),
        metrics.clone(),
        checkpoint,
    )
    .context("cannot open the WAL")?;
    let leases = Leases::new(
        metrics.leader.clone(),
        Duration::from_millis(cfg.lease_tick_ms),
    );
    let admin_state = AdminState {
        db: db.clone(),
        metrics: metrics.clone(),
        committer: handle.status.clone(),
        wal_dir: cfg.wal_dir.clone(),
        admin_token: Secret::new(&admin_token.value),
        bundle_seed: Some(std::sync::Arc::new(seed)),
        evidence: Some(evidence.clone()),
        leases: leases.clone(),
        scheduler: crate::scheduler::Settings {
            config: cfg.scheduler.clone(),
            training: cfg.training,
        },
        drift: cfg.drift,
        cost: cfg.cost.clone(),
        canary: cfg.canary.clone(),
    };
    let ingest_app = ingest_router(IngestState {
        handle,
        metrics: metrics.clone(),
        ingest_secret: ingest_secret.as_deref().map(Secret::new),
        evidence: crate::evidence::Retainer::new(evidence, db.clone(), metrics.clone()),
    });
    let admin_app = admin_router(admin_state);
    let ingest_l = bind(cfg.ingest_addr, "ingest", "KAKEYA_INGEST_ADDR").await?;
    let admin_l = bind(cfg.admin_addr, "admin", "KAKEYA_ADMIN_ADDR").await?;
    let ingest_addr = ingest_l.local_addr()?;
    let admin_addr = admin_l.local_addr()?;
    tracing::info!(%ingest_addr, %admin_addr, "listening");

    let (stop, stop_rx) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    // Training jobs: one runner per process (claims are atomic, so replicas share the queue).
    let trainer = tokio::spawn(crate::learn::jobs::runner(
        db.clone(),
        seed,
        cfg.training,
        stop_rx.clone(),
    ));
    let (rx1, rx2) = (stop_rx.clone(), stop_rx);
    let ingest_srv = tokio::spawn(async move {
        axum::serve(ingest_l, ingest_app)
            .with_graceful_shutdown(wait(rx1))
            .await
    });
    let admin_srv = tokio::spawn(async move {
        axum::serve(admin_l, admin_app)
            .with_graceful_shutdown(wait(rx2))
            .await
    });

    // Background jobs. WAL retention, daily, on every replica: each has its own WAL. Jobs on
    // the shared database run on the replica holding their lease (`crate::lease`): the dedup
    // TTL cleanup, hourly.
    let retention = {
        let (wal_dir, days) = (cfg.wal_dir.clone(), cfg.wal_retention_days);
        tokio::spawn(async move {
            let mut day = tokio::time::interval(Duration::from_secs(86_400));
            // The first tick is immediate: start-up applied retention already.
            day.tick().await;
            loop {
                day.tick().await;
                let dir = wal_dir.clone();
                let _ =
                    tokio::task::spawn_blocking(move || run_retention(&dir, crate::now_ms(), days))
                        .await;
            }
        })
    };
    let pool = db.pool.clone();
    let dedup_expiry = run_as_leader(
        db.clone(),
        &leases,
        DEDUP_EXPIRY_LEASE,
        Duration::from_secs(3600),
        move || {
            let pool = pool.clone();
            async move {
                match dedup::cleanup(&pool, crate::now_ms()).await {
                    Ok(k) if k > 0 => tracing::info!(deleted = k, "dedup TTL cleanup"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "dedup TTL cleanup failed"),
                }
            }
        },
    )?;
    // Evidence purge (expired, and tenants no longer opted in): now, then every few minutes.
    let (pool, tenants) = (db.pool.clone(), cfg.review.evidence.tenants.clone());
    let evidence_purge = run_as_leader(
        db.clone(),
        &leases,
        EVIDENCE_PURGE_LEASE,
        crate::evidence::PURGE_EVERY,
        move || crate::evidence::purge_logged(pool.clone(), tenants.clone()),
    )?;
    // A/B experiments end at their ends_at.
    let ab_db = db.clone();
    let ab_expiry = run_as_leader(
        db.clone(),
        &leases,
        AB_EXPIRY_LEASE,
        crate::ab::EXPIRY_TICK,
        move || {
            let db = ab_db.clone();
            async move {
                if let Err(e) = crate::ab::expire_due(&db, &seed, crate::now_ms()).await {
                    tracing::warn!(error = %e, "A/B experiment expiry failed");
                }
            }
        },
    )?;
    // Drift checks, every [drift] check_every (auto-revert when [drift] auto_revert).
    let (drift_db, drift_opts) = (db.clone(), cfg.drift);
    let drift_check = run_as_leader(
        db.clone(),
        &leases,
        crate::drift::LEASE,
        drift_opts.check_every,
        move || {
            let db = drift_db.clone();
            async move { crate::drift::run_periodic(&db, &seed, &drift_opts).await }
        },
    )?;
    // cost: budgets recomputed (and published in the bundle) every [cost] budget_every.
    let (cost_db, cost_opts, cost_metrics) = (db.clone(), cfg.cost.clone(), metrics.cost.clone());
    let cost_budgets = run_as_leader(
        db.clone(),
        &leases,
        crate::cost::LEASE,
        cfg.cost.budget_every,
        move || {
            let (db, opts, m) = (cost_db.clone(), cost_opts.clone(), cost_metrics.clone());
            async move { crate::cost::metrics::run_periodic(&db, &seed, &opts, &m).await }
        },
    )?;
    // Adaptive ensemble policies (off by default): the tuning cadence under its lease.
    let ensemble_tune = if cfg.ensemble.auto_tune {
        let (ens_db, ens_opts) = (db.clone(), cfg.ensemble.clone());
        Some(run_as_leader(
            db.clone(),
            &leases,
            crate::ensemble::LEASE,
            ens_opts.check_every,
            move || {
                let (db, opts) = (ens_db.clone(), ens_opts.clone());
                async move { crate::ensemble::run_periodic(&db, &seed, &opts).await }
            },
        )?)
    } else {
        None
    };
    // canary: the canary controller, every [canary] tick_every, on the leader only.
    let (canary_db, canary_opts) = (db.clone(), cfg.canary.clone());
    let canary_tick = run_as_leader(
        db.clone(),
        &leases,
        crate::canary::LEASE,
        canary_opts.tick_every,
        move || {
            let (db, opts) = (canary_db.clone(), canary_opts.clone());
            async move {
                match crate::canary::controller::tick_all(&db, &seed, &opts, crate::now_ms()).await
                {
                    Ok(ticks) => {
                        for (id, r) in ticks {
                            if let Err(e) = r {
                                tracing::warn!(deployment = %id, error = %e, "canary controller tick failed");
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "canary controller tick failed"),
                }
            }
        },
    )?;
    // audit: seal segments with a signed checkpoint at rotation and on the [audit] cadence.
    let (audit_db, audit_opts) = (db.clone(), cfg.audit);
    let audit_seal = run_as_leader(
        db.clone(),
        &leases,
        crate::audit::LEASE,
        crate::audit::options::SEAL_TICK,
        move || {
            let db = audit_db.clone();
            async move {
                let sealed =
                    crate::audit::store::seal(&db, &seed, &audit_opts, crate::now_ms(), false);
                if let Err(e) = sealed.await {
                    tracing::warn!(error = %e, "sealing the audit log failed");
                }
            }
        },
    )?;
    // Scheduled retraining (off by default): the leader looks whether the current period has
    // its run; the run's row, unique per period, is what keeps it to one run per period.
    let scheduled_retrain = if cfg.scheduler.retrain {
        let settings = crate::scheduler::Settings {
            config: cfg.scheduler.clone(),
            training: cfg.training,
        };
        let sched_db = db.clone();
        Some(run_as_leader(
            db.clone(),
            &leases,
            crate::scheduler::LEASE,
            crate::scheduler::CHECK_EVERY,
            move || {
                let (db, settings) = (sched_db.clone(), settings.clone());
                async move {
                    if let Err(e) =
                        crate::scheduler::tick(&db, &seed, &settings, crate::now_ms()).await
                    {
                        tracing::warn!(error = %e, "scheduled retraining failed");
                    }
                }
            },
        )?)
    } else {
        None
    };
    let jobs: Vec<JoinHandle<()>> = [
        retention,
        dedup_expiry,
        evidence_purge,
        ab_expiry,
        drift_check,
        cost_budgets,
        canary_tick,
        audit_seal,
    ]
    .into_iter()
    .chain(scheduled_retrain)
    .chain(ensemble_tune)
    .collect();

    let join = tokio::spawn(async move {
        let r1 = ingest_srv.await;
        let r2 = admin_srv.await;
        jobs.iter().for_each(JoinHandle::abort);
        // The runner stops at the stop signal (marking a job it interrupts as failed).
        trainer.await.context("training job runner panicked")?;
        // The ingest router (and with it every IngestHandle) is gone: the committer drains.
        committer.await.context("committer panicked")?;
        r1.context("ingest server panicked")?
            .context("ingest server")?;
        r2.context("admin server panicked")?
            .context("admin server")?;
        Ok(())
    });
    Ok(Running {
        ingest_addr,
        admin_addr,
        db,
        metrics,
        stop,
        join,
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// `kakeya serve`: start, wait for a signal, shut down gracefully.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let running = start(&cfg).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::decision_log;
    use crate::testutil::{pcs_body, record};
    use crate::wal::{Checkpoint, WalWriter};

    const DAY: i64 = 86_400_000;

    /// After downtime longer than the retention period, start-up must replay the old segments
    /// before retention runs, and retention must keep the checkpoint's segment.
    #[tokio::test]
    async fn startup_replays_before_retention_and_keeps_the_checkpoint_segment() {
        let tmp = tempfile::tempdir().unwrap();
        let wal_dir = tmp.path().join("wal");
        let long_ago = crate::now_ms() - 30 * DAY;
        let mut w = WalWriter::open(&wal_dir).unwrap();
        let mut segs = Vec::new();
        for d in 0..3 {
            let ts = long_ago + d * DAY;
            let recs: Vec<_> = (0..2)
                .map(|i| record("acme", &pcs_body(&format!("old{d}-{i}")), ts))
                .collect();
            segs.push(w.append_batch(ts, &recs).unwrap());
        }
        drop(w);
        // A frozen checkpoint (DB failure before the crash) in the middle of day 1.
        Checkpoint {
            segment: segs[1].segment.clone(),
            offset: 0,
        }
        .store(&wal_dir)
        .unwrap();
        let cfg = Config {
            data_dir: tmp.path().to_path_buf(),
            database_url: format!("sqlite://{}/t.db?mode=rwc", tmp.path().display()),
            wal_dir: wal_dir.clone(),
            wal_retention_days: 7,
            bundle_signing_seed_file: tmp.path().join("keys/seed"),
            ingest_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Config::default()
        };
        let running = start(&cfg).await.unwrap();
        // Day 1 and 2 were replayed (day 0 was before the checkpoint).
        assert_eq!(decision_log::count(&running.db.pool).await.unwrap(), 4);
        let cp = Checkpoint::load(&wal_dir).unwrap().unwrap();
        assert_eq!(cp.segment, segs[2].segment);
        running.shutdown().await.unwrap();
        let names: Vec<String> = crate::wal::reader::list_segments(&wal_dir)
            .unwrap()
            .into_iter()
            .map(|s| s.0)
            .collect();
        // Day 0 and 1 are old and before the (new) checkpoint; day 2 holds it.
        assert_eq!(names, vec![segs[2].segment.clone()]);
    }

    #[test]
    fn retention_with_frozen_checkpoint_keeps_unapplied_segments() {
        let tmp = tempfile::tempdir().unwrap();
        let now = crate::now_ms();
        let mut w = WalWriter::open(tmp.path()).unwrap();
        let old: Vec<_> = (0..3)
            .map(|d| {
                let ts = now - (30 - d) * DAY;
                w.append_batch(ts, &[record("acme", &pcs_body("x"), ts)])
                    .unwrap()
            })
            .collect();
        // Frozen at the first segment: the next two were never applied.
        Checkpoint {
            segment: old[0].segment.clone(),
            offset: old[0].end,
        }
        .store(tmp.path())
        .unwrap();
        run_retention(tmp.path(), now, 7);
        assert_eq!(
            crate::wal::reader::list_segments(tmp.path()).unwrap().len(),
            3
        );
    }
}
