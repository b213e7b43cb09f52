//! Steps of the drift end-to-end test (`tests/e2e_drift.rs`), reusable by any e2e on a
//! [`Stack`]: traffic through the real gateway, drift checks through the admin API and the CLI,
//! labels through `POST /v1/feedback`, and waiting until the filters serve a given model.
//!
//! Traffic is real HaluEval answers with their evidence (`kakeya eval --through`: every row a
//! signed PCS v0.2 submitted to Envoy, scored by the gate with the served champion), so the
//! features the decision log keeps are those the gate computed, and a model's training
//! reference built from the same rows describes them.

use crate::fixtures::{grounded_evidence, signed_pcs_with_evidence, KEY};
use crate::stack::{post, Stack};
use anyhow::{bail, Context, Result};
use kakeya_control_plane::ml::dataset;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The embedded HaluEval sample (the default model's training data).
pub fn sample_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../control-plane/data/halueval-sample.jsonl.gz"
    ))
}

/// Now as RFC 3339 (UTC), for a check's `since`.
pub fn now_rfc3339() -> String {
    kakeya_control_plane::learn::rfc3339(kakeya_control_plane::now_ms())
}

/// `kakeya <args>`, which must succeed; its stdout as JSON.
pub fn kakeya_json(stack: &Stack, args: &[&str]) -> Result<Value> {
    let out = stack.kakeya(args)?;
    if !out.status.success() {
        bail!("kakeya {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("kakeya {args:?}: not JSON"))
}

/// Sends every row of `dataset` through the gateway (`kakeya eval --through`, tenant
/// `tenant`), all of which must be scored by `model` (a version, or `champion`); returns the
/// eval report.
pub fn send_rows(stack: &Stack, dataset: &Path, tenant: &str, model: &str) -> Result<Value> {
    let report = stack
        .data_path()
        .join(format!("eval-{}.json", kakeya_control_plane::now_ms()));
    let gateway = stack.url("");
    let out = stack.kakeya(&[
        "eval",
        "--dataset",
        dataset.to_str().context("dataset path")?,
        "--model",
        model,
        "--through",
        &gateway,
        "--key",
        KEY,
        "--tenant",
        tenant,
        "--report",
        report.to_str().context("report path")?,
    ])?;
    if !out.status.success() {
        bail!(
            "kakeya eval --through: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(serde_json::from_slice(&std::fs::read(&report)?)?)
}

/// `n` rows of `dataset` drawn at random (seeded Fisher–Yates): a sample of the same
/// distribution. (`kakeya eval --limit` takes whole items in file order instead, which is not
/// one: its first rows differ from the rest, and a drift check rightly says so.)
pub fn random_rows(dataset: &Path, n: usize, seed: u64) -> Result<Vec<dataset::Row>> {
    let mut rows = dataset::parse(&std::fs::read(dataset)?)?;
    let mut rng = kakeya_core::pcs_builder::SplitMix64(seed);
    for i in (1..rows.len()).rev() {
        let j = usize::try_from(rng.next_u64() % (i as u64 + 1))?;
        rows.swap(i, j);
    }
    rows.truncate(n);
    Ok(rows)
}

/// `rows` with every response made much longer (the answer, then the question and the
/// context restated, then the answer again): traffic unlike any training row.
pub fn lengthened(rows: &[dataset::Row]) -> Vec<dataset::Row> {
    rows.iter()
        .map(|r| dataset::Row {
            response: format!(
                "{} Restating the question: {} In the source's words: {} And once more: {}",
                r.response, r.question, r.context, r.response
            ),
            ..r.clone()
        })
        .collect()
}

/// Writes `rows` as a JSONL dataset at `out`.
pub fn write_rows(rows: &[dataset::Row], out: &Path) -> Result<PathBuf> {
    let mut text = String::new();
    for r in rows {
        let row = json!({"id": r.id, "task": r.task, "question": r.question,
                         "context": r.context, "response": r.response, "label": r.label});
        text.push_str(&row.to_string());
        text.push('\n');
    }
    std::fs::write(out, text)?;
    Ok(out.to_path_buf())
}

/// `POST /v1/hrs/drift/check {since}`: the report.
pub fn check(stack: &Stack, since: &str) -> Result<Value> {
    let a = stack.admin_post("/v1/hrs/drift/check", &json!({ "since": since }))?;
    if a.status != 200 {
        bail!("drift check: {} {}", a.status, a.body);
    }
    Ok(a.json())
}

/// `kakeya hrs drift check --since …`: the report.
pub fn check_cli(stack: &Stack, since: &str) -> Result<Value> {
    kakeya_json(stack, &["hrs", "drift", "check", "--since", since])
}

/// `GET /v1/hrs/drift/alerts?since=…`.
pub fn alerts(stack: &Stack, since: &str) -> Result<Vec<Value>> {
    let a = stack.admin_get(&format!("/v1/hrs/drift/alerts?since={since}"))?;
    if a.status != 200 {
        bail!("drift alerts: {} {}", a.status, a.body);
    }
    match a.json() {
        Value::Array(v) => Ok(v),
        other => bail!("drift alerts: not an array: {other}"),
    }
}

/// The report's alerts of `type`.
pub fn alerts_of<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["alerts"]
        .as_array()
        .map(|a| a.iter().filter(|x| x["type"] == kind).collect())
        .unwrap_or_default()
}

/// Labels, through `POST /v1/feedback`, every decision of `tenant` scored by `model_version`
/// at or after `since_ms`, against the model: the riskier half faithful, the other half
/// hallucinated (the model's ranking turned around). Returns how many were labelled.
pub fn label_against(
    stack: &Stack,
    tenant: &str,
    model_version: &str,
    since_ms: i64,
) -> Result<usize> {
    let mut scored: Vec<(f64, String)> = stack
        .decisions(Some(tenant))?
        .into_iter()
        .filter(|d| {
            d["model_version"] == model_version
                && d["created_at_ms"].as_i64().is_some_and(|t| t >= since_ms)
        })
        .filter_map(|d| Some((d["risk"].as_f64()?, d["pcs_id"].as_str()?.to_string())))
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let half = scored.len() / 2;
    for (i, (_, pcs_id)) in scored.iter().enumerate() {
        let label = if i >= half {
            "faithful"
        } else {
            "hallucinated"
        };
        let a = stack.admin_post(
            "/v1/feedback",
            &json!({"tenant_id": tenant, "pcs_id": pcs_id, "label": label}),
        )?;
        if a.status != 200 && a.status != 201 {
            bail!("feedback {pcs_id}: {} {}", a.status, a.body);
        }
    }
    Ok(scored.len())
}

/// Submits evidence-bearing PCS until the gateway's answer is scored by `model_version` (the
/// filters have the bundle that serves it); returns that answer's bundle version.
pub fn wait_served(stack: &Stack, model_version: &str, within: Duration) -> Result<u64> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build();
    let deadline = Instant::now() + within;
    let mut i = 0u64;
    loop {
        i += 1;
        let shard = format!("wait-{}-{i}", kakeya_control_plane::now_ms());
        let body = signed_pcs_with_evidence(&shard, KEY, &grounded_evidence(), None).to_string();
        let a = post(
            &agent,
            &stack.url("/v1/pcs/submit"),
            &[("content-type", "application/json")],
            body.as_bytes(),
        )?;
        if a.status == 200 || a.status == 202 {
            let r: kakeya_core::VerifyResult = serde_json::from_str(&a.body)?;
            if let Some(risk) = r.risk.filter(|r| r.model_version == model_version) {
                return Ok(risk.bundle_version);
            }
        }
        if Instant::now() > deadline {
            bail!("the gateway never served {model_version}: last answer {a:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
