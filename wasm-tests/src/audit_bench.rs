//! The audit-log benchmark (`cargo xtask bench --audit`): verifying a chain of 1,000,000
//! entries with its signed checkpoints, run in-process through
//! [`kakeya_control_plane::audit::bench`]; the section of docs/BENCHMARKS.md it rewrites.

use crate::bench_doc::{loadavg, machine, replace_between, verdict};
use kakeya_control_plane::audit::bench::{AuditBench, SEGMENT};

pub const REPRODUCE: &str = "cargo xtask bench --audit";
pub const BEGIN: &str = "<!-- audit-bench:begin -->";
pub const END: &str = "<!-- audit-bench:end -->";
pub const ENTRIES: u64 = 1_000_000;
pub const APPENDS: u64 = 2_000;

pub fn run() -> anyhow::Result<AuditBench> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(kakeya_control_plane::audit::bench::run(ENTRIES, APPENDS))
}

/// The PostgreSQL row of the table, when that half ran.
fn postgres_row(b: &AuditBench) -> String {
    match (b.postgres_verify_secs, b.postgres_verify_ok) {
        (Some(secs), Some(ok)) => {
            let per_million = secs * 1_000_000.0 / b.entries.max(1) as f64;
            format!(
                "| the same chain from PostgreSQL (`{}` set) | {secs:.2} s ({per_million:.2} s per million; all verified: {ok}) | < 1 s per million: {} |\n",
                kakeya_control_plane::audit::bench::PG_VAR,
                verdict(ok && per_million < 1.0)
            )
        }
        _ => String::new(),
    }
}

pub fn markdown(b: &AuditBench) -> String {
    let per_million = b.verify_secs * 1_000_000.0 / b.entries.max(1) as f64;
    format!(
        "{BEGIN}\n## Audit log: verifying the chain\n\n\
Reproduce with `{REPRODUCE}` ({}; load average {} when it ran). Release build, SQLite in a \
temp directory, one process. `audit::verify::verify` reads every entry from the database \
(8192 per query as one length-prefixed text, one part per core, docs/AUDIT.md *Verify*), \
recomputes its SHA-256, checks its link, then checks every checkpoint's Ed25519 signature, \
head hash and RFC 6962 segment root ({} checkpoints of {SEGMENT} entries). The in-memory \
walk is the hashing and linking alone. Appends are `audit::record`, one transaction each \
(head-row lock, savepoint, insert), on a synchronous=FULL SQLite.\n\n\
| what | result | target |\n|---|---|---|\n\
| verify {} entries ({} payload bytes each on average) with {} checkpoints, from SQLite | {:.2} s ({:.2} s per million; all verified: {}) | < 1 s per million: {} |\n{}\
| the same walk over the entries in memory | {:.2} s | |\n\
| build the chain (hash + bulk insert) and seal it | {:.1} s + {:.2} s | |\n\
| {} single appends | {:.0} appends/s | |\n\
{END}\n",
        machine(),
        loadavg(),
        b.checkpoints,
        b.entries,
        b.payload_bytes,
        b.checkpoints,
        b.verify_secs,
        per_million,
        b.verify_ok,
        verdict(b.verify_ok && per_million < 1.0),
        postgres_row(b),
        b.walk_secs,
        b.build_secs,
        b.seal_secs,
        b.appends,
        b.appends_per_sec,
    )
}

pub fn splice(doc: &str, section: &str) -> String {
    replace_between(doc, BEGIN, END, section)
        .unwrap_or_else(|| format!("{}\n\n{}", doc.trim_end(), section))
}
