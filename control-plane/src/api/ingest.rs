//! `POST /v1/pcs/submit` on the ingest listener.

use super::IngestState;
use crate::error::{ApiError, ErrorBody};
use crate::wal::WalRecord;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::time::Instant;

pub const H_TENANT: &str = "x-kakeya-tenant";
pub const H_RESULT: &str = "x-kakeya-result";
pub const H_CACHEABLE: &str = "x-kakeya-cacheable";
pub const H_VERIFY_NS: &str = "x-kakeya-verify-ns";
pub const H_DEDUP: &str = "x-kakeya-dedup";
pub use kakeya_core::pipeline::budget::H_BUDGET;
pub use kakeya_core::pipeline::{H_FILTER_NS, H_MICROVOTE_NS, H_MODEL_CALLS, H_RAG_NS};
/// The `cluster` label of inline anomaly counters: clusters are rebuilt offline
/// (`POST /v1/anomaly/clusters/rebuild`), so ingest does not know a decision's cluster.
pub const UNCLUSTERED: &str = "unclustered";

fn header<'a>(h: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::NotFromGate(format!("{name} is not ASCII"))),
    }
}

/// Records a submission the gate has verified and answers with the (possibly deduplicated)
/// verdict.
#[utoipa::path(
    post,
    path = "/v1/pcs/submit",
    tag = "ingest",
    request_body(content = String, content_type = "application/json", description = "The original PCS body"),
    params(
        ("x-kakeya-tenant" = Option<String>, Header, description = "Tenant (default `default`), set by the gate"),
        ("x-kakeya-result" = String, Header, description = "Compact VerifyResult JSON, set by the gate"),
        ("x-kakeya-cacheable" = Option<String>, Header, description = "`true`/`false`: may the result be stored in dedup"),
        ("x-kakeya-verify-ns" = Option<u64>, Header, description = "In-filter verify time in ns"),
        ("x-kakeya-llm-tokens" = Option<String>, Header, description = "LLM-gateway mode: the backend's token counts of the answer, `<prompt>,<completion>`, stored in the cost record"),
        ("x-kakeya-filter-ns" = Option<u64>, Header, description = "The filter's own time on the request in ns (its cost tracer), stored in the cost record"),
        ("x-kakeya-microvote-ns" = Option<u64>, Header, description = "The micro-vote callout's wait in ns, dispatch to answer or timeout (cost tracer, only after a callout), stored in the decision log"),
        ("x-kakeya-rag-ns" = Option<u64>, Header, description = "In-filter time of the rag_grounding vote in ns (cost tracer, only when the tenant's policy enables it), part of x-kakeya-filter-ns, stored in the cost record for the advisor's rag_off saving"),
        ("x-kakeya-model-calls" = Option<u64>, Header, description = "Micro-vote calls the filter dispatched for the request, stored in the cost record"),
        ("x-kakeya-budget" = Option<String>, Header, description = "`alert` or `degrade`: the tenant's budget action the request was served under"),
        ("x-kakeya-features" = Option<String>, Header, description = "Feature vector of a scored decision, set by the gate: `<schema>;<standard base64 of little-endian f64>` (kakeya_core::feature_wire). Stored with the decision; an invalid one is dropped (logged, `kakeya_feature_rejects_total{reason}`), the decision is still stored"),
        ("x-kakeya-anomaly" = Option<String>, Header, description = "Inline anomaly assessment, set by the gate: `<score>;<uncertainty>;<action none|shadow|guardrail>;<model version>`; stored in the decision log's anomaly_* columns and counted in kakeya_anomaly_*; a malformed one is dropped"),
        ("x-kakeya-anomaly-features" = Option<String>, Header, description = "The anomaly feature vector: `<anomaly schema>;<JSON array>`, stored in anomaly_features / anomaly_schema"),
        ("x-kakeya-ingest-secret" = Option<String>, Header, description = "Shared secret added by Envoy; required when the control plane has one (KAKEYA_INGEST_SECRET)"),
    ),
    responses(
        (status = 200, description = "Accepted and not escalated (VerifyResult JSON); header x-kakeya-dedup: hit|miss"),
        (status = 202, description = "Rejected or escalated (VerifyResult JSON)"),
        (status = 409, body = ErrorBody, description = "idempotency_conflict: the pcs_id was already submitted with different signed content; nothing changed (x-kakeya-dedup: conflict)"),
        (status = 400, body = ErrorBody, description = "not_from_gate / invalid_json"),
        (status = 403, body = ErrorBody, description = "Missing or wrong x-kakeya-ingest-secret"),
        (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "wal_unavailable / store_unavailable; Retry-After: 1"),
    )
)]
pub async fn submit(
    State(st): State<IngestState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let tenant = match header(&headers, H_TENANT) {
        Ok(t) => t
            .unwrap_or(kakeya_core::signature::DEFAULT_TENANT)
            .to_string(),
        Err(e) => return Err(e),
    };
    if tenant.is_empty() || tenant.len() > 256 {
        return Err(ApiError::NotFromGate(format!(
            "{H_TENANT} must be 1..=256 characters"
        )));
    }
    st.metrics
        .ingest_total
        .with_label_values(&[tenant.as_str()])
        .inc();
    let res = handle(&st, tenant.clone(), &headers, body).await;
    st.metrics
        .ingest_duration_seconds
        .with_label_values(&[tenant.as_str()])
        .observe(started.elapsed().as_secs_f64());
    res
}

