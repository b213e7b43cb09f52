//! `kakeya audit …` and `kakeya compliance …`: the audit log and the compliance reports on the
//! database directly, through the same functions as `/v1/audit/*` and `/v1/compliance/report`.

use crate::ab_cli::print;
use anyhow::Context;
use clap::Subcommand;
use kakeya_control_plane::audit::api::{check_range, report_args, Anchor};
use kakeya_control_plane::audit::{compliance, store, verify};
use kakeya_control_plane::config::Config;
use kakeya_control_plane::registry::keys;
use kakeya_control_plane::store::Db;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Re-walk the hash chain and the signed checkpoints of seqs FROM..=TO (default all) and
    /// print the report; exits non-zero naming the first broken link (seq, problem).
    Verify {
        #[arg(long)]
        from: Option<i64>,
        #[arg(long)]
        to: Option<i64>,
        /// Also recompute every decision batch's Merkle root from the decision-log rows it
        /// covers (a row altered after it was recorded fails, named).
        #[arg(long)]
        deep: bool,
    },
    /// Entries from a seq on, as JSON (like GET /v1/audit/entries).
    Entries {
        #[arg(long, default_value_t = 1)]
        from_seq: i64,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// The verification benchmark on a fresh SQLite database in the temp dir (what
    /// `cargo xtask bench --audit` runs); prints its figures as JSON.
    Bench {
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        #[arg(long, default_value_t = 2_000)]
        appends: u64,
    },
    /// Signed checkpoints: seal now, or export the newest for a timestamping service.
    Checkpoint {
        #[command(subcommand)]
        cmd: CheckpointCmd,
    },
}

#[derive(Subcommand)]
pub enum CheckpointCmd {
    /// Seal every unsealed entry now (segments of [audit] rotate_entries, then the rest), with
    /// the control plane's key; prints the new checkpoints.
    Seal,
    /// The newest checkpoint in the anchoring format (kakeya-audit-anchor-v1, docs/AUDIT.md):
    /// its message_imprint is what an RFC 3161 timestamp request carries.
    Export {
        /// Write it here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum ComplianceCmd {
    /// A SOC 2 or ISO 27001 report over [FROM, TO) from stored data, every figure with its
    /// source (like GET /v1/compliance/report).
    Report {
        #[arg(long, value_parser = ["soc2", "iso27001"])]
        framework: String,
        /// RFC 3339, inclusive (e.g. 2026-11-01T00:00:00Z).
        #[arg(long)]
        from: String,
        /// RFC 3339, exclusive.
        #[arg(long)]
        to: String,
        #[arg(long, default_value = "json", value_parser = ["json", "html"])]
        format: String,
        /// Write it here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

async fn open(cfg: &Config) -> anyhow::Result<(Db, [u8; 32])> {
    let db = Db::connect(&cfg.database_url, None)
        .await
        .context("cannot open the database; check DATABASE_URL")?;
    let seed = keys::load_seed(&cfg.bundle_signing_seed_file)
        .context("the control plane's signing key (KAKEYA_BUNDLE_SIGNING_SEED_FILE) signs and verifies checkpoints")?;
    Ok((db, seed))
}

fn emit(text: &str, out: Option<PathBuf>) -> anyhow::Result<()> {
    match out {
        Some(p) => {
            std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
            eprintln!("wrote {}", p.display());
            Ok(())
        }
        None => {
            use std::io::Write;
            std::io::stdout().lock().write_all(text.as_bytes())?;
            Ok(())
        }
    }
}

pub async fn audit(cfg: Config, cmd: AuditCmd) -> anyhow::Result<()> {
    if let AuditCmd::Bench { entries, appends } = cmd {
        return print(&kakeya_control_plane::audit::bench::run(entries, appends).await?);
    }
    let (db, seed) = open(&cfg).await?;
    match cmd {
        AuditCmd::Verify { from, to, deep } => {
            check_range(from, to).map_err(|e| anyhow::anyhow!("{e}"))?;
            let r = verify::verify_with(&db, from, to, &keys::public_key_b64(&seed), deep).await?;
            print(&r)?;
            match &r.first_break {
                None => {
                    eprintln!(
                        "audit log intact: {} entries, {} checkpoints verified (seq {}..={})",
                        r.entries_checked, r.checkpoints_checked, r.from_seq, r.to_seq
                    );
                    Ok(())
                }
                Some(b) => {
                    let p = serde_json::to_value(b.problem)?;
                    anyhow::bail!(
                        "audit log broken at seq {}: {} ({})",
                        b.seq,
                        p.as_str().unwrap_or_default(),
                        b.detail
                    )
                }
            }
        }
        AuditCmd::Bench { .. } => Ok(()),
        AuditCmd::Entries { from_seq, limit } => {
            print(&store::entries(&db, from_seq, limit).await?)
        }
        AuditCmd::Checkpoint {
            cmd: CheckpointCmd::Seal,
        } => {
            let c =
                store::seal(&db, &seed, &cfg.audit, kakeya_control_plane::now_ms(), true).await?;
            eprintln!("sealed {} segment(s)", c.len());
            print(&c)
        }
        AuditCmd::Checkpoint {
            cmd: CheckpointCmd::Export { out },
        } => {
            let c = store::latest_checkpoint(&db).await?.context(
                "no checkpoint yet: `kakeya audit checkpoint seal` seals the unsealed entries",
            )?;
            emit(&(serde_json::to_string_pretty(&Anchor::of(c))? + "\n"), out)
        }
    }
}

pub async fn compliance(cfg: Config, cmd: ComplianceCmd) -> anyhow::Result<()> {
    let ComplianceCmd::Report {
        framework,
        from,
        to,
        format,
        out,
    } = cmd;
    let (fw, from, to, html) =
        report_args(&framework, &from, &to, Some(&format)).map_err(anyhow::Error::msg)?;
    let (db, seed) = open(&cfg).await?;
    let r = compliance::report(
        &db,
        fw,
        from,
        to,
        &keys::public_key_b64(&seed),
        kakeya_control_plane::now_ms(),
    )
    .await?;
    let text = if html {
        compliance::html(&r)
    } else {
        serde_json::to_string_pretty(&r)? + "\n"
    };
    emit(&text, out)
}
