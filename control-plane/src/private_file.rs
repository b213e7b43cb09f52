//! Files that hold secrets (signing seed, admin token, Envoy's environment file): owner-only
//! (mode 0600) and never seen half-written.

use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};

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
