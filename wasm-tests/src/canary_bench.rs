//! The canary benchmarks (`cargo xtask bench --canary`): one gate evaluation over a step's
//! window of 100,000 decisions and a policy simulation replaying 1,000,000 recorded decisions,
//! run in-process through [`kakeya_control_plane::canary::bench`]; the section of
//! docs/BENCHMARKS.md they rewrite.

use crate::bench_doc::{loadavg, machine, replace_between, verdict};
use kakeya_control_plane::canary::bench::CanaryBench;

pub const REPRODUCE: &str = "cargo xtask bench --canary";
pub const BEGIN: &str = "<!-- canary-bench:begin -->";
pub const END: &str = "<!-- canary-bench:end -->";
pub const GATE_WINDOW: u64 = 100_000;
pub const REPLAY: u64 = 1_000_000;

pub fn run() -> anyhow::Result<CanaryBench> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(kakeya_control_plane::canary::bench::run(
        GATE_WINDOW,
        REPLAY,
    ))
}

pub fn markdown(b: &CanaryBench) -> String {
    format!(
        "{BEGIN}\n## Canary: gate evaluation and policy replay\n\n\
Reproduce with `{REPRODUCE}` ({}; load average {} when it ran). Release build, SQLite in a \
temp directory, one process. The gate is `canary::gates::check` (counts, escalations and \
effective labels aggregated in SQL, nearest-rank p95 per arm); the replay is the whole \
`simulator::simulate` (read of the window's recorded decisions with features and labels, \
replay through the candidate bundle, the stored result).\n\n\
| what | result | target |\n|---|---|---|\n\
| gate evaluation over a step's window of {} decisions ({} canary), {} runs | best {:.1} ms, median {:.1} ms | < 500 ms: {} |\n\
| replay of {} recorded decisions, threshold change (escalation {:.4} → {:.4}) | {:.2} s | < 10 s: {} |\n\
| replay of {} recorded decisions, model change (every decision rescored from its features) | {:.2} s | < 10 s: {} |\n\
{END}\n",
        machine(),
        loadavg(),
        b.gate_window,
        b.gate_canary,
        b.gate_runs,
        b.gate_best_ms,
        b.gate_median_ms,
        verdict(b.gate_median_ms < 500.0),
        b.replay_decisions,
        b.replay_escalation_before,
        b.replay_escalation_after,
        b.replay_threshold_secs,
        verdict(b.replay_threshold_secs < 10.0),
        b.replay_decisions,
        b.replay_model_secs,
        verdict(b.replay_model_secs < 10.0),
    )
}

pub fn splice(doc: &str, section: &str) -> String {
    replace_between(doc, BEGIN, END, section)
        .unwrap_or_else(|| format!("{}\n\n{}", doc.trim_end(), section))
}
