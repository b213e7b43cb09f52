//! Retention: delete whole segments older than N days, judged by the date in the file name
//! (not mtime, which copies and backups change; spec §7.1).

use super::reader::list_segments;
use super::segment::{day_of_ms, segment_day};
use std::io;
use std::path::{Path, PathBuf};

/// Deletes segments whose day is more than `retention_days` before the day of `now_ms`.
/// Returns the deleted paths.
pub fn apply(dir: &Path, now_ms: i64, retention_days: u32) -> io::Result<Vec<PathBuf>> {
    let cutoff = day_of_ms(now_ms) - i64::from(retention_days);
    let mut deleted = Vec::new();
    for (name, path) in list_segments(dir)? {
        if segment_day(&name).is_some_and(|d| d < cutoff) {
            std::fs::remove_file(&path)?;
            deleted.push(path);
        }
    }
    Ok(deleted)
}
