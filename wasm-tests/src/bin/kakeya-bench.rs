//! `cargo xtask bench`: measures the verify path and rewrites `docs/BENCHMARKS.md`.
//!
//! 1. In-filter parse + signature + verify, in the wasmtime harness (the built gate.wasm).
//! 2. Gate overhead: the same Envoy route with and without the gate filter, both in front of the
//!    same trivial upstream, at a fixed concurrency.
//! 3. Scoring through Envoy: PCS v0.2 with 2 KB of evidence, scored inline by the default
//!    model's bundle; the filter's own in-guest timings (V8) as seen by the upstream.
//! 4. Ingest: durable acknowledged submissions per second on SQLite with group commit, straight
//!    to the ingest listener (as Envoy forwards them) and end to end through the gateway.
//! 5. The gate against the floor filter in one Envoy worker with direct responses
//!    ([`kakeya_wasm_tests::floor_bench`]); `--floor` runs only this one and replaces only its
//!    section of OUT.md.
//! 6. Training: our logistic fit against scikit-learn's lbfgs on 100,000 rows
//!    ([`kakeya_wasm_tests::fit_bench`]); `--fit` runs only this one and replaces only its
//!    section of OUT.md.
//!
//! Usage: kakeya-bench [--floor|--fit] OUT.md (binaries from KAKEYA_BIN, KAKEYA_ENVOY_BIN,
//! KAKEYA_GATE_WASM, KAKEYA_FLOOR_WASM, KAKEYA_WRK_BIN, KAKEYA_SKLEARN_PYTHON; the fit data from
//! KAKEYA_FIT_DATASET, see `fit_bench::source`), or `kakeya-bench --sklearn-fixture OUT.json`
//! to regenerate the scikit-learn fixture of the fit benchmark's tests.

use anyhow::{Context, Result};
use kakeya_wasm_tests::bench_doc::{machine, verdict};
use kakeya_wasm_tests::fit_bench::{self, FitReport};
use kakeya_wasm_tests::fixtures::{signed_pcs, KEY};
use kakeya_wasm_tests::floor_bench::{self, FloorReport};
use kakeya_wasm_tests::load::{self, LoadReport};
use kakeya_wasm_tests::stack::{Stack, StackOptions};
use serde_json::json;
use std::fmt::Write;

const SUBMIT: &str = "/v1/pcs/submit";
const CONCURRENCY: usize = 8;
/// Alternating rounds per route in the overhead comparison.
const ROUNDS: usize = 5;

fn hmac_env() -> Vec<(String, String)> {
    vec![
        ("PCS_SIGN_ALG".into(), "hmac".into()),
        ("PCS_HMAC_KEY".into(), KEY.into()),
        // The benchmarks measure capacity, not the rate limiter.
        ("TOKEN_RATE".into(), "1000000".into()),
    ]
}

/// Rounds and seconds per listener and workload of the floor comparison (3 workloads × 3
/// listeners × rounds × seconds, plus warm-ups: about three minutes).
const FLOOR_ROUNDS: usize = 5;
const FLOOR_SECONDS: u32 = 4;

fn floor() -> Result<FloorReport> {
    let wrk = std::env::var_os("KAKEYA_WRK_BIN")
        .map(std::path::PathBuf::from)
        .context("KAKEYA_WRK_BIN is not set: run through `cargo xtask bench`")?;
    floor_bench::run(&wrk, FLOOR_ROUNDS, FLOOR_SECONDS)
}

fn fit() -> Result<FitReport> {
    let python = fit_bench::sklearn_python()?;
    fit_bench::run(&fit_bench::source()?, &python)
}

