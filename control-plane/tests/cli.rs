//! The `kakeya` binary as a user runs it: its help, a mistyped verb, and `config show` reading
//! the environment.
//!
//! Also why this file exists for the build: an integration test makes `cargo test` build the
//! `kakeya` binary with the test run's own feature set, so `cargo xtask test` hands that one to
//! the end-to-end tests instead of building it a second time with other features (which
//! recompiled every dependency, candle included).

use std::process::Command;

fn kakeya() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kakeya"));
    c.env_remove("KAKEYA_CONFIG").env("RUST_LOG", "warn");
    c
}

#[test]
fn help_lists_every_verb_group() {
    let out = kakeya().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for verb in [
        "serve",
        "wal",
        "envoy",
        "config",
        "train",
        "eval",
        "pcs",
        "model",
        "bundle",
        "review",
        "feedback",
        "hrs",
        "cost",
        "ensemble",
        "canary",
        "microvote",
        "anomaly",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{verb} "))),
            "`kakeya --help` does not list {verb}:\n{help}"
        );
    }
}

/// `kakeya anomaly eval` end to end on a few rows of the embedded HaluEval sample (the tests run
/// in control-plane/, where ../shared/data is not): the table, the JSON report and the CSV.
#[test]
fn anomaly_eval_smoke() {
    let tmp = tempfile::tempdir().unwrap();
    let (json, csv) = (tmp.path().join("r.json"), tmp.path().join("f.csv"));
    let out = kakeya()
        .args([
            "anomaly", "eval", "--limit", "300", "--epochs", "5", "--json",
        ])
        .arg(&json)
        .arg("--features-out")
        .arg(&csv)
        .env_remove("KAKEYA_ANOMALY_DATASET")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| repetition |") && stdout.contains("KS D ="),
        "{stdout}"
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(
        r["n_train"].as_u64().unwrap()
            + r["n_ecdf"].as_u64().unwrap()
            + r["n_test_normal"].as_u64().unwrap(),
        300
    );
    assert!(r["overall"]["auroc"].as_f64().is_some());
    let lines = std::fs::read_to_string(&csv).unwrap().lines().count();
    assert_eq!(lines as u64, 1 + 300 + r["n_variants"].as_u64().unwrap());
}

#[test]
fn a_mistyped_verb_fails_with_usage() {
    let out = kakeya().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("unrecognized subcommand 'frobnicate'"),
        "{err}"
    );
    assert!(err.contains("--help"), "{err}");
}

#[test]
fn config_show_reflects_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = kakeya()
        .args(["config", "show"])
        .env("KAKEYA_DATA_DIR", dir.path())
        .env("KAKEYA_GATEWAY_ADDR", "127.0.0.1:18080")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["gateway_addr"], "127.0.0.1:18080");
    assert_eq!(cfg["data_dir"], dir.path().to_str().unwrap());
    assert!(cfg["microvote"]["addr"].is_string(), "{cfg}");
}
