//! Scored submissions through a running [`Stack`], as the client sees them: what the A/B and
//! canary end-to-end tests drive and check (arm, model version, bundle version of each answer).

use crate::fixtures::{
    coverage_model, grounded_evidence, signed_pcs_with_evidence, unsupported_evidence, KEY,
};
use crate::stack::{post, Stack, StackOptions};
use anyhow::{bail, Context, Result};
use kakeya_core::evidence::Evidence;
use kakeya_core::VerifyResult;
use serde_json::Value;
use std::time::Duration;

/// One answer as the client saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub tenant: String,
    pub status: u16,
    pub arm: String,
    pub model_version: String,
    pub bundle_version: u64,
}

/// Submits an evidence-bearing PCS (grounded or not) for `tenant` with shard `shard`, retrying
/// the transient 503s of a loaded machine, and returns what the client got; an answer other
/// than a scored 200/202 is an error. The second value counts the 503s retried.
pub fn submit_scored(
    stack: &Stack,
    tenant: &str,
    shard: &str,
    grounded: bool,
) -> Result<(Seen, u32)> {
    let ev = if grounded {
        grounded_evidence()
    } else {
        unsupported_evidence()
    };
    let body = signed_pcs_with_evidence(shard, KEY, &ev, None).to_string();
    let headers = [
        ("content-type", "application/json"),
        ("x-tenant-id", tenant),
    ];
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build();
    for retried in 0..50 {
        let a = post(
            &agent,
            &stack.url("/v1/pcs/submit"),
            &headers,
            body.as_bytes(),
        )?;
        if a.status == 503 {
            continue;
        }
        if a.status != 200 && a.status != 202 {
            bail!("{tenant}: {a:?}");
        }
        let r: VerifyResult = serde_json::from_str(&a.body)?;
        let risk = r
            .risk
            .with_context(|| format!("{tenant}: not scored: {}", a.body))?;
        let seen = Seen {
            tenant: tenant.into(),
            status: a.status,
            arm: risk.arm,
            model_version: risk.model_version,
            bundle_version: risk.bundle_version,
        };
        return Ok((seen, retried));
    }
    bail!("the gateway kept answering 503")
}

/// `kakeya <args>` on the stack's data dir, which must succeed; its stdout.
pub fn kakeya_ok(stack: &Stack, args: &[&str]) -> Result<String> {
    let out = stack.kakeya(args)?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// [`kakeya_ok`], its stdout as JSON.
pub fn kakeya_json(stack: &Stack, args: &[&str]) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(&kakeya_ok(stack, args)?)?)
}

/// A scoring stack ([`StackOptions::scoring`], bundle poll every `poll_ms`) in multi-tenant mode
/// with `tenants` in its keyring (HMAC with the fixtures' key).
pub fn multi_tenant_stack(tenants: &[String], poll_ms: u64) -> Result<Stack> {
    Stack::start(multi_tenant_options(tenants, poll_ms))
}

/// The options of [`multi_tenant_stack`], for a test that adds its own.
pub fn multi_tenant_options(tenants: &[String], poll_ms: u64) -> StackOptions {
    let keyring: Vec<String> = tenants.iter().map(|t| format!("{t}:hmac:{KEY}")).collect();
    let mut opts = StackOptions::scoring(poll_ms);
    opts.env.push(("MULTI_TENANT".into(), "true".into()));
    opts.env.push(("TENANTS".into(), keyring.join(",")));
    opts
}

/// Registers the fixtures' coverage-only model with `kakeya model register` (a second model
/// beside the champion); its version.
pub fn register_coverage_model(stack: &Stack) -> Result<String> {
    let file = stack.data_path().join("coverage-model.json");
    std::fs::write(&file, serde_json::to_vec(&coverage_model())?)?;
    let path = file.to_str().context("a UTF-8 data path")?;
    kakeya_ok(stack, &["model", "register", path])?;
    Ok(coverage_model().version())
}

/// Evidence answering who wrote the first computer program, from a context that says Ada
/// Lovelace did, with `response` as the answer.
pub fn lovelace(response: &str) -> Evidence {
    Evidence {
        question: "Who wrote the first computer program?".into(),
        context: "Ada Lovelace wrote the first computer program in 1843, for Charles Babbage's \
                  Analytical Engine."
            .into(),
        citations: Vec::new(),
        response: response.into(),
        task: None,
    }
}

/// The answer the default model escalates (README, "Labels and the review queue").
pub fn turing() -> Evidence {
    lovelace(
        "The first computer program was written by Alan Turing in 1936 at Princeton on the \
         ENIAC, which he built with John von Neumann for the British navy.",
    )
}

/// The PCS `kakeya pcs build` makes of `ev` (signals from the response text, as an agent
/// using the CLI sends it), with its pcs_id.
pub fn built(stack: &Stack, shard: &str, ev: &Evidence) -> (Vec<u8>, String) {
    // The CLI's input files, outside the data dir (which tests search for the texts).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut args = vec!["pcs".to_string(), "build".into()];
    for (flag, text) in [
        ("--text", &ev.response),
        ("--question", &ev.question),
        ("--context", &ev.context),
    ] {
        let path = dir.join(&flag[2..]);
        std::fs::write(&path, text).unwrap();
        args.extend([flag.to_string(), path.to_string_lossy().into_owned()]);
    }
    args.extend([
        "--key".into(),
        KEY.into(),
        "--shard-id".into(),
        shard.into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = stack.kakeya(&args).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pcs: Value = serde_json::from_slice(&out.stdout).unwrap();
    (out.stdout, pcs["pcs_id"].as_str().unwrap().to_string())
}

/// Posts `body` to the gateway as `tenant`: the status and the JSON answer.
pub fn send(stack: &Stack, tenant: &str, body: &[u8]) -> (u16, Value) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build();
    let a = post(
        &agent,
        &stack.url(kakeya_core::SUBMIT_PATH),
        &[
            ("content-type", "application/json"),
            ("x-tenant-id", tenant),
        ],
        body,
    )
    .unwrap();
    (a.status, a.json())
}