/// Which benchmarks a run makes.
enum Only {
    All,
    Floor,
    Fit,
    Cost,
    Ensemble,
    Canary,
    Audit,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (only, out) = match args.as_slice() {
        [flag, out] if flag == "--floor" => (Only::Floor, out.clone()),
        [flag, out] if flag == "--fit" => (Only::Fit, out.clone()),
        [flag, out] if flag == "--cost" => (Only::Cost, out.clone()),
        [flag, out] if flag == "--ensemble" => (Only::Ensemble, out.clone()),
        [flag, out] if flag == "--canary" => (Only::Canary, out.clone()),
        [flag, out] if flag == "--audit" => (Only::Audit, out.clone()),
        [flag, out] if flag == "--sklearn-fixture" => {
            fit_bench::write_fixture(&fit_bench::sklearn_python()?, out.as_ref())?;
            eprintln!("wrote {out}");
            return Ok(());
        }
        [out] => (Only::All, out.clone()),
        _ => anyhow::bail!(
            "usage: kakeya-bench [--floor|--fit|--cost|--ensemble|--canary|--audit] OUT.md | kakeya-bench --sklearn-fixture OUT.json"
        ),
    };
    let old_doc = || std::fs::read_to_string(&out).unwrap_or_else(|_| "# Benchmarks\n".into());
    match only {
        Only::Floor => {
            eprintln!("bench: the gate against the floor, one Envoy worker");
            let report = floor()?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            std::fs::write(&out, floor_bench::splice(&old_doc(), &report.markdown()))?;
            eprintln!("wrote {out}; reproduce with `{}`", floor_bench::REPRODUCE);
            return Ok(());
        }
        Only::Fit => {
            eprintln!("bench: training, ours against scikit-learn");
            let report = fit()?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            std::fs::write(&out, fit_bench::splice(&old_doc(), &report.markdown()))?;
            eprintln!("wrote {out}; reproduce with `{}`", fit_bench::REPRODUCE);
            return Ok(());
        }
        Only::Cost => {
            use kakeya_wasm_tests::cost_bench;
            eprintln!("bench: cost import, reconciliation and forecasts");
            let report = cost_bench::run()?;
            let json = serde_json::to_string_pretty(&report)?;
            println!("{json}");
            let json_out = cost_bench::dir().join("cost-bench.json");
            std::fs::write(&json_out, json + "\n")?;
            eprintln!("wrote {}", json_out.display());
            let md = cost_bench::markdown(&report);
            std::fs::write(&out, cost_bench::splice(&old_doc(), &md))?;
            eprintln!("wrote {out}; reproduce with `{}`", cost_bench::REPRODUCE);
            return Ok(());
        }
        Only::Ensemble => {
            use kakeya_wasm_tests::ensemble_bench;
            eprintln!("bench: the whole ensemble through Envoy, with its ablation");
            let report = ensemble_bench::run()?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            let md = ensemble_bench::markdown(&report);
            std::fs::write(&out, ensemble_bench::splice(&old_doc(), &md))?;
            eprintln!(
                "wrote {out}; reproduce with `{}`",
                ensemble_bench::REPRODUCE
            );
            return Ok(());
        }
        Only::Canary => {
            use kakeya_wasm_tests::canary_bench;
            eprintln!("bench: canary gate evaluation and policy replay");
            let report = canary_bench::run()?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            let md = canary_bench::markdown(&report);
            std::fs::write(&out, canary_bench::splice(&old_doc(), &md))?;
            eprintln!("wrote {out}; reproduce with `{}`", canary_bench::REPRODUCE);
            return Ok(());
        }
        Only::Audit => {
            use kakeya_wasm_tests::audit_bench;
            eprintln!("bench: audit-log verification");
            let report = audit_bench::run()?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            let md = audit_bench::markdown(&report);
            std::fs::write(&out, audit_bench::splice(&old_doc(), &md))?;
            eprintln!("wrote {out}; reproduce with `{}`", audit_bench::REPRODUCE);
            return Ok(());
        }
        Only::All => {}
    }
    let machine = machine();

    eprintln!("bench 1/6: in-filter verify in the wasmtime harness");
    let filter = kakeya_wasm_tests::bench::in_filter(20_000)?;

