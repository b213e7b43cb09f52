//! Routes of the audit log and the compliance reports (admin listener, bearer token), merged
//! into [`crate::api::protected_admin_routes`].

use super::compliance::{self, Framework};
use super::store::{self, Checkpoint, Entry};
use super::verify::{self, Report};
use crate::api::AdminState;
use crate::error::{ApiError, ErrorBody};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Most entries per page.
pub const MAX_ENTRIES: u32 = 1000;

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(verify_chain))
        .routes(routes!(entries))
        .routes(routes!(latest_checkpoint))
        .routes(routes!(report))
}

fn store_err(e: sqlx::Error) -> ApiError {
    ApiError::StoreUnavailable(e.to_string())
}

/// The key checkpoints are signed and verified with.
fn trusted_key(st: &AdminState) -> Result<String, ApiError> {
    st.bundle_seed
        .as_ref()
        .map(|s| crate::registry::keys::public_key_b64(s))
        .ok_or_else(|| {
            ApiError::NotReady("no signing key loaded: checkpoints cannot be verified".into())
        })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// First seq to verify (default 1).
    pub from: Option<i64>,
    /// Last seq to verify (default the head).
    pub to: Option<i64>,
    /// Also recompute every `decision_batch` entry's Merkle root from the decision-log rows
    /// it covers (default false).
    pub deep: Option<bool>,
}

#[utoipa::path(
    get,
    path = "/v1/audit/verify",
    tag = "audit",
    params(VerifyQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Report, description = "The chain and the checkpoints within [from, to] re-walked: `ok`, counts, the newest verified checkpoint and the first broken link (seq, problem, detail); checkpoints are checked against the keyring (current and endorsed retired keys, `trusted_key_ids`); with deep=true also each decision batch's Merkle root against the decision log (`batches_checked`)"),
        (status = 400, body = ErrorBody, description = "from or to below 1, from above to, deep not true or false, unknown parameter"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn verify_chain(
    State(st): State<AdminState>,
    q: Result<Query<VerifyQuery>, QueryRejection>,
) -> Result<Json<Report>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    check_range(q.from, q.to)?;
    let key = trusted_key(&st)?;
    Ok(Json(
        verify::verify_with(&st.db, q.from, q.to, &key, q.deep.unwrap_or(false))
            .await
            .map_err(store_err)?,
    ))
}

/// Checks a seq range given by a caller.
pub fn check_range(from: Option<i64>, to: Option<i64>) -> Result<(), ApiError> {
    if from.is_some_and(|f| f < 1) || to.is_some_and(|t| t < 1) {
        return Err(ApiError::BadRequest(
            "from and to are seqs, at least 1".into(),
        ));
    }
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(ApiError::BadRequest(format!(
                "from ({f}) is above to ({t})"
            )));
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    /// First seq of the page (default 1).
    pub from_seq: Option<i64>,
    /// At most this many (1..=1000, default 100).
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = AuditEntriesPage)]
pub struct EntriesPage {
    pub entries: Vec<Entry>,
    /// `from_seq` of the next page; absent on the last page.
    pub next_from_seq: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/v1/audit/entries",
    tag = "audit",
    params(EntriesQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = EntriesPage, description = "Entries in seq order from from_seq"),
        (status = 400, body = ErrorBody, description = "from_seq below 1, limit outside 1..=1000, unknown parameter"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn entries(
    State(st): State<AdminState>,
    q: Result<Query<EntriesQuery>, QueryRejection>,
) -> Result<Json<EntriesPage>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let from = q.from_seq.unwrap_or(1);
    let limit = q.limit.unwrap_or(100);
    if from < 1 || !(1..=MAX_ENTRIES).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "from_seq must be at least 1 and limit within 1..={MAX_ENTRIES}"
        )));
    }
    // One more than asked says whether a next page exists.
    let mut entries = store::entries(&st.db, from, i64::from(limit) + 1)
        .await
        .map_err(store_err)?;
    let next_from_seq = (entries.len() > limit as usize).then(|| {
        entries.truncate(limit as usize);
        entries.last().map_or(from, |e| e.seq + 1)
    });
    Ok(Json(EntriesPage {
        entries,
        next_from_seq,
    }))
}

