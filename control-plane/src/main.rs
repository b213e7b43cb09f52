//! `kakeya`: the control-plane binary (serve, WAL replay, Envoy bootstrap, config, and the
//! offline hallucination-risk tools: train, eval, pcs build; model registry and bundles;
//! training jobs from the decision log: hrs train, hrs jobs; hrs ab, hrs drift).

use anyhow::Context;
use clap::{Parser, Subcommand};
use kakeya_control_plane::config::{process_env, Config};
use kakeya_control_plane::{envoy, ingest, server, store};
use std::path::PathBuf;

mod ab_cli;
mod anomaly_cli;
mod anomaly_model_cli;
mod audit_cli;
mod canary_cli;
mod cost_cli;
mod drift_cli;
mod ensemble_cli;
mod eval_feedback;
mod eval_gateway;
mod hrs;
mod learn_cli;
mod microvote_cli;
mod registry_cli;
mod review_cli;
mod scheduler_cli;

#[derive(Parser)]
#[command(name = "kakeya", version, about = "Kakeya Edge control plane")]
struct Cli {
    /// Path of kakeya.toml (optional; environment variables override it).
    #[arg(long, global = true, env = "KAKEYA_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the ingest (for Envoy) and admin listeners.
    Serve,
    /// Write-ahead log tools.
    Wal {
        #[command(subcommand)]
        cmd: WalCmd,
    },
    /// Envoy bootstrap tools.
    Envoy {
        #[command(subcommand)]
        cmd: EnvoyCmd,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Train the hallucination-risk model (L2 logistic regression + Platt) on a labelled JSONL.
    Train(hrs::TrainArgs),
    /// Evaluate hallucination-risk scoring against the reference HRS and a length-only baseline:
    /// by default grouped k-fold CV of the recipe; with --model a given model (file, registered
    /// version or champion), optionally as served through the gateway (--through). Prints a
    /// summary, writes a JSON report.
    Eval(hrs::EvalArgs),
    /// PCS tools.
    Pcs {
        #[command(subcommand)]
        cmd: PcsCmd,
    },
    /// Model registry (works on the database directly; same code path as the REST API).
    Model {
        #[command(subcommand)]
        cmd: ModelCmd,
    },
    /// Signed model bundles.
    Bundle {
        #[command(subcommand)]
        cmd: BundleCmd,
    },
    /// Review queue of escalated decisions and reviewers' labels (works on the database
    /// directly; same code path as /v1/reviews).
    Review {
        #[command(subcommand)]
        cmd: review_cli::ReviewCmd,
    },
    /// Record the agent owner's label of a decision (same code path as POST /v1/feedback).
    Feedback(review_cli::FeedbackArgs),
    /// The learning loop on the database directly: training jobs from the decision log and its
    /// labels (same code path as /v1/hrs/train and /v1/hrs/jobs).
    Hrs {
        #[command(subcommand)]
        cmd: learn_cli::HrsCmd,
    },
    /// Cost attribution on the database directly (same code path as /v1/cost): prices,
    /// summary, billing import, reconcile, forecast, recommendations, budgets, fixtures.
    Cost {
        #[command(subcommand)]
        cmd: cost_cli::CostCmd,
    },
    /// Adaptive per-tenant ensemble policies: tune, show, record strategy outcomes, history
    /// (on the database directly; same code path as /v1/ensemble/*).
    Ensemble {
        #[command(subcommand)]
        cmd: ensemble_cli::EnsembleCmd,
    },
    /// The canary controller: start, follow, pause, resume or abort a stepped canary with its
    /// gates (on the database directly; same code path as /v1/operator/canary).
    Canary {
        #[command(subcommand)]
        cmd: canary_cli::CanaryCmd,
    },
    /// Anomaly detection: train and evaluate the detector's VAE (offline), feedback on scores,
    /// the exact threshold optimiser, clusters of flagged decisions, the active-learning queue
    /// (on the database directly; same code path as /v1/anomaly/*).
    Anomaly {
        #[command(subcommand)]
        cmd: anomaly_cli::AnomalyCmd,
    },
    /// The WORM audit log: verify the hash chain and signed checkpoints, page entries, seal
    /// and export checkpoints (on the database directly; same code path as /v1/audit/*).
    Audit {
        #[command(subcommand)]
        cmd: audit_cli::AuditCmd,
    },
    /// Compliance reports (SOC 2, ISO 27001) from stored data, every figure with its source.
    Compliance {
        #[command(subcommand)]
        cmd: audit_cli::ComplianceCmd,
    },
    /// The micro-vote: the auxiliary hallucination model (all-MiniLM-L6-v2 + a trained head) the
    /// gate calls through the Envoy cluster kakeya_microvote; serve it, train its head, measure it.
    Microvote {
        #[command(subcommand)]
        cmd: microvote_cli::MicrovoteCmd,
    },
}

#[derive(Subcommand)]
enum ModelCmd {
    /// Register a model artifact (JSON written by `kakeya train`).
    Register { file: PathBuf },
    /// List registered models, newest first.
    List,
    /// Make VERSION the champion (or the challenger, or the canary), publishing a new signed
    /// bundle; the move is recorded in the alias history (actor cli:<your OS user>). Promoting
    /// the canary's version again with another --weight changes its weight.
    Promote {
        version: String,
        /// Set the challenger instead of the champion.
        #[arg(long, conflicts_with = "canary")]
        challenger: bool,
        /// Set the canary instead of the champion: it scores --weight of the tenants (or
        /// requests, --key request) before the challenger split.
        #[arg(long)]
        canary: bool,
        /// Challenger and canary (required for both): share (0..=1) they score.
        #[arg(long)]
        weight: Option<f64>,
        /// Canary only: tenant (sticky per tenant) or request (tenant/pcs_id); default the
        /// canary's current key, tenant for a new one.
        #[arg(long, value_parser = ["tenant", "request"], requires = "canary")]
        key: Option<String>,
        #[command(flatten)]
        why: registry_cli::WhyArgs,
    },
    /// Remove the challenger, publishing a new signed bundle (recorded in the alias history).
    RemoveChallenger {
        #[command(flatten)]
        why: registry_cli::WhyArgs,
    },
    /// Remove the canary, publishing a new signed bundle (recorded in the alias history): within
    /// one poll interval no request is scored by it.
    RemoveCanary {
        #[command(flatten)]
        why: registry_cli::WhyArgs,
    },
    /// The aliases that are set, with their weights (like GET /v1/aliases).
    Aliases {
        /// Print them as JSON (as the route answers) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Alias moves, newest first: who, when, why, from and to which version (one page, like
    /// GET /v1/aliases/history; pass the printed cursor as --cursor for the next one).
    History {
        /// Only this alias's moves.
        #[arg(long, value_enum)]
        alias: Option<kakeya_control_plane::api::registry::HistoryAlias>,
        /// Moves per page, 1..=1000.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// next_cursor of the previous page.
        #[arg(long)]
        cursor: Option<String>,
        /// Print the page as JSON (as the route answers it) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make the registered model --model score --task for the bundles whose champion is
    /// PARENT (for every tenant, or only --tenant): tenant + task → task → champion. Published
    /// at once when PARENT is the champion; promotion and rollback move it with PARENT.
    AttachTask {
        parent: String,
        /// qa, dialogue, summarization, rag or other.
        #[arg(long)]
        task: String,
        /// The registered task model.
        #[arg(long)]
        model: String,
        /// Only for this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// The task models of a registered model (like GET /v1/models/{version}/tasks).
    Tasks { version: String },
}

#[derive(Subcommand)]
enum BundleCmd {
    /// Print the public key (standard base64) that verifies this control plane's bundles.
    PublicKey,
    /// Print the current bundle's version, digest and models, after verifying it.
    Show,
    /// Sign, once per database, the model rows registered before migration 0004 (they have no
    /// signature; until then they are refused). An explicit operator step, never done at start:
    /// whoever can write the database could otherwise get a row of their own signed.
    SignUnsigned,
    /// After a change of the bundle signing key (e.g. the data dir was replaced while the
    /// database was kept; `kakeya serve` then refuses to start): re-sign, with the current key,
    /// the model rows whose signature verifies with the previous key, and publish the aliases
    /// again as a bundle signed with the current key. Rows the previous key did not sign are left
    /// as they are (refused). Run it with KAKEYA_DATA_DIR of the server, then re-render the
    /// Envoy configuration (the filters must trust the new public key).
    Rekey {
        /// The previous bundle signing seed (the old `<data_dir>/keys/bundle-signing.seed`).
        #[arg(long, value_name = "FILE")]
        previous_seed_file: PathBuf,
    },
}

#[derive(Subcommand)]
enum PcsCmd {
    /// Build a PCS from a response text (recipe text-pcs-v1) and print it as JSON.
    Build(hrs::PcsBuildArgs),
}

#[derive(Subcommand)]
enum WalCmd {
    /// Re-apply WAL records through the dedup-aware path (idempotent). Stop `kakeya serve` first.
    Replay {
        /// Start at the oldest segment instead of the checkpoint.
        #[arg(long)]
        from_start: bool,
    },
}

#[derive(Subcommand)]
enum EnvoyCmd {
    /// Render the Envoy 1.40 bootstrap YAML for the gateway.
    Render {
        /// Path of the compiled gate filter (.wasm) as Envoy will see it.
        #[arg(long)]
        wasm: PathBuf,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Give every x-tenant-id value its own bucket (Envoy dynamic descriptors).
        #[arg(long)]
        dynamic_tenant_buckets: bool,
        /// Leave the gate filter out (benchmark baseline only: nothing is verified).
        #[arg(long)]
        without_gate: bool,
    },
    /// Render the bootstrap to --out (as `render` does) and replace this process with Envoy
    /// on it, with the gate keyring in Envoy's environment (KAKEYA_GATE_KEYRING).
    Run {
        /// Path of the compiled gate filter (.wasm) as Envoy will see it.
        #[arg(long)]
        wasm: PathBuf,
        /// Where the bootstrap goes (mode 0600; `<out>.env` next to it).
        #[arg(long)]
        out: PathBuf,
        /// The Envoy binary.
        #[arg(long, default_value = "envoy")]
        envoy: PathBuf,
        /// Leave the gate filter out (benchmark baseline only: nothing is verified).
        #[arg(long)]
        without_gate: bool,
        /// Further Envoy arguments (after `--`), e.g. `-- --log-level warn`.
        #[arg(last = true)]
        envoy_args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the effective configuration as JSON, secrets redacted.
    Show,
    /// Print the admin API bearer token (KAKEYA_ADMIN_TOKEN, else the token file, generated at
    /// first use), e.g. `curl -H "Authorization: Bearer $(kakeya config admin-token)" …`.
    AdminToken,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=info")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(cli) {
        eprintln!("kakeya: error: {e:#}");
        std::process::exit(1);
    }
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    let cfg = Config::load(cli.config.as_deref(), &process_env())?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    Ok(cfg)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // The offline tools need no service configuration.
    if let Cmd::Anomaly {
        cmd: anomaly_cli::AnomalyCmd::Model(cmd),
    } = cli.cmd
    {
        return anomaly_model_cli::run(cmd);
    }
    match &cli.cmd {
        Cmd::Train(a) if !a.register => return hrs::train(a, None),
        Cmd::Eval(a) if !a.needs_registry() => return hrs::eval(a, None),
        Cmd::Pcs {
            cmd: PcsCmd::Build(a),
        } => return hrs::pcs_build(a),
        Cmd::Microvote { cmd } => {
            if let Some(r) = microvote_cli::run_offline(cmd) {
                return r;
            }
        }
        _ => {}
    }
    let cfg = load(&cli)?;
    cfg.apply_process_settings();
    // `serve` creates the data dir's state; `envoy render|run` fail without the server's key
    // anyway; `config show` changes nothing.
    if !matches!(cli.cmd, Cmd::Serve | Cmd::Envoy { .. } | Cmd::Config { .. }) {
        if let Some(w) = kakeya_control_plane::data_dir::unused_warning(&cfg) {
            tracing::warn!("{w}");
        }
    }
    match cli.cmd {
        Cmd::Serve => {
            if cfg.signature_disabled() {
                tracing::warn!(
                    "!!! SIGNATURE CHECKING IS OFF (PCS_SIGN_ALG=none for at least one signer): anyone can submit PCS. Set PCS_SIGN_ALG=hmac|ed25519 !!!"
                );
            }
            runtime()?.block_on(server::serve(cfg))
        }
        Cmd::Wal {
            cmd: WalCmd::Replay { from_start },
        } => runtime()?.block_on(async {
            let db = store::Db::connect(&cfg.database_url, None)
                .await
                .context("cannot open the database; check DATABASE_URL")?;
            let pb = kakeya_control_plane::progress::spinner("replaying WAL records");
            let (stats, _) = ingest::replay(
                &db,
                &cfg.wal_dir,
                from_start,
                &cfg.apply_params(),
                cfg.group_commit_max_batch,
                |s| pb.set_position(s.read),
            )
            .await?;
            pb.finish_and_clear();
            println!(
                "read {} records: {} applied fresh, {} already present, {} idempotency conflicts, {} invalid; skipped {} corrupt bytes in {} ranges, {} torn-tail bytes",
                stats.read,
                stats.applied_fresh,
                stats.already_present,
                stats.conflicts,
                stats.invalid,
                stats.corrupt_bytes,
                stats.corrupt_ranges,
                stats.torn_tail_bytes
            );
            if stats.corrupt_bytes > 0 {
                eprintln!("WARNING: the WAL has corrupt regions (byte ranges in the log above); records in them were not replayed");
            }
            Ok(())
        }),
        Cmd::Envoy {
            cmd:
                EnvoyCmd::Render {
                    wasm,
                    out,
                    dynamic_tenant_buckets,
                    without_gate,
                },
        } => {
            let mut cfg = cfg;
            cfg.load_bundle_key()
                .context("bundle signing key (KAKEYA_BUNDLE_SIGNING_SEED_FILE)")?;
            let mut opts = envoy::RenderOptions::from_config(&cfg, wasm);
            opts.dynamic_tenant_buckets = dynamic_tenant_buckets;
            opts.without_gate = without_gate;
            let env_file = envoy::render_to_file(&cfg, &opts, &out)?;
            println!(
                "wrote {} and {} (mode 0600; Envoy needs {} from it in its environment)",
                out.display(),
                env_file.display(),
                envoy::KEYRING_ENV
            );
            Ok(())
        }
        Cmd::Envoy {
            cmd:
                EnvoyCmd::Run {
                    wasm,
                    out,
                    envoy: envoy_bin,
                    without_gate,
                    envoy_args,
                },
        } => {
            let mut cfg = cfg;
            cfg.load_bundle_key()
                .context("bundle signing key (KAKEYA_BUNDLE_SIGNING_SEED_FILE)")?;
            let mut opts = envoy::RenderOptions::from_config(&cfg, wasm);
            opts.without_gate = without_gate;
            envoy::render_to_file(&cfg, &opts, &out)?;
            let mut cmd = envoy::envoy_command(&cfg, &envoy_bin, &out, &envoy_args)?;
            // exec: Envoy keeps this process id, so whoever started us can signal it directly.
            use std::os::unix::process::CommandExt;
            let err = cmd.exec();
            Err(anyhow::anyhow!(
                "cannot start {}: {err}",
                envoy_bin.display()
            ))
        }
        Cmd::Config {
            cmd: ConfigCmd::Show,
        } => {
            println!("{}", cfg.redacted_json());
            Ok(())
        }
        Cmd::Config {
            cmd: ConfigCmd::AdminToken,
        } => {
            let t = cfg.read_admin_token()?;
            eprintln!("admin token: {}", t.source);
            println!("{}", t.value);
            Ok(())
        }
        Cmd::Train(a) => hrs::train(&a, Some(&cfg)),
        Cmd::Eval(a) => hrs::eval(&a, Some(&cfg)),
        Cmd::Model { cmd } => runtime()?.block_on(registry_cli::model(cfg, cmd)),
        Cmd::Bundle { cmd } => runtime()?.block_on(registry_cli::bundle(cfg, cmd)),
        Cmd::Review { cmd } => runtime()?.block_on(review_cli::review(cfg, cmd)),
        Cmd::Feedback(a) => runtime()?.block_on(review_cli::feedback(cfg, a)),
        Cmd::Hrs { cmd } => runtime()?.block_on(learn_cli::run(cfg, cmd)),
        Cmd::Cost { cmd } => runtime()?.block_on(cost_cli::run(cfg, cmd)),
        Cmd::Ensemble { cmd } => runtime()?.block_on(ensemble_cli::run(cfg, cmd)),
        Cmd::Canary { cmd } => runtime()?.block_on(canary_cli::run(cfg, cmd)),
        Cmd::Anomaly { cmd } => runtime()?.block_on(anomaly_cli::run(cfg, cmd)),
        Cmd::Audit { cmd } => runtime()?.block_on(audit_cli::audit(cfg, cmd)),
        Cmd::Compliance { cmd } => runtime()?.block_on(audit_cli::compliance(cfg, cmd)),
        Cmd::Microvote { .. } => microvote_cli::serve(&cfg),
        // Handled above, before the configuration is loaded.
        Cmd::Pcs { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval_with_folds(k: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["kakeya", "eval", "--dataset", "d.jsonl", "--folds", k])
    }

    #[test]
    fn eval_refuses_fewer_than_two_folds() {
        for k in ["0", "1"] {
            let e = eval_with_folds(k)
                .err()
                .unwrap_or_else(|| panic!("--folds {k} accepted"))
                .to_string();
            assert!(
                e.contains("--folds") && e.contains("at least 2 folds"),
                "{e}"
            );
        }
        assert!(eval_with_folds("x").is_err());
        assert!(eval_with_folds("2").is_ok());
    }

    #[test]
    fn review_verbs_parse_and_refuse_unknown_labels() {
        let ok = [
            "kakeya", "review", "label", "acme", "p1", "--label", "faithful",
        ];
        assert!(Cli::try_parse_from(ok).is_err(), "--reviewer is required");
        let mut ok = ok.to_vec();
        ok.extend(["--reviewer", "alice"]);
        assert!(Cli::try_parse_from(&ok).is_ok());
        ok[6] = "maybe";
        assert!(Cli::try_parse_from(&ok).is_err());
        assert!(Cli::try_parse_from(["kakeya", "review", "list", "--status", "closed"]).is_err());
        let list = ["kakeya", "review", "list", "--max-chars", "10"];
        assert!(
            Cli::try_parse_from(list).is_err(),
            "--max-chars needs --evidence"
        );
        let mut list = list.to_vec();
        list.push("--evidence");
        assert!(Cli::try_parse_from(&list).is_ok());
        assert!(Cli::try_parse_from(["kakeya", "review", "purge-evidence", "--all"]).is_ok());
        assert!(
            Cli::try_parse_from(["kakeya", "feedback", "p1", "--label", "hallucinated"]).is_ok()
        );
        let bad_source = [
            "kakeya", "feedback", "p1", "--label", "faithful", "--source", "x",
        ];
        assert!(Cli::try_parse_from(bad_source).is_err());
    }

    #[test]
    fn hrs_verbs_parse_times_and_durations() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["kakeya", "hrs"], args].concat());
        assert!(parse(&["train", "--since", "7d"]).is_ok());
        assert!(parse(&["train", "--since", "2026-01-01T00:00:00Z", "--until", "36h"]).is_ok());
        assert!(parse(&[
            "train",
            "--since",
            "2026-01-01T00:00:00+02:00",
            "--seed",
            "3"
        ])
        .is_ok());
        assert!(parse(&["train"]).is_err(), "--since is required");
        assert!(parse(&["train", "--since", "last tuesday"]).is_err());
        assert!(parse(&["train", "--since", "7d", "--model-kind", "svm"]).is_err());
        assert!(parse(&["jobs"]).is_ok());
        assert!(parse(&["jobs", "list", "--status", "failed"]).is_ok());
        assert!(parse(&["jobs", "list", "--status", "done"]).is_err());
        assert!(parse(&["jobs", "show", "3"]).is_ok());
        assert!(parse(&["jobs", "show", "x"]).is_err());
    }

    #[test]
    fn ab_verbs_parse_and_refuse_bad_limits() {
        let start = [
            "kakeya",
            "hrs",
            "ab",
            "start",
            "--name",
            "ranker",
            "--control",
            "lr-a",
            "--treatment",
            "lr-b",
            "--split",
            "0.2",
            "--duration",
            "7d",
        ];
        assert!(Cli::try_parse_from(start).is_ok());
        assert!(
            Cli::try_parse_from(&start[..12]).is_err(),
            "--duration is required"
        );
        let mut bad = start.to_vec();
        bad[11] = "half";
        assert!(Cli::try_parse_from(&bad).is_err());
        for ok in [
            &["kakeya", "hrs", "ab", "status", "ab-ranker-1"][..],
            &["kakeya", "hrs", "ab", "stop", "ab-ranker-1"],
            &["kakeya", "hrs", "ab", "list"],
            &["kakeya", "hrs", "ab", "list", "--limit", "1000"],
        ] {
            assert!(Cli::try_parse_from(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            &["kakeya", "hrs", "ab", "status"][..],
            &["kakeya", "hrs", "ab", "list", "--limit", "0"],
            &["kakeya", "hrs", "ab", "list", "--limit", "1001"],
            &["kakeya", "hrs", "ab", "pause", "ab-ranker-1"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn allow_other_models_needs_through() {
        let base = [
            "kakeya",
            "eval",
            "--dataset",
            "d.jsonl",
            "--model",
            "m.json",
        ];
        let mut args = base.to_vec();
        args.push("--allow-other-models");
        assert!(Cli::try_parse_from(&args).is_err());
        args.extend(["--through", "http://127.0.0.1:8080"]);
        assert!(Cli::try_parse_from(&args).is_ok());
    }
}
