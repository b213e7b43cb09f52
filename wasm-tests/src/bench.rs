//! In-filter benchmark: the golden PCS through the built gate module in the harness.
//!
//! Three measures per request, each summarised over all requests (no sampling):
//! * `guest verify` — the filter's own `x-kakeya-verify-ns`: parse + signature + verify, timed
//!   in the guest with the host clock (`proxy_get_current_time_nanoseconds`);
//! * `on_request_body` — host wall time of the body callback at end of stream (body read,
//!   parse + signature + verify, four header writes, hostcall transitions);
//! * `whole request` — host wall time from context create to delete.
//!
//! And, with a signed model bundle installed through a poll, a v0.2 PCS carrying 2 KB of
//! evidence: the guest's verify time (now including the evidence binding) and its features +
//! scoring time (`x-kakeya-score-ns`), separately and summed per request.

use crate::{load_gate_wasm, Harness, Outcome};
use anyhow::{bail, Context, Result};
use serde::Serialize;

/// Golden case 1 (HMAC `testsecret`).
pub const GOLDEN_1: &[u8] = include_bytes!("../../core/tests/data/pcs_tiny_case_1.json");
/// Gate configuration of the benchmark.
pub const BENCH_CONFIG: &[u8] = br#"{"keyring":{"global":{"alg":"hmac","keys":["testsecret"]}}}"#;

/// p50 / p99 / mean in µs.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
}

impl Summary {
    /// From samples in ns (nearest-rank percentiles).
    pub fn from_ns(samples: &mut [u64]) -> Summary {
        samples.sort_unstable();
        let n = samples.len();
        let pick = |q: f64| -> f64 {
            if n == 0 {
                return f64::NAN;
            }
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            samples.get(rank - 1).copied().unwrap_or(0) as f64 / 1000.0
        };
        let mean = if n == 0 {
            f64::NAN
        } else {
            samples.iter().map(|&x| x as f64).sum::<f64>() / n as f64 / 1000.0
        };
        Summary {
            p50_us: pick(0.50),
            p99_us: pick(0.99),
            mean_us: mean,
        }
    }
}

/// Result of [`in_filter`].
#[derive(Debug, Clone, Serialize)]
pub struct InFilterReport {
    pub requests: usize,
    pub warmup: usize,
    /// In-guest parse + signature + verify (`x-kakeya-verify-ns`).
    pub guest_verify: Summary,
    /// Host-timed `proxy_on_request_body` at end of stream.
    pub on_request_body: Summary,
    /// Host-timed whole request (create → headers → body → done/log/delete).
    pub whole_request: Summary,
    /// Shorthands used by the benchmark page.
    pub guest_p50_us: f64,
    pub guest_p99_us: f64,
    pub wasm_bytes: usize,
    pub runtime: String,
    /// Verify + features + scoring with a model bundle and 2 KB of evidence.
    pub scoring: ScoringReport,
    /// What the cost tracer adds per request.
    pub tracer: TracerReport,
}

/// The cost tracer's price (see [`tracer_cost`]).
#[derive(Debug, Clone, Serialize)]
pub struct TracerReport {
    pub requests: usize,
    /// Host-timed whole request, tracer on (the default) and off (`"cost_tracer": false`).
    pub with_tracer: Summary,
    pub without_tracer: Summary,
    /// On minus off: the medians' and the means' difference, µs.
    pub added_p50_us: f64,
    pub added_mean_us: f64,
    /// The median of the per-request differences on − off, each pair run back to back (their
    /// order alternating), µs: the estimate machine load disturbs least.
    pub added_paired_median_us: f64,
    /// The same median in each of [`TRACER_BLOCKS`] consecutive blocks of pairs: its spread
    /// over the run (min, median, max of the blocks), µs.
    pub added_block_medians_us: Vec<f64>,
    pub added_block_min_us: f64,
    pub added_block_median_us: f64,
    pub added_block_max_us: f64,
    /// The hostcalls one request makes with the tracer on minus off (harness census), by
    /// import name: what the tracer costs besides its own guest code.
    pub added_hostcalls: std::collections::BTreeMap<String, i64>,
}

/// Blocks the tracer benchmark's pairs are summarised in (for the spread).
pub const TRACER_BLOCKS: usize = 10;

/// The median of `v` (NaN when empty); reorders `v`.
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median of the paired differences, overall and per block (see [`TracerReport`]), µs.
pub fn paired_differences(with: &[u64], without: &[u64], blocks: usize) -> (f64, Vec<f64>) {
    let d: Vec<f64> = with
        .iter()
        .zip(without)
        .map(|(&a, &b)| (a as f64 - b as f64) / 1000.0)
        .collect();
    let size = d.len().div_ceil(blocks.max(1)).max(1);
    let per_block = d.chunks(size).map(|c| median(&mut c.to_vec())).collect();
    (median(&mut d.clone()), per_block)
}

