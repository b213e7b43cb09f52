//! The committer pipeline: group commit of WAL + database.
//!
//! Why one task: a single writer owns the WAL file and the batch transaction, so there are no
//! locks, records get a total order, and duplicates inside one batch meet each other in the
//! same transaction exactly as they would across batches. Per batch:
//!
//! 1. drain up to `max_batch` pending submissions;
//! 2. append them all to the WAL and fsync **once** (if that fails: 503 for all, nothing
//!    acknowledged);
//! 3. apply them in **one** database transaction via [`crate::store::apply_record`];
//! 4. commit, then answer every request through its oneshot;
//! 5. remember the checkpoint (persisted at most once a second and at shutdown).
//!
//! If the database fails after the WAL succeeded, the batch is answered 503 and the checkpoint
//! stops advancing until restart, so start-up replay re-applies everything from the last good
//! point (idempotent) instead of silently skipping the failed records.

use crate::audit::store::batch_rows as audit_rows;
use crate::metrics::Metrics;
use crate::store::{apply_record, Applied, ApplyError, ApplyParams, Db};
use crate::wal::{Checkpoint, ReplayItem, WalRecord, WalWriter};
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Why a submission was not answered with a verdict.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    #[error("WAL write failed: {0}")]
    Wal(String),
    #[error("database failed: {0}")]
    Store(String),
    #[error("invalid record: {0}")]
    Invalid(String),
    #[error("committer stopped")]
    ShuttingDown,
}

impl From<IngestError> for crate::error::ApiError {
    fn from(e: IngestError) -> Self {
        use crate::error::ApiError;
        match e {
            IngestError::Wal(m) => ApiError::WalUnavailable(m),
            IngestError::Store(m) => ApiError::StoreUnavailable(m),
            IngestError::Invalid(m) => ApiError::Internal(m),
            IngestError::ShuttingDown => ApiError::ShuttingDown,
        }
    }
}

/// Health as seen by the committer (for `/ready`).
#[derive(Debug)]
pub struct CommitterStatus {
    pub wal_ok: AtomicBool,
    pub db_ok: AtomicBool,
}

struct Job {
    record: WalRecord,
    reply: oneshot::Sender<Result<Applied, IngestError>>,
}

/// Cheap, cloneable sender side. The committer stops once every handle is dropped.
#[derive(Clone)]
pub struct IngestHandle {
    tx: mpsc::Sender<Job>,
    pub status: Arc<CommitterStatus>,
}

impl IngestHandle {
    /// Durably records and applies one submission; resolves after the batch committed.
    pub async fn submit(&self, record: WalRecord) -> Result<Applied, IngestError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { record, reply })
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        rx.await.map_err(|_| IngestError::ShuttingDown)?
    }
}

#[derive(Debug, Clone)]
pub struct CommitterConfig {
    pub wal_dir: PathBuf,
    pub max_batch: usize,
    pub dedup_ttl_ms: i64,
    /// `[review] audit_sample_rate` ([`crate::review::audit`]).
    pub audit_sample_rate: f64,
}

impl CommitterConfig {
    pub fn apply_params(&self) -> ApplyParams {
        ApplyParams {
            dedup_ttl_ms: self.dedup_ttl_ms,
            audit_sample_rate: self.audit_sample_rate,
        }
    }
}

/// Starts the committer task. `checkpoint` is where start-up replay ended.
pub fn spawn(
    cfg: CommitterConfig,
    db: Db,
    metrics: Metrics,
    checkpoint: Option<Checkpoint>,
) -> std::io::Result<(IngestHandle, tokio::task::JoinHandle<()>)> {
    let writer = WalWriter::open(&cfg.wal_dir)?;
    let (tx, rx) = mpsc::channel(cfg.max_batch.max(1) * 4);
    let status = Arc::new(CommitterStatus {
        wal_ok: AtomicBool::new(true),
        db_ok: AtomicBool::new(true),
    });
    let committer = Committer {
        cfg,
        db,
        metrics,
        status: status.clone(),
        writer: Some(writer),
        checkpoint,
        dirty: false,
        frozen: false,
        last_persist: Instant::now(),
    };
    let join = tokio::spawn(committer.run(rx));
    Ok((IngestHandle { tx, status }, join))
}

struct Committer {
    cfg: CommitterConfig,
    db: Db,
    metrics: Metrics,
    status: Arc<CommitterStatus>,
    writer: Option<WalWriter>,
    checkpoint: Option<Checkpoint>,
    dirty: bool,
    frozen: bool,
    last_persist: Instant,
}

