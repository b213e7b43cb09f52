//! Checks on the data dir a CLI command is pointed at.
//!
//! Why: every `kakeya` verb reads `KAKEYA_DATA_DIR` (default `./.kakeya`). Run in a second
//! terminal without it, a registry or bundle command would silently create a fresh data dir
//! with a new, empty database and act on that instead of on the running stack (commands that
//! need the bundle signing key refuse to run without it: only `kakeya serve` creates it). The
//! key is created by the first `kakeya serve`, so its absence is the sign that no server has
//! used this data dir.

use crate::config::Config;

/// A warning for a CLI command (not `serve`) about to use a data dir no server has used.
pub fn unused_warning(cfg: &Config) -> Option<String> {
    if cfg.bundle_signing_seed_file.exists() {
        return None;
    }
    Some(format!(
        "the data dir {} has no bundle signing key ({}): no `kakeya serve` has used it, so this \
         command works on a new, empty state (and cannot sign or verify). To act on a running stack, \
         export KAKEYA_DATA_DIR=<its data dir> (`cargo xtask up` prints it) and run again",
        cfg.data_dir.display(),
        cfg.bundle_signing_seed_file.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_only_for_a_data_dir_without_the_servers_signing_key() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = Config {
            data_dir: tmp.path().to_path_buf(),
            bundle_signing_seed_file: tmp.path().join("keys/bundle-signing.seed"),
            ..Config::default()
        };
        let w = unused_warning(&cfg).expect("new data dir");
        assert!(w.contains("export KAKEYA_DATA_DIR"), "{w}");
        assert!(w.contains(&tmp.path().display().to_string()), "{w}");
        crate::registry::keys::load_or_create_seed(&cfg.bundle_signing_seed_file).unwrap();
        assert_eq!(unused_warning(&cfg), None);
    }
}
