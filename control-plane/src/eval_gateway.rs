//! `kakeya eval --through URL`: every dataset row goes through the real gateway as a signed
//! PCS v0.2 carrying its evidence; the figures are computed from the risks the gateway served,
//! and each served risk is compared with the native score of the same model on the same request.

use anyhow::{bail, Context};
use kakeya_control_plane::ml::dataset::Row;
use kakeya_core::bundle::Scorer;
use kakeya_core::evidence::bound_evidence;
use kakeya_core::{parse, verify, VerifyParams};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Requests in flight at once, by default.
pub const CONCURRENCY: usize = 8;
/// Attempts of one row answered 429 or 503 (each waits `Retry-After`, at most 2 s).
const MAX_ATTEMPTS: usize = 30;

/// Where and how to send.
pub struct Target<'a> {
    /// Gateway base URL, e.g. `http://127.0.0.1:8080`.
    pub url: &'a str,
    /// HMAC key; unsigned without it.
    pub key: Option<&'a str>,
    /// The tenants the rows go to, round-robin (row `i` to `tenants[i % len]`); never empty.
    pub tenants: &'a [TenantRoute],
    pub verify: &'a VerifyParams,
    /// Prefix of every shard id, unique per run, so dedup never answers with an older result.
    pub run_id: &'a str,
    /// Requests in flight at once (at least 1).
    pub concurrency: usize,
}

/// One tenant rows are sent as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRoute {
    /// `x-tenant-id` of its requests (none: the header is not sent).
    pub header: Option<String>,
    /// The tenant the gateway files them under (`default` in single-tenant mode): whose
    /// statistics the native score uses, and whose decision log holds them.
    pub gateway: String,
}

/// One row's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    /// The tenant the gateway filed the decision under, and its pcs_id.
    pub tenant: String,
    pub pcs_id: String,
    pub status: u16,
    pub risk: f64,
    pub model_version: String,
    pub native: f64,
    /// Under an ensemble policy: the verdict and every vote as served (`ensemble` of the
    /// answer), for replays of other policies on the same votes; `Null` without a policy.
    pub ensemble: Value,
    /// Whether verification alone passed (accepted, not escalated), natively: the pipeline
    /// never turns a failed or escalated verification into an accept.
    pub verified: bool,
}

/// What the run measured.
pub struct Run {
    pub rows: Vec<Served>,
    pub secs: f64,
}

fn shard_of(run_id: &str, row_id: &str) -> String {
    format!("eval-{run_id}-{row_id}")
}

fn unreachable_hint(url: &str, e: &ureq::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot reach the gateway at {url}: {e} (is it running? `cargo xtask up`)")
}

