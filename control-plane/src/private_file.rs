//! Files that hold secrets (signing seed, evidence key, admin token, Envoy's environment file):
//! owner-only (mode 0600) and never seen half-written.

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A 256-bit key kept in a file as one line of standard base64 (mode 0600): the bundle signing
/// seed ([`crate::registry::keys`]) and the evidence key ([`crate::evidence::crypto`]).
///
/// Only `kakeya serve` creates keys ([`KeyFile::load_or_create`]); every other command reads
/// them ([`KeyFile::load`]) and fails when they are missing: a command pointed at the wrong
/// data dir would otherwise make a key of its own, which the server never uses.
pub struct KeyFile<'a> {
    pub path: &'a Path,
    /// What the key is, for messages ("bundle signing key").
    pub what: &'a str,
    /// The variable that overrides the path (named in the error when the key is missing).
    pub var: &'a str,
}

impl KeyFile<'_> {
    /// Reads the key, never creating it.
    pub fn load(&self) -> anyhow::Result<[u8; 32]> {
        match std::fs::read(self.path) {
            Ok(bytes) => self.parse(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no {} at {}: only `kakeya serve` creates it. Set KAKEYA_DATA_DIR to the \
                 server's data dir (or {} to its key) and run again",
                self.what,
                self.path.display(),
                self.var
            ),
            Err(e) => Err(e).with_context(|| self.unreadable()),
        }
    }

    /// Reads the key, generating it from the OS RNG first when the file does not exist;
    /// true when this call generated it. Of two processes starting at once, both end up with
    /// the key of the first ([`create_once`]).
    pub fn load_or_create(&self) -> anyhow::Result<([u8; 32], bool)> {
        match std::fs::read(self.path) {
            Ok(bytes) => return Ok((self.parse(&bytes)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| self.unreadable()),
        }
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key)
            .map_err(|e| anyhow::anyhow!("the OS random number generator failed: {e}"))?;
        let line = format!("{}\n", STANDARD.encode(key));
        if create_once(self.path, line.as_bytes())? {
            Ok((key, true))
        } else {
            // Somebody else created it first: use theirs.
            Ok((self.parse(&std::fs::read(self.path)?)?, false))
        }
    }

    fn parse(&self, bytes: &[u8]) -> anyhow::Result<[u8; 32]> {
        let text = std::str::from_utf8(bytes).unwrap_or("").trim();
        let raw = STANDARD.decode(text).unwrap_or_default();
        match <[u8; 32]>::try_from(raw.as_slice()) {
            Ok(key) => Ok(key),
            Err(_) => bail!(
                "the {} file {} is malformed (expected standard base64 of 32 bytes)",
                self.what,
                self.path.display()
            ),
        }
    }

    fn unreadable(&self) -> String {
        format!("cannot read the {} {}", self.what, self.path.display())
    }
}

/// Creates `path` with `contents` (mode 0600) unless it exists; true when this call created it.
///
/// Writes a private temp file and *hard-links* it into place, which fails when `path` already
/// exists: of two processes starting at once, the first link wins and both then read the same
/// content (a rename would let the second silently replace the first's secret).
pub fn create_once(path: &Path, contents: &[u8]) -> anyhow::Result<bool> {
    let dir = parent(path);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        file_name(path)?,
        std::process::id(),
        crate::now_ms()
    ));
    write_new(&tmp, contents)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// Writes `path` (mode 0600), replacing it atomically (temp file + rename), so a reader sees
/// the old or the new content, never a part.
pub fn replace(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_file_name(format!(".{}.tmp", file_name(path)?));
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, contents)?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))
}

fn write_new(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn parent(path: &Path) -> PathBuf {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn file_name(path: &Path) -> anyhow::Result<String> {
    Ok(path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_string_lossy()
        .into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_once_private_and_replaced_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("sub/secret");
        assert!(create_once(&p, b"first").unwrap());
        assert!(!create_once(&p, b"second").unwrap(), "the first one stays");
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        replace(&p, b"third").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"third");
        #[cfg(unix)]
        assert_eq!(mode(&p), 0o600);
        // No temp files left behind.
        let left: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1);
    }
}