async fn handle(
    st: &IngestState,
    tenant: String,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest(format!("cannot read body: {e}"))
        }
    })?;
    let result = header(headers, H_RESULT)?
        .ok_or_else(|| {
            ApiError::NotFromGate(format!(
                "missing {H_RESULT}: requests must come through the gate"
            ))
        })?
        .to_string();
    let cacheable = match header(headers, H_CACHEABLE)? {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::NotFromGate(format!(
                "{H_CACHEABLE} must be true or false, got {other:?}"
            )))
        }
    };
    let number = |name| -> Result<Option<u64>, ApiError> {
        Ok(header(headers, name)?.and_then(|v| v.trim().parse::<u64>().ok()))
    };
    let verify_ns = number(H_VERIFY_NS)?;
    // The filter's cost tracer (absent from a gate without it: the record keeps NULL).
    let (filter_ns, model_calls) = (number(H_FILTER_NS)?, number(H_MODEL_CALLS)?);
    let microvote_ns = number(H_MICROVOTE_NS)?;
    // A gateway answer's token counts (LLM-gateway mode): into the cost record.
    let tokens = header(headers, kakeya_core::chat::H_LLM_TOKENS)?
        .and_then(kakeya_core::chat::TokenUsage::parse_header);
    let rag_ns = number(H_RAG_NS)?;
    // Inline anomaly scoring (crate::anomaly::inline): counted here, stored with the decision.
    let anomaly = crate::anomaly::inline::from_headers(headers, &tenant);
    if let Some(a) = &anomaly {
        st.metrics
            .anomaly
            .observe_decision(&tenant, UNCLUSTERED, a.score, a.action());
    }
    // Same checks the apply path makes, before anything is written.
    let verdict = serde_json::from_str::<kakeya_core::VerifyResult>(&result)
        .map_err(|e| ApiError::NotFromGate(format!("{H_RESULT} is not a VerifyResult: {e}")))?;
    let features =
        crate::decision_features::accept(headers, verdict.risk.is_some(), &tenant, &st.metrics);
    if let Some(action) = header(headers, H_BUDGET)? {
        st.metrics.cost.budget_served(&tenant, action);
    }
    let mut pcs = kakeya_core::parse(&body).map_err(|e| ApiError::InvalidBody {
        code: e.code(),
        message: e.to_string(),
    })?;
    // Raw evidence (question, context, response) served the filter's scoring and is never
    // persisted: the WAL keeps the PCS without it (its hash stays, in `evidence_sha256`).
    let body = if pcs.evidence.is_some() {
        without_evidence(&body)?
    } else {
        String::from_utf8(body.to_vec()).map_err(|_| ApiError::InvalidBody {
            code: "invalid_json",
            message: "body is not UTF-8".into(),
        })?
    };
    // The task kind of the signed evidence outlives it: the decision log keeps it.
    let task = kakeya_core::evidence::bound_evidence(&pcs)
        .ok()
        .flatten()
        .and_then(|e| e.task)
        .map(|t| t.as_str().to_string());
    // Kept only in memory, for evidence retention once the decision is durable.
    let retained = match &st.evidence {
        Some(r) if r.retains(&tenant) => pcs.evidence.take().map(|e| (r, e)),
        _ => None,
    };
    let record = WalRecord {
        ts_ms: crate::now_ms(),
        tenant: tenant.clone(),
        result,
        cacheable,
        verify_ns,
        body,
        features,
        filter_ns,
        model_calls,
        microvote_ns,
        rag_ns,
        task,
        prompt_tokens: tokens.map(|t| t.prompt_tokens),
        completion_tokens: tokens.map(|t| t.completion_tokens),
        anomaly,
    };
    let applied = st.handle.submit(record).await?;
    if let Some((retainer, evidence)) = retained {
        retainer
            .keep_if_queued(&tenant, &pcs.pcs_id, &applied, evidence)
            .await;
    }
    let status = StatusCode::from_u16(applied.status).unwrap_or(StatusCode::ACCEPTED);
    let mut resp = (status, applied.body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        H_DEDUP,
        HeaderValue::from_static(if applied.conflict {
            "conflict"
        } else if applied.dedup_hit {
            "hit"
        } else {
            "miss"
        }),
    );
    Ok(resp)
}

/// The body with its top-level `evidence` member removed.
fn without_evidence(body: &[u8]) -> Result<String, ApiError> {
    let invalid = |e: serde_json::Error| ApiError::InvalidBody {
        code: "invalid_json",
        message: e.to_string(),
    };
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(invalid)?;
    v.remove("evidence");
    serde_json::to_string(&v).map_err(invalid)
}