/// Sends one row (retrying 429/503) and scores it natively.
fn one(
    agent: &ureq::Agent,
    t: &Target<'_>,
    tenant: &TenantRoute,
    scorer: &Scorer,
    row: &Row,
) -> anyhow::Result<Served> {
    let shard = shard_of(t.run_id, &row.id);
    let (body, _) = row.signed_pcs(&shard, t.key);
    let pcs =
        parse(&body).with_context(|| format!("row {}: the built PCS does not parse", row.id))?;
    let outcome = verify(&pcs, t.verify);
    let ev = bound_evidence(&pcs).ok().flatten();
    let native = scorer
        .assess(&tenant.gateway, &pcs, &outcome, ev)
        .map(|r| r.risk)
        .with_context(|| format!("row {}: the model did not score natively", row.id))?;
    let url = format!("{}/v1/pcs/submit", t.url.trim_end_matches('/'));
    for attempt in 1..=MAX_ATTEMPTS {
        let mut req = agent.post(&url).set("content-type", "application/json");
        if let Some(h) = &tenant.header {
            req = req.set("x-tenant-id", h);
        }
        let resp = match req.send_bytes(&body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(unreachable_hint(t.url, &e)),
        };
        let status = resp.status();
        if (status == 429 || status == 503) && attempt < MAX_ATTEMPTS {
            let wait = resp
                .header("retry-after")
                .and_then(|s| s.trim().parse::<f64>().ok())
                .unwrap_or(0.1)
                .clamp(0.05, 2.0);
            std::thread::sleep(Duration::from_secs_f64(wait));
            continue;
        }
        let text = resp
            .into_string()
            .with_context(|| format!("row {}: cannot read the gateway's answer", row.id))?;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match status {
            // 422: the ensemble rejected the answer (`hallucination_rejected`), still scored.
            200 | 202 | 422 => {}
            401 => bail!(
                "the gateway refused row {} (401: {}): is --key (or PCS_HMAC_KEY) the gateway's HMAC key?",
                row.id,
                text.trim()
            ),
            _ => bail!(
                "the gateway answered {status} for row {}: {}",
                row.id,
                text.trim()
            ),
        }
        let Some(risk) = answer["risk"]["score"].as_f64() else {
            bail!(
                "the gateway did not score row {} (answer {status}: {}): is a bundle loaded and does the PCS carry evidence?",
                row.id,
                text.trim()
            );
        };
        return Ok(Served {
            tenant: tenant.gateway.clone(),
            pcs_id: pcs.pcs_id.clone(),
            status,
            risk,
            model_version: answer["risk"]["model_version"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            native,
            ensemble: answer["ensemble"].clone(),
            verified: outcome.result.accepted && !outcome.result.escalated,
        });
    }
    bail!(
        "row {}: still rate-limited or unavailable after {MAX_ATTEMPTS} attempts",
        row.id
    )
}

/// Sends every row with `t.concurrency` workers; stops at the first error.
pub fn run(rows: &[Row], t: &Target<'_>, scorer: &Scorer) -> anyhow::Result<Run> {
    anyhow::ensure!(!t.tenants.is_empty(), "no tenant to send the rows as");
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .max_idle_connections_per_host(t.concurrency.max(1))
        .build();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Served>>> = Mutex::new(vec![None; rows.len()]);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let total = rows.len();
    let t0 = Instant::now();
    let pb = kakeya_control_plane::progress::bar(&format!("through {}", t.url), total as u64);
    pb.set_message("rows");
    std::thread::scope(|s| {
        for _ in 0..t.concurrency.clamp(1, total.max(1)) {
            s.spawn(|| loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total {
                    return;
                }
                match one(&agent, t, &t.tenants[i % t.tenants.len()], scorer, &rows[i]) {
                    Ok(r) => {
                        if let Ok(mut v) = results.lock() {
                            v[i] = Some(r);
                        }
                        let d = done.fetch_add(1, Ordering::SeqCst) + 1;
                        pb.set_position(d as u64);
                    }
                    Err(e) => {
                        stop.store(true, Ordering::SeqCst);
                        if let Ok(mut f) = first_error.lock() {
                            f.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    pb.finish_and_clear();
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let rows = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a worker panicked"))?
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .context("some rows were not sent")?;
    Ok(Run { rows, secs })
}

/// Served model version → rows.
pub fn served_models(run: &Run) -> BTreeMap<String, usize> {
    let mut models: BTreeMap<String, usize> = BTreeMap::new();
    for r in &run.rows {
        *models.entry(r.model_version.clone()).or_default() += 1;
    }
    models
}

/// Fails when the gateway served any row with another model than `expected` (the model being
/// evaluated): the figures would mix models, and `served_equals_native` would compare
/// different models. With `allow_other_models`, warns instead. Either way the message lists
/// the served model versions.
pub fn check_models(run: &Run, expected: &str, allow_other_models: bool) -> anyhow::Result<()> {
    let models = served_models(run);
    let others = run
        .rows
        .iter()
        .filter(|r| r.model_version != expected)
        .count();
    if others == 0 {
        return Ok(());
    }
    let list = models
        .iter()
        .map(|(v, n)| format!("{} ({n} rows)", if v.is_empty() { "none" } else { v }))
        .collect::<Vec<_>>()
        .join(", ");
    if allow_other_models {
        eprintln!(
            "WARNING: {others} of {} rows were served by another model than {expected}; served model versions: {list}",
            run.rows.len()
        );
        return Ok(());
    }
    bail!(
        "the gateway served {others} of {} rows with another model than the one evaluated ({expected}); \
         served model versions: {list}. Is --model the gateway's current champion, and is the tenant \
         on the champion arm? Pass --allow-other-models to report the figures anyway",
        run.rows.len()
    )
}

/// The `served` section of the report: agreement with the native scores, statuses, models.
pub fn summary(run: &Run, url: &str, concurrency: usize) -> Value {
    let n = run.rows.len();
    let equal = run
        .rows
        .iter()
        .filter(|r| r.risk.to_bits() == r.native.to_bits())
        .count();
    let max_abs_diff = run
        .rows
        .iter()
        .map(|r| (r.risk - r.native).abs())
        .fold(0.0, f64::max);
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for r in &run.rows {
        *statuses.entry(r.status.to_string()).or_default() += 1;
    }
    let models = served_models(run);
    json!({
        "gateway": url,
        "n": n,
        "served_equals_native": if n == 0 { 0.0 } else { equal as f64 / n as f64 },
        "exact_matches": equal,
        "max_abs_diff": max_abs_diff,
        "statuses": statuses,
        "model_versions": models,
        "seconds": run.secs,
        "rows_per_s": if run.secs > 0.0 { n as f64 / run.secs } else { 0.0 },
        "concurrency": concurrency,
        "rows": run.rows.iter().map(|r| json!({
            "pcs_id": r.pcs_id,
            "status": r.status,
            "risk": r.risk,
            "native": r.native,
            "verified": r.verified,
            "ensemble": r.ensemble,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(model_version: &str) -> Served {
        Served {
            tenant: "default".into(),
            pcs_id: "p".into(),
            status: 200,
            risk: 0.25,
            model_version: model_version.into(),
            native: 0.25,
            ensemble: Value::Null,
            verified: true,
        }
    }

    #[test]
    fn rows_served_by_another_model_fail_unless_allowed() {
        let same = Run {
            rows: vec![served("lr-a"), served("lr-a")],
            secs: 1.0,
        };
        check_models(&same, "lr-a", false).unwrap();
        let mixed = Run {
            rows: vec![served("lr-a"), served("lr-b"), served("lr-b")],
            secs: 1.0,
        };
        let e = check_models(&mixed, "lr-a", false).unwrap_err().to_string();
        assert!(e.contains("2 of 3 rows"), "{e}");
        assert!(e.contains("lr-a (1 rows), lr-b (2 rows)"), "{e}");
        assert!(e.contains("--allow-other-models"), "{e}");
        check_models(&mixed, "lr-a", true).unwrap();
        assert_eq!(
            summary(&mixed, "http://x", CONCURRENCY)["model_versions"],
            json!({"lr-a": 1, "lr-b": 2})
        );
    }

    #[test]
    fn request_bodies_are_signed_v02_with_bound_evidence() {
        let row = Row {
            id: "qa-1-0".into(),
            task: "qa".into(),
            question: "Who wrote it?".into(),
            context: "Ada Lovelace wrote the first program.".into(),
            response: "Ada Lovelace wrote it. She was first.".into(),
            label: 0,
        };
        let (body, ev) = row.signed_pcs(&shard_of("r1", &row.id), Some("k"));
        let pcs = parse(&body).unwrap();
        assert_eq!(pcs.version, "0.2");
        assert_eq!(bound_evidence(&pcs), Ok(Some(&ev)));
        let payload = kakeya_core::canonical::signing_payload(&pcs);
        assert_eq!(
            pcs.sig,
            kakeya_core::signature::sign_hmac(payload.as_bytes(), b"k")
        );
        assert_eq!(
            pcs.pcs_id,
            kakeya_core::ids::derive_pcs_id_bound(
                &pcs.merkle_root,
                pcs.epoch,
                "eval-r1-qa-1-0",
                &kakeya_core::evidence::evidence_sha256(&ev)
            )
        );
        let (other, _) = row.signed_pcs(&shard_of("r2", &row.id), Some("k"));
        assert_ne!(parse(&other).unwrap().pcs_id, pcs.pcs_id, "unique per run");
    }
}