/// In-guest times of a scored request (see [`scoring`]).
#[derive(Debug, Clone, Serialize)]
pub struct ScoringReport {
    pub requests: usize,
    /// Approximate evidence size in bytes.
    pub evidence_bytes: usize,
    /// Parse + signature + evidence binding + verify (`x-kakeya-verify-ns`).
    pub guest_verify: Summary,
    /// Features + scoring (`x-kakeya-score-ns`).
    pub guest_score: Summary,
    /// Both, per request.
    pub guest_total: Summary,
}

impl InFilterReport {
    /// Rows for `| measure | requests | p50 µs | p99 µs | mean µs |`.
    pub fn markdown_rows(&self) -> String {
        let row = |name: &str, s: &Summary| {
            format!(
                "| {name} | {} | {:.1} | {:.1} | {:.1} |",
                self.requests, s.p50_us, s.p99_us, s.mean_us
            )
        };
        [
            row(
                "in-guest parse + signature + verify (x-kakeya-verify-ns)",
                &self.guest_verify,
            ),
            row(
                "on_request_body callback (host-timed)",
                &self.on_request_body,
            ),
            row(
                "whole request through the filter (host-timed)",
                &self.whole_request,
            ),
            self.scoring_row(
                "in-guest parse + signature + evidence binding + verify, 2 KB evidence",
                &self.scoring.guest_verify,
            ),
            self.scoring_row(
                "in-guest features + scoring, 2 KB evidence (x-kakeya-score-ns)",
                &self.scoring.guest_score,
            ),
            self.scoring_row(
                "in-guest verify + features + scoring, 2 KB evidence",
                &self.scoring.guest_total,
            ),
            self.tracer_row(
                "whole request, cost tracer off",
                &self.tracer.without_tracer,
            ),
            self.tracer_row(
                "whole request, cost tracer on (default)",
                &self.tracer.with_tracer,
            ),
            format!(
                "| added by the cost tracer (on − off) | {} | {:.2} | | {:.2} |",
                self.tracer.requests, self.tracer.added_p50_us, self.tracer.added_mean_us
            ),
            format!(
                "| added by the cost tracer, median of paired differences (blocks: min {:.2}, max {:.2}) | {} | {:.2} | | |",
                self.tracer.added_block_min_us,
                self.tracer.added_block_max_us,
                self.tracer.requests,
                self.tracer.added_paired_median_us
            ),
        ]
        .join("\n")
    }

    fn tracer_row(&self, name: &str, s: &Summary) -> String {
        format!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            self.tracer.requests, s.p50_us, s.p99_us, s.mean_us
        )
    }

    fn scoring_row(&self, name: &str, s: &Summary) -> String {
        format!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            self.scoring.requests, s.p50_us, s.p99_us, s.mean_us
        )
    }
}

/// Runs `requests` golden submissions (after a warm-up of `requests / 10`, at least 100).
pub fn in_filter(requests: usize) -> Result<InFilterReport> {
    let wasm = load_gate_wasm()?;
    let mut h = Harness::new(&wasm, BENCH_CONFIG)?;
    if !h.configured() {
        bail!(
            "the gate refused the benchmark configuration: {:?}",
            h.logs()
        );
    }
    let warmup = (requests / 10).max(100);
    let headers = [("content-type", "application/json")];
    for _ in 0..warmup {
        h.request("POST", kakeya_core::SUBMIT_PATH, &headers, GOLDEN_1)?;
    }
    let mut guest = Vec::with_capacity(requests);
    let mut body = Vec::with_capacity(requests);
    let mut total = Vec::with_capacity(requests);
    for i in 0..requests {
        let out = h.request("POST", kakeya_core::SUBMIT_PATH, &headers, GOLDEN_1)?;
        let Outcome::Forwarded { .. } = &out else {
            bail!("request {i} was not forwarded: {out:?}")
        };
        let ns: u64 = out
            .header("x-kakeya-verify-ns")
            .context("forwarded without x-kakeya-verify-ns")?
            .parse()
            .context("x-kakeya-verify-ns is not an integer")?;
        guest.push(ns);
        let t = h.last_timings();
        body.push(t.body_ns);
        total.push(t.total_ns);
    }
    let guest_verify = Summary::from_ns(&mut guest);
    let scoring = scoring(&wasm, requests)?;
    let tracer = tracer_cost(&wasm, requests)?;
    Ok(InFilterReport {
        requests,
        warmup,
        guest_p50_us: guest_verify.p50_us,
        guest_p99_us: guest_verify.p99_us,
        guest_verify,
        on_request_body: Summary::from_ns(&mut body),
        whole_request: Summary::from_ns(&mut total),
        wasm_bytes: wasm.len(),
        runtime: "wasmtime 48 (cranelift), kakeya-wasm-tests harness".into(),
        scoring,
        tracer,
    })
}