    eprintln!("bench 2/6: gate overhead through Envoy");
    let upstream = load::spawn_trivial_upstream()?;
    let golden = signed_pcs("bench", KEY).to_string();
    // Both routes stay up; rounds alternate between them so drift on the shared machine hits
    // both alike, and the median round of each is reported.
    let start = |without_gate: bool| {
        Stack::start(StackOptions {
            env: hmac_env(),
            without_gate,
            ingest_override: Some(upstream),
            ..Default::default()
        })
    };
    let (plain, gate) = (start(true)?, start(false)?);
    let run_on = |stack: &Stack, n: usize| {
        let url = stack.url(SUBMIT);
        load::run(n, CONCURRENCY, |_i: usize| {
            (
                url.clone(),
                vec![("content-type".into(), "application/json".into())],
                golden.clone().into_bytes(),
            )
        })
    };
    run_on(&plain, 2_000); // warm-up: connections, V8 tiers
    run_on(&gate, 2_000);
    let (mut plain_rounds, mut gate_rounds) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        plain_rounds.push(run_on(&plain, 10_000));
        gate_rounds.push(run_on(&gate, 10_000));
    }
    drop((plain, gate));
    let baseline = median_round(plain_rounds);
    let gated = median_round(gate_rounds);

    eprintln!("bench 3/6: inline scoring through Envoy (2 KB evidence)");
    let scoring = scoring_through_envoy(upstream)?;

    eprintln!("bench 4/6: ingest throughput on SQLite");
    let stack = Stack::start(StackOptions {
        env: hmac_env(),
        ..Default::default()
    })?;
    let n = 30_000;
    let bodies: Vec<(String, String)> = (0..n)
        .map(|i| {
            let v = signed_pcs(&format!("bench-{i}"), KEY);
            let p =
                kakeya_core::parse(v.to_string().as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
            let result = kakeya_core::verify(&p, &kakeya_core::VerifyParams::default())
                .result
                .to_json();
            Ok((v.to_string(), result))
        })
        .collect::<Result<_>>()?;
    let ingest_url = format!("http://{}{}", stack.ingest, SUBMIT);
    let direct = load::run(n / 2, 32, |i| {
        let (body, result) = &bodies[i];
        (
            ingest_url.clone(),
            vec![
                ("content-type".into(), "application/json".into()),
                ("x-kakeya-tenant".into(), "default".into()),
                ("x-kakeya-result".into(), result.clone()),
                ("x-kakeya-cacheable".into(), "true".into()),
            ],
            body.clone().into_bytes(),
        )
    });
    let gateway_url = stack.url(SUBMIT);
    let through_envoy = load::run(n / 2, 32, |i| {
        (
            gateway_url.clone(),
            vec![("content-type".into(), "application/json".into())],
            bodies[n / 2 + i].0.clone().into_bytes(),
        )
    });

    drop(stack);

    eprintln!("bench 5/6: the gate against the floor, one Envoy worker");
    let floor = floor()?;

    eprintln!("bench 6/6: training, ours against scikit-learn");
    let fit = fit()?;

    let report = json!({
        "machine": machine,
        "floor": floor,
        "fit": fit,
        "in_filter": filter,
        "gate_overhead": {"without_gate": baseline, "with_gate": gated, "rounds": ROUNDS},
        "scoring_through_envoy": scoring,
        "ingest": {"direct": direct, "through_envoy": through_envoy},
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    let doc = markdown(
        &report,
        &filter,
        &baseline,
        &gated,
        &direct,
        &through_envoy,
        &scoring,
    );
    let doc = floor_bench::splice(&doc, &floor.markdown());
    std::fs::write(&out, fit_bench::splice(&doc, &fit.markdown()))?;
    eprintln!(
        "wrote {out}; reproduce with `cargo xtask bench` (the floor comparison alone: `{}`, the \
         training comparison alone: `{}`)",
        floor_bench::REPRODUCE,
        fit_bench::REPRODUCE
    );
    Ok(())
}

/// In-guest timings inside Envoy's V8, from the headers the filter forwards.
#[derive(Debug, Clone, serde::Serialize)]
struct Phase {
    load: LoadReport,
    verify_us: Option<(usize, f64, f64)>,
    score_us: Option<(usize, f64, f64)>,
}

/// Scoring measured at light load (one client) and at the saturating load of the other runs:
/// the in-guest clock is wall time, so under saturation it also counts the time the worker
/// thread was preempted on the shared 2 cores.
#[derive(Debug, Clone, serde::Serialize)]
struct EnvoyScoring {
    light: Phase,
    saturated: Phase,
}

fn scoring_through_envoy(upstream: std::net::SocketAddr) -> Result<EnvoyScoring> {
    let mut env = hmac_env();
    env.push(("KAKEYA_BUNDLE_POLL_MS".into(), "200".into()));
    let stack = Stack::start(StackOptions {
        env,
        without_gate: false,
        ingest_override: Some(upstream),
        ..Default::default()
    })?;
    let ev = kakeya_wasm_tests::fixtures::evidence_of_size(2048);
    let body = kakeya_wasm_tests::fixtures::signed_pcs_with_evidence("bench-ev", KEY, &ev, None)
        .to_string();
    let url = stack.url(SUBMIT);
    let req = |_i: usize| {
        (
            url.clone(),
            vec![("content-type".into(), "application/json".into())],
            body.clone().into_bytes(),
        )
    };
    // Wait (bounded) until the filter has the bundle and scores.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        load::run(20, 1, req);
        if load::take_captured()
            .iter()
            .any(|(k, _)| *k == "x-kakeya-score-ns")
        {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the gate never scored: no bundle?"
        );
    }
    load::run(2_000, CONCURRENCY, req);
    load::take_captured();
    let phase = |n: usize, concurrency: usize| {
        let report = load::run(n, concurrency, req);
        let captured = load::take_captured();
        let summary = |name: &str| {
            let mut us: Vec<f64> = captured
                .iter()
                .filter(|(k, _)| *k == name)
                .map(|(_, ns)| *ns as f64 / 1000.0)
                .collect();
            us.sort_by(f64::total_cmp);
            (!us.is_empty()).then(|| {
                (
                    us.len(),
                    load::percentile(&us, 0.5),
                    load::percentile(&us, 0.99),
                )
            })
        };
        Phase {
            load: report,
            verify_us: summary("x-kakeya-verify-ns"),
            score_us: summary("x-kakeya-score-ns"),
        }
    };
    Ok(EnvoyScoring {
        light: phase(5_000, 1),
        saturated: phase(20_000, CONCURRENCY),
    })
}

/// The round with the median throughput.
fn median_round(mut rounds: Vec<LoadReport>) -> LoadReport {
    rounds.sort_by(|a, b| a.throughput_rps.total_cmp(&b.throughput_rps));
    let mid = rounds.len() / 2;
    rounds.swap_remove(mid)
}

fn row(name: &str, r: &LoadReport) -> String {
    format!(
        "| {name} | {} | {} | {:.0} | {:.3} | {:.3} | {:?} |\n",
        r.requests, r.concurrency, r.throughput_rps, r.p50_ms, r.p99_ms, r.statuses
    )
}

fn markdown(
    report: &serde_json::Value,
    filter: &kakeya_wasm_tests::bench::InFilterReport,
    baseline: &LoadReport,
    gated: &LoadReport,
    direct: &LoadReport,
    through_envoy: &LoadReport,
    scoring: &EnvoyScoring,
) -> String {
    let added_p99 = gated.p99_ms - baseline.p99_ms;
    let throughput_cost = 1.0 - gated.throughput_rps / baseline.throughput_rps;
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Reproduce with `cargo xtask bench` (rewrites this file). Machine: {}.",
        report["machine"].as_str().unwrap_or("")
    );
    let _ = writeln!(s, "All figures below are measured by `wasm-tests/src/bin/kakeya-bench.rs`; none is typed in by hand.\n");
    let _ = writeln!(
        s,
        "## In-filter parse + signature + verify (wasmtime harness, golden PCS, HMAC)\n"
    );
    let _ = writeln!(
        s,
        "| measure | requests | p50 µs | p99 µs | mean µs |\n|---|---|---|---|---|"
    );
    let _ = writeln!(s, "{}", filter.markdown_rows());
    let _ = writeln!(
        s,
        "Target: p99 ≤ 100 µs in the filter → **{}** (in-guest p99 {:.1} µs).\n",
        verdict(filter.guest_p99_us <= 100.0),
        filter.guest_p99_us
    );
    let _ = writeln!(
        s,
        "Target: features + scoring p99 ≤ 20 µs with 2 KB of evidence → **{}** (in-guest p99 {:.1} µs).\n",
        verdict(filter.scoring.guest_score.p99_us <= 20.0),
        filter.scoring.guest_score.p99_us
    );
    let _ = writeln!(
        s,
        "## Gate overhead through Envoy 1.40 (same route, same trivial upstream)\n"
    );
    let _ = writeln!(
        s,
        "{ROUNDS} alternating rounds of 10,000 requests per route; the median-throughput round of each is shown.\n"
    );
    let _ = writeln!(s, "| route | requests | concurrency | req/s | p50 ms | p99 ms | statuses |\n|---|---|---|---|---|---|---|");
    s.push_str(&row("without gate", baseline));
    s.push_str(&row("with gate", gated));
    let _ = writeln!(
        s,
        "\nAdded p99: {:.3} ms{} (target ≤ 0.5 ms → **{}**). Throughput cost: {:.1} % (target ≤ 15 % → **{}**).",
        added_p99,
        if added_p99 < 0.0 { ", i.e. below the run-to-run noise of the p99" } else { "" },
        verdict(added_p99 <= 0.5),
        throughput_cost * 100.0,
        verdict(throughput_cost <= 0.15)
    );
    let _ = writeln!(
        s,
        "On 2 cores the load generator, Envoy (2 workers) and the upstream share the CPU, so absolute \
         figures are lower than on a dedicated host; the difference between the two rows is the filter.\n"
    );
    let _ = writeln!(
        s,
        "## Inline scoring through Envoy 1.40 (PCS v0.2 with 2 KB of evidence, default model)\n"
    );
    let _ = writeln!(s, "In-guest times measured by the filter with Envoy's clock (V8), read by the upstream from the forwarded `x-kakeya-verify-ns` / `x-kakeya-score-ns` headers.\n");
    let _ = writeln!(
        s,
        "| load | measure | samples | p50 µs | p99 µs |\n|---|---|---|---|---|"
    );
    for (load_name, ph) in [
        ("1 client", &scoring.light),
        ("8 clients (saturated)", &scoring.saturated),
    ] {
        for (name, v) in [
            (
                "parse + signature + evidence binding + verify",
                ph.verify_us,
            ),
            ("features + scoring", ph.score_us),
        ] {
            if let Some((n, p50, p99)) = v {
                let _ = writeln!(s, "| {load_name} | {name} | {n} | {p50:.1} | {p99:.1} |");
            }
        }
    }
    let _ = writeln!(s, "\n| route | requests | concurrency | req/s | p50 ms | p99 ms | statuses |\n|---|---|---|---|---|---|---|");
    s.push_str(&row("with gate, scored, 1 client", &scoring.light.load));
    s.push_str(&row(
        "with gate, scored, 8 clients",
        &scoring.saturated.load,
    ));
    if let (Some((_, _, light)), Some((_, _, sat))) =
        (scoring.light.score_us, scoring.saturated.score_us)
    {
        let _ = writeln!(
            s,
            "\nTarget: features + scoring p99 ≤ 20 µs through Envoy → **{}** at light load \
             ({light:.1} µs); **{}** under saturation ({sat:.1} µs). The filter reads Envoy's \
             wall clock, so when client, Envoy and upstream saturate the 2 cores, a preempted \
             worker's pause lands inside some measurements; the harness figure above is the \
             filter's own cost.\n",
            verdict(light <= 20.0),
            verdict(sat <= 20.0)
        );
    }
    let _ = writeln!(
        s,
        "## Ingest: durable acknowledged submissions on SQLite with group commit\n"
    );
    let _ = writeln!(s, "| path | requests | concurrency | req/s | p50 ms | p99 ms | statuses |\n|---|---|---|---|---|---|---|");
    s.push_str(&row("ingest listener (as forwarded by Envoy)", direct));
    s.push_str(&row("end to end through the gateway", through_envoy));
    let _ = writeln!(
        s,
        "\nTarget: ≥ 3,000 durable acknowledged submissions/s at the ingest → **{}**. Every answer \
         counted here was acknowledged only after its WAL record was fsynced and its decision committed.",
        verdict(direct.throughput_rps >= 3000.0 && direct.statuses.keys().all(|&c| c == 200 || c == 202))
    );
    s
}