impl Committer {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                job = rx.recv() => match job {
                    Some(j) => j,
                    None => break,
                },
                _ = tick.tick() => {
                    self.persist_checkpoint(false).await;
                    continue;
                }
            };
            let mut batch = vec![first];
            while batch.len() < self.cfg.max_batch {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            self.process(batch).await;
            self.persist_checkpoint(false).await;
        }
        // Every sender is gone: all accepted work has been answered. Make it all durable.
        if let Some(mut w) = self.writer.take() {
            if let Err(e) = tokio::task::spawn_blocking(move || w.sync())
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            {
                tracing::error!(error = %e, "final WAL fsync failed");
            }
        }
        self.persist_checkpoint(true).await;
        tracing::info!("committer stopped");
    }

    async fn persist_checkpoint(&mut self, force: bool) {
        if !self.dirty || (!force && self.last_persist.elapsed() < Duration::from_secs(1)) {
            return;
        }
        let Some(cp) = self.checkpoint.clone() else {
            return;
        };
        let dir = self.cfg.wal_dir.clone();
        match tokio::task::spawn_blocking(move || cp.store(&dir)).await {
            Ok(Ok(())) => {
                self.dirty = false;
                self.last_persist = Instant::now();
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot persist WAL checkpoint"),
            Err(e) => tracing::warn!(error = %e, "checkpoint task failed"),
        }
    }

    async fn process(&mut self, batch: Vec<Job>) {
        self.metrics.wal_batch_size.observe(batch.len() as f64);
        let (records, replies): (Vec<WalRecord>, Vec<_>) =
            batch.into_iter().map(|j| (j.record, j.reply)).unzip();
        let tenants: Vec<String> = records.iter().map(|r| r.tenant.clone()).collect();

        // 1. WAL: one write, one fsync, off the async threads.
        let writer = match self.writer.take() {
            Some(w) => Ok(w),
            None => WalWriter::open(&self.cfg.wal_dir),
        };
        let now = crate::now_ms();
        let appended = match writer {
            Err(e) => Err(e),
            Ok(mut w) => {
                let (w, recs, res) = match tokio::task::spawn_blocking(move || {
                    let res = w.append_batch(now, &records);
                    (w, records, res)
                })
                .await
                {
                    Ok(t) => t,
                    Err(e) => {
                        self.fail_wal(&e.to_string(), replies, &tenants);
                        return;
                    }
                };
                self.writer = Some(w);
                res.map(|out| (out, recs))
            }
        };
        let (out, records) = match appended {
            Ok(v) => v,
            Err(e) => {
                self.fail_wal(&e.to_string(), replies, &tenants);
                return;
            }
        };
        self.status.wal_ok.store(true, Ordering::Relaxed);
        self.metrics
            .wal_fsync_seconds
            .observe(out.fsync.as_secs_f64());

        // 2. Database: one transaction for the whole batch.
        match self.apply_batch(&out.ids, &records).await {
            Ok(results) => {
                self.status.db_ok.store(true, Ordering::Relaxed);
                for ((res, reply), rec) in results.into_iter().zip(replies).zip(&records) {
                    if let Ok(a) = &res {
                        let t = [rec.tenant.as_str()];
                        if a.conflict {
                            self.metrics
                                .idempotency_conflicts_total
                                .with_label_values(&t)
                                .inc();
                        } else if a.dedup_hit {
                            self.metrics.dedup_hits_total.with_label_values(&t).inc();
                        } else if a.escalated {
                            self.metrics.escalated_total.with_label_values(&t).inc();
                        } else if a.accepted {
                            self.metrics.accepted_total.with_label_values(&t).inc();
                        }
                        if a.fresh && !a.dedup_hit && !a.conflict {
                            crate::kpi::metrics::decided(rec);
                        }
                    }
                    let _ = reply.send(res.map_err(|e| IngestError::Invalid(e.to_string())));
                }
                if !self.frozen {
                    self.checkpoint = Some(Checkpoint {
                        segment: out.segment,
                        offset: out.end,
                    });
                    self.dirty = true;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "database batch failed; checkpoint frozen until restart (replay will re-apply)");
                self.status.db_ok.store(false, Ordering::Relaxed);
                self.frozen = true;
                for reply in replies {
                    let _ = reply.send(Err(IngestError::Store(e.to_string())));
                }
            }
        }
    }

    fn fail_wal(
        &mut self,
        msg: &str,
        replies: Vec<oneshot::Sender<Result<Applied, IngestError>>>,
        tenants: &[String],
    ) {
        tracing::error!(error = %msg, "WAL append failed; refusing the batch");
        self.status.wal_ok.store(false, Ordering::Relaxed);
        for (reply, tenant) in replies.into_iter().zip(tenants) {
            self.metrics
                .wal_errors_total
                .with_label_values(&[tenant.as_str()])
                .inc();
            let _ = reply.send(Err(IngestError::Wal(msg.to_string())));
        }
    }

    /// Per-record results; `Err` only when the transaction as a whole failed.
    async fn apply_batch(
        &self,
        ids: &[String],
        records: &[WalRecord],
    ) -> Result<Vec<Result<Applied, ApplyError>>, sqlx::Error> {
        let mut conn = self.db.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let mut out = Vec::with_capacity(records.len());
        let params = self.cfg.apply_params();
        for (id, rec) in ids.iter().zip(records) {
            match apply_record(&mut tx, id, rec, &params).await {
                Err(ApplyError::Store(e)) => return Err(e),
                other => out.push(other),
            }
        }
        // audit: one entry for the batch's fresh rows, in its transaction.
        let rows = audit_rows(
            ids.iter().map(String::as_str),
            out.iter().map(|r| r.as_ref().ok()),
        );
        crate::audit::store::record_batch(&mut tx, &rows, crate::now_ms()).await?;
        tx.commit().await?;
        Ok(out)
    }
}

