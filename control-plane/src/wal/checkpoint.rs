//! The replay checkpoint: "every record before (segment, offset) is in the database".
//!
//! Written with temp file + fsync + rename so a crash leaves either the old or the new
//! checkpoint, never a torn one (spec §15 #20's lesson). Written at most once a second and on
//! shutdown: losing the last second only means replaying it, which is idempotent.

use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub segment: String,
    pub offset: u64,
}

pub const FILE_NAME: &str = "checkpoint";

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

impl Checkpoint {
    /// `Ok(None)` when there is no checkpoint; an unreadable one is an error (replaying
    /// everything is safe, but silently doing it would hide a real problem).
    pub fn load(dir: &Path) -> io::Result<Option<Checkpoint>> {
        match std::fs::read(path(dir)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("corrupt WAL checkpoint: {e}"),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn store(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join(format!("{FILE_NAME}.tmp"));
        let json = serde_json::to_vec(self).map_err(io::Error::other)?;
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, path(dir))?;
        sync_dir(dir)
    }
}

/// fsync a directory so that a created/renamed entry survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