/// The anchoring export of a checkpoint (`kakeya-audit-anchor-v1`): what an external
/// timestamping service is given. `message_imprint` is what an RFC 3161 TimeStampReq carries
/// (SHA-256, hashedMessage = the head hash, which pins every entry up to `seq_to`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = AuditAnchor)]
pub struct Anchor {
    pub format: String,
    pub checkpoint: Checkpoint,
    /// `checkpoint.created_at_ms` in RFC 3339.
    pub created_at: String,
    /// The exact bytes the signature covers ([`super::chain::checkpoint_message`]).
    pub signed_message: String,
    pub message_imprint: MessageImprint,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = AuditMessageImprint)]
pub struct MessageImprint {
    /// `sha256`
    pub hash_algorithm: String,
    /// `2.16.840.1.101.3.4.2.1`
    pub hash_algorithm_oid: String,
    /// Lowercase hex: the checkpoint's head hash.
    pub hashed_message: String,
}

impl Anchor {
    pub fn of(c: Checkpoint) -> Anchor {
        Anchor {
            format: "kakeya-audit-anchor-v1".into(),
            created_at: crate::learn::rfc3339(c.created_at_ms),
            signed_message: String::from_utf8_lossy(&c.message()).into_owned(),
            message_imprint: MessageImprint {
                hash_algorithm: "sha256".into(),
                hash_algorithm_oid: "2.16.840.1.101.3.4.2.1".into(),
                hashed_message: c.head_hash.clone(),
            },
            checkpoint: c,
        }
    }
}

#[utoipa::path(
    get,
    path = "/v1/audit/checkpoints/latest",
    tag = "audit",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Anchor, description = "The newest signed checkpoint in the anchoring export format"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "Nothing sealed yet"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn latest_checkpoint(State(st): State<AdminState>) -> Result<Json<Anchor>, ApiError> {
    store::latest_checkpoint(&st.db)
        .await
        .map_err(store_err)?
        .map(|c| Json(Anchor::of(c)))
        .ok_or_else(|| {
            ApiError::Missing(
                "no audit checkpoint yet (segments are sealed on the [audit] cadence)".into(),
            )
        })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// `soc2` or `iso27001`.
    pub framework: String,
    /// Start of the period, RFC 3339 (inclusive).
    pub from: String,
    /// End of the period, RFC 3339 (exclusive).
    pub to: String,
    /// `json` (default) or `html`.
    pub format: Option<String>,
}

/// Parsed report arguments: (framework, from_ms, to_ms, html).
pub fn report_args(
    framework: &str,
    from: &str,
    to: &str,
    format: Option<&str>,
) -> Result<(Framework, i64, i64, bool), String> {
    let fw = Framework::parse(framework)
        .ok_or_else(|| format!("framework must be soc2 or iso27001 (got {framework:?})"))?;
    let from = crate::learn::parse_rfc3339(from)?;
    let to = crate::learn::parse_rfc3339(to)?;
    if from >= to {
        return Err("from must be before to".into());
    }
    let html = match format.unwrap_or("json") {
        "json" => false,
        "html" => true,
        f => return Err(format!("format must be json or html (got {f:?})")),
    };
    Ok((fw, from, to, html))
}

#[utoipa::path(
    get,
    path = "/v1/compliance/report",
    tag = "audit",
    params(ReportQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = compliance::Report, description = "The report (JSON, or text/html with format=html): each control's claim, rule, status (pass, fail, no_evidence) and evidence, every figure with its source (query id and column; for audit-log figures the seq range and the verified checkpoint covering it), and the SQL of every query"),
        (status = 400, body = ErrorBody, description = "Unknown framework or format, a time that is not RFC 3339, from not before to, unknown parameter"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn report(
    State(st): State<AdminState>,
    q: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (fw, from, to, html) = report_args(&q.framework, &q.from, &q.to, q.format.as_deref())
        .map_err(ApiError::BadRequest)?;
    let key = trusted_key(&st)?;
    let r = compliance::report(&st.db, fw, from, to, &key, crate::now_ms())
        .await
        .map_err(store_err)?;
    Ok(if html {
        (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            compliance::html(&r),
        )
            .into_response()
    } else {
        Json(r).into_response()
    })
}