/// Counts of a replay run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplayStats {
    /// Records read from the WAL.
    pub read: u64,
    /// Records that produced a new decision-log row.
    pub applied_fresh: u64,
    /// Records already reflected in the database (dedup hit or decision row present).
    pub already_present: u64,
    /// Records refused as idempotency conflicts (other signed content under a stored
    /// `pcs_id`); they were answered 409 and change nothing on replay either.
    pub conflicts: u64,
    /// Records that could not be applied (logged and skipped).
    pub invalid: u64,
    /// Corrupt regions in the middle of a segment (valid records follow; logged with their
    /// byte ranges). Records inside them are lost unless restored from a backup.
    pub corrupt_ranges: u64,
    pub corrupt_bytes: u64,
    /// Unreadable bytes at the end of a segment (an interrupted last write).
    pub torn_tail_bytes: u64,
}

/// Re-feeds WAL records through the live apply path (idempotent), in transactions of
/// `batch` records, then stores the checkpoint at the end. `from_start` ignores the
/// checkpoint. `progress` is called after every transaction.
pub async fn replay(
    db: &Db,
    wal_dir: &Path,
    from_start: bool,
    params: &ApplyParams,
    batch: usize,
    mut progress: impl FnMut(&ReplayStats),
) -> anyhow::Result<(ReplayStats, Option<Checkpoint>)> {
    let start = if from_start {
        None
    } else {
        Checkpoint::load(wal_dir)?
    };
    let mut it = crate::wal::replay_iter(wal_dir, start.as_ref())?;
    let mut stats = ReplayStats::default();
    let mut last = start.clone();
    loop {
        let mut chunk = Vec::with_capacity(batch);
        for item in it.by_ref() {
            match item? {
                ReplayItem::Record(r) => chunk.push(r),
                ReplayItem::Skipped(s) if s.torn_tail => stats.torn_tail_bytes += s.len(),
                ReplayItem::Skipped(s) => {
                    stats.corrupt_ranges += 1;
                    stats.corrupt_bytes += s.len();
                }
            }
            if chunk.len() >= batch.max(1) {
                break;
            }
        }
        if chunk.is_empty() {
            break;
        }
        let mut conn = db.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let mut applied = Vec::with_capacity(chunk.len());
        for r in &chunk {
            stats.read += 1;
            let a = match apply_record(&mut tx, &r.id, &r.record, params).await {
                Err(ApplyError::Store(e)) => return Err(e.into()),
                a => a,
            };
            match &a {
                Ok(a) if a.fresh => stats.applied_fresh += 1,
                Ok(a) if a.conflict => stats.conflicts += 1,
                Ok(_) => stats.already_present += 1,
                Err(ApplyError::Invalid(e)) => {
                    tracing::warn!(record = %r.id, error = %e, "skipping invalid WAL record");
                    stats.invalid += 1;
                }
                Err(ApplyError::Store(_)) => {}
            }
            applied.push(a.ok());
        }
        let rows = audit_rows(
            chunk.iter().map(|r| r.id.as_str()),
            applied.iter().map(Option::as_ref),
        );
        crate::audit::store::record_batch(&mut tx, &rows, crate::now_ms()).await?;
        tx.commit().await?;
        if let Some(r) = chunk.last() {
            last = Some(Checkpoint {
                segment: r.segment.clone(),
                offset: r.end,
            });
        }
        progress(&stats);
    }
    if let Some(cp) = &last {
        if last != start || from_start {
            cp.store(wal_dir)?;
        }
    }
    Ok((stats, last))
}