/// Gate configuration of [`BENCH_CONFIG`] with the cost tracer off.
pub const BENCH_CONFIG_NO_TRACER: &[u8] =
    br#"{"keyring":{"global":{"alg":"hmac","keys":["testsecret"]}},"cost_tracer":false}"#;

/// The golden submission through two gates of the same module, the tracer on and off,
/// interleaved request by request so load on the machine hits both alike (after a warm-up of
/// `requests / 10`, at least 100, each); host-timed whole requests.
pub fn tracer_cost(wasm: &[u8], requests: usize) -> Result<TracerReport> {
    let mut on = Harness::new(wasm, BENCH_CONFIG)?;
    let mut off = Harness::new(wasm, BENCH_CONFIG_NO_TRACER)?;
    if !on.configured() || !off.configured() {
        bail!("the gate refused a tracer benchmark configuration");
    }
    let headers = [("content-type", "application/json")];
    let warmup = (requests / 10).max(100);
    let (mut with, mut without) = (Vec::with_capacity(requests), Vec::with_capacity(requests));
    for i in 0..warmup + requests {
        // Alternating which runs first, so neither gains from the other warming the caches.
        let pair = if i % 2 == 0 {
            [(&mut on, true), (&mut off, false)]
        } else {
            [(&mut off, false), (&mut on, true)]
        };
        for (h, traced) in pair {
            let out = h.request("POST", kakeya_core::SUBMIT_PATH, &headers, GOLDEN_1)?;
            if !out.is_forwarded() || out.header("x-kakeya-filter-ns").is_some() != traced {
                bail!("tracer {traced}: unexpected outcome {out:?}");
            }
            if i >= warmup {
                let t = h.last_timings().total_ns;
                if traced {
                    with.push(t)
                } else {
                    without.push(t)
                }
            }
        }
    }
    let (paired, mut blocks) = paired_differences(&with, &without, TRACER_BLOCKS);
    let block_medians = blocks.clone();
    let (block_min, block_max) = blocks
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    let (with, without) = (Summary::from_ns(&mut with), Summary::from_ns(&mut without));
    Ok(TracerReport {
        requests,
        added_p50_us: with.p50_us - without.p50_us,
        added_mean_us: with.mean_us - without.mean_us,
        with_tracer: with,
        without_tracer: without,
        added_paired_median_us: paired,
        added_block_median_us: median(&mut blocks),
        added_block_medians_us: block_medians,
        added_block_min_us: block_min,
        added_block_max_us: block_max,
        added_hostcalls: tracer_hostcalls(wasm)?,
    })
}

/// The hostcalls of one golden submission with the tracer on minus off (after a warm-up).
pub fn tracer_hostcalls(wasm: &[u8]) -> Result<std::collections::BTreeMap<String, i64>> {
    let census = |config: &[u8]| -> Result<std::collections::BTreeMap<String, u64>> {
        let opts = crate::Options {
            count_hostcalls: true,
            ..Default::default()
        };
        let mut h = Harness::with_options(wasm, config, opts)?;
        let headers = [("content-type", "application/json")];
        for _ in 0..20 {
            h.request("POST", kakeya_core::SUBMIT_PATH, &headers, GOLDEN_1)?;
        }
        h.take_hostcalls();
        let out = h.request("POST", kakeya_core::SUBMIT_PATH, &headers, GOLDEN_1)?;
        if !out.is_forwarded() {
            bail!("tracer census: not forwarded: {out:?}");
        }
        Ok(h.take_hostcalls())
    };
    let (on, off) = (census(BENCH_CONFIG)?, census(BENCH_CONFIG_NO_TRACER)?);
    let mut added = std::collections::BTreeMap::new();
    for name in on.keys().chain(off.keys()) {
        let d = *on.get(name).unwrap_or(&0) as i64 - *off.get(name).unwrap_or(&0) as i64;
        if d != 0 {
            added.insert(name.clone(), d);
        }
    }
    Ok(added)
}

/// A harness whose gate has the test bundle (coverage model) installed through a poll the
/// harness answers, as the gate gets the default bundle from the control plane in Envoy.
fn scoring_harness(wasm: &[u8], opts: crate::Options) -> Result<Harness> {
    use crate::fixtures::{bundle, bundle_config, bundle_public_key, coverage_model, BUNDLE_SEED};
    let cfg = bundle_config(&[bundle_public_key(&BUNDLE_SEED)], "closed", 1000);
    let mut h = Harness::with_options(wasm, cfg.as_bytes(), opts)?;
    if !h.configured() {
        bail!("the gate refused the scoring configuration: {:?}", h.logs());
    }
    h.tick()?;
    let token = h
        .pending_http_calls()
        .first()
        .map(|c| c.token)
        .context("the gate did not poll for a bundle")?;
    let signed = bundle(1, coverage_model()).sign(&BUNDLE_SEED);
    h.respond_http_call(
        token,
        Some(200),
        &[
            (kakeya_core::bundle::H_SHA256, signed.sha256.as_str()),
            (
                kakeya_core::bundle::H_SIGNATURE,
                signed.signature_b64.as_str(),
            ),
        ],
        &signed.bytes,
    )?;
    Ok(h)
}

