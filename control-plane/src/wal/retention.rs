//! Retention: delete whole segments older than N days, judged by the date in the file name
//! (not mtime, which copies and backups change; spec §7.1).
//!
//! Age alone is not enough: a segment is only deleted when it is also strictly before the
//! checkpoint's segment, i.e. every record in it is known to be in the database. Without a
//! (usable) checkpoint nothing is deleted: all of it may still need replaying (e.g. after
//! downtime longer than the retention period, or with a checkpoint frozen by a DB failure).

use super::checkpoint::Checkpoint;
use super::reader::list_segment_keys;
use super::segment::{day_of_ms, segment_key};
use std::io;
use std::path::{Path, PathBuf};

/// Deletes segments whose day is more than `retention_days` before the day of `now_ms` and
/// that lie before the checkpoint stored in `dir`. Returns the deleted paths.
pub fn apply(dir: &Path, now_ms: i64, retention_days: u32) -> io::Result<Vec<PathBuf>> {
    let cp = Checkpoint::load(dir)?;
    apply_with_checkpoint(dir, now_ms, retention_days, cp.as_ref())
}

/// [`apply`] with an explicit checkpoint (`None`: delete nothing).
pub fn apply_with_checkpoint(
    dir: &Path,
    now_ms: i64,
    retention_days: u32,
    checkpoint: Option<&Checkpoint>,
) -> io::Result<Vec<PathBuf>> {
    let mut deleted = Vec::new();
    let Some(cp) = checkpoint else {
        return Ok(deleted);
    };
    let Some(cp_key) = segment_key(&cp.segment) else {
        tracing::warn!(segment = %cp.segment, "WAL checkpoint names no segment; retention skipped");
        return Ok(deleted);
    };
    let cutoff = day_of_ms(now_ms) - i64::from(retention_days);
    for (key, _, path) in list_segment_keys(dir)? {
        if key.day < cutoff && key < cp_key {
            std::fs::remove_file(&path)?;
            deleted.push(path);
        }
    }
    Ok(deleted)
}
