//! Billing import jobs: read every export of a provider's configured location, upsert its
//! lines of the window, record what was found. The parse runs on a blocking thread and hands
//! batches to the database side over a bounded channel, so memory stays flat on large files.

use super::billing::{self, BadRow, Format, Provider, ReadStats};
use super::options::CostOptions;
use super::{store, CostError};
use crate::store::Db;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Lines per database transaction.
pub const BATCH: usize = 20_000;

/// What one file gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileResult {
    pub path: String,
    pub format: Option<Format>,
    #[serde(flatten)]
    pub stats: ReadStats,
    /// Set when the file could not be read at all (its header, or I/O).
    pub error: Option<String>,
}

/// The result of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImportResult {
    pub provider: Provider,
    pub files: Vec<FileResult>,
    /// Lines of the window read.
    pub records: u64,
    /// Lines inserted or changed (0 when re-importing the same exports).
    pub written: u64,
    /// Lines already stored with the same values.
    pub unchanged: u64,
    pub malformed: u64,
    /// The first malformed rows of every file, with the file.
    pub bad_rows: Vec<(String, BadRow)>,
}

/// The exports under `path`: the file itself, or the directory's `*.csv` / `*.csv.gz`, sorted.
pub fn export_files(path: &Path) -> Result<Vec<PathBuf>, CostError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        CostError::NotConfigured(format!("billing exports at {}: {e}", path.display()))
    })?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| CostError::NotConfigured(format!("{}: {e}", path.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            p.is_file() && (n.ends_with(".csv") || n.ends_with(".csv.gz"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Runs the import of `provider`'s exports for days `[from, to)` as job `job_id`;
/// `progress(rows_read)` is called after every batch.
pub async fn run(
    db: &Db,
    opts: &CostOptions,
    provider: Provider,
    (from, to): (i64, i64),
    job_id: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ImportResult, CostError> {
    let root = opts.exports(provider).ok_or_else(|| {
        CostError::NotConfigured(format!(
            "no {p} exports configured: set [cost] {p}_exports (or KAKEYA_COST_{P}_EXPORTS) \
             to a directory or file",
            p = provider.as_str(),
            P = provider.as_str().to_uppercase()
        ))
    })?;
    let mut out = ImportResult {
        provider,
        files: Vec::new(),
        records: 0,
        written: 0,
        unchanged: 0,
        malformed: 0,
        bad_rows: Vec::new(),
    };
    let mut read_so_far = 0u64;
    for path in export_files(root)? {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<billing::BillingLine>>(2);
        let (tags, currency, p2) = (opts.tags.clone(), opts.currency.clone(), path.clone());
        let reader = tokio::task::spawn_blocking(move || {
            let input = billing::open(&p2).map_err(|e| billing::ReadError::Io(e.to_string()))?;
            let mut batch = Vec::with_capacity(BATCH);
            let res = billing::read(input, provider, &tags, (from, to), &currency, |l| {
                batch.push(l);
                if batch.len() >= BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    tx.blocking_send(full)
                        .map_err(|_| "import cancelled".to_string())?;
                }
                Ok(())
            });
            if !batch.is_empty() {
                let _ = tx.blocking_send(batch);
            }
            res
        });
        let mut written = 0;
        let mut in_file = 0u64;
        while let Some(batch) = rx.recv().await {
            in_file += batch.len() as u64;
            written += store::upsert_lines(db, provider, job_id, &batch).await?;
            progress(read_so_far + in_file);
        }
        read_so_far += in_file;
        let shown = path.display().to_string();
        let res = reader
            .await
            .map_err(|e| CostError::Invalid(format!("reader thread: {e}")))?;
        match res {
            Ok((format, stats)) => {
                out.records += stats.in_window;
                out.written += written;
                out.unchanged += stats.in_window - written.min(stats.in_window);
                out.malformed += stats.malformed;
                out.bad_rows
                    .extend(stats.bad_rows.iter().map(|b| (shown.clone(), b.clone())));
                out.files.push(FileResult {
                    path: shown,
                    format: Some(format),
                    stats,
                    error: None,
                });
            }
            Err(e) => out.files.push(FileResult {
                path: shown,
                format: None,
                stats: ReadStats::default(),
                error: Some(e.to_string()),
            }),
        }
    }
    Ok(out)
}

/// Job ids: `<provider>-import-<ms>-<random>` (unique within a millisecond too).
pub fn job_id(provider: Provider, now_ms: i64) -> String {
    let mut r = [0u8; 4];
    let _ = getrandom::getrandom(&mut r);
    format!(
        "{}-import-{now_ms}-{:08x}",
        provider.as_str(),
        u32::from_le_bytes(r)
    )
}

/// Records the job, runs it and stores its outcome; the result (also stored).
pub async fn run_job(
    db: &Db,
    opts: &CostOptions,
    provider: Provider,
    window: (i64, i64),
    job_id: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ImportResult, CostError> {
    let res = run(db, opts, provider, window, job_id, progress).await;
    let now = crate::now_ms();
    match &res {
        Ok(r) => {
            let v = serde_json::to_value(r).unwrap_or_default();
            store::finish_job(db, job_id, Ok(&v), now).await?;
        }
        Err(e) => store::finish_job(db, job_id, Err(&e.to_string()), now).await?,
    }
    res
}