/// The hostcalls the gate makes for one request of a workload, by import name. Counted by the
/// harness; the guest code is the one Envoy runs, so V8 sees the same calls.
#[derive(Debug, Clone, Serialize)]
pub struct HostcallCensus {
    pub workload: &'static str,
    pub calls: std::collections::BTreeMap<String, u64>,
}

impl HostcallCensus {
    pub fn total(&self) -> u64 {
        self.calls.values().sum()
    }
}

/// One request of each floor-bench workload (v0.1 submit, v0.2 with 2 KB of evidence scored,
/// the golden body on a non-submit path) through the gate with a bundle, answered 200 `{}` as
/// the direct response does, after a warm-up; client headers as wrk sends them.
pub fn hostcall_census(wasm: &[u8]) -> Result<Vec<HostcallCensus>> {
    use crate::fixtures::{evidence_of_size, signed_pcs_with_evidence, KEY};
    let opts = crate::Options {
        count_hostcalls: true,
        ..Default::default()
    };
    let mut h = scoring_harness(wasm, opts)?;
    let scored = signed_pcs_with_evidence("bench", KEY, &evidence_of_size(2048), None).to_string();
    let workloads: [(&'static str, &str, &[u8]); 3] = [
        ("PCS v0.1, submit", kakeya_core::SUBMIT_PATH, GOLDEN_1),
        (
            "PCS v0.2 + 2 KB evidence, scored",
            kakeya_core::SUBMIT_PATH,
            scored.as_bytes(),
        ),
        (
            "pass-through (non-submit path)",
            "/v1/pass-through",
            GOLDEN_1,
        ),
    ];
    let mut out = Vec::new();
    for (workload, path, body) in workloads {
        let req = crate::Request::new("POST", path)
            .header("content-type", "application/json")
            .body(body)
            .response(200, &[("content-type", "text/plain")]);
        for _ in 0..20 {
            h.send(&req)?;
        }
        h.take_hostcalls();
        let o = h.send(&req)?;
        if !o.is_forwarded() {
            bail!("{workload}: not forwarded: {o:?}");
        }
        out.push(HostcallCensus {
            workload,
            calls: h.take_hostcalls(),
        });
    }
    Ok(out)
}

/// Scored requests: a bundle (coverage model) is installed through a poll answered by the
/// harness, then `requests` v0.2 PCS with `EVIDENCE_BYTES` of evidence (after a warm-up).
pub fn scoring(wasm: &[u8], requests: usize) -> Result<ScoringReport> {
    use crate::fixtures::{evidence_of_size, signed_pcs_with_evidence, KEY};
    const EVIDENCE_BYTES: usize = 2048;
    let mut h = scoring_harness(wasm, crate::Options::default())?;
    let ev = evidence_of_size(EVIDENCE_BYTES);
    let body = signed_pcs_with_evidence("bench", KEY, &ev, None).to_string();
    let headers = [("content-type", "application/json")];
    let warmup = (requests / 10).max(100);
    let ns = |out: &Outcome, name: &str| -> Result<u64> {
        out.header(name)
            .with_context(|| format!("forwarded without {name}: {out:?}"))?
            .parse()
            .with_context(|| format!("{name} is not an integer"))
    };
    let (mut verify, mut score, mut total) = (
        Vec::with_capacity(requests),
        Vec::with_capacity(requests),
        Vec::with_capacity(requests),
    );
    for i in 0..warmup + requests {
        let out = h.request("POST", kakeya_core::SUBMIT_PATH, &headers, body.as_bytes())?;
        if !out.is_forwarded() {
            bail!("scored request {i} was not forwarded: {out:?}");
        }
        let (v, s) = (
            ns(&out, "x-kakeya-verify-ns")?,
            ns(&out, "x-kakeya-score-ns")?,
        );
        if i >= warmup {
            verify.push(v);
            score.push(s);
            total.push(v + s);
        }
    }
    Ok(ScoringReport {
        requests,
        evidence_bytes: EVIDENCE_BYTES,
        guest_verify: Summary::from_ns(&mut verify),
        guest_score: Summary::from_ns(&mut score),
        guest_total: Summary::from_ns(&mut total),
    })
}
