//! One error type for every HTTP answer that is not a verify result.
//!
//! Each variant knows its status and its stable machine code, so handlers just `?` and the
//! body is always `{"error": "...", "code": "..."}` (the published contract, spec §15 #10).
//! Every "try again later" condition is a 503 with `Retry-After`, never a 500 (spec §15 #11):
//! agents retry 5xx anyway, and the header tells them when.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// JSON body of every error answer.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    pub code: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request did not come through the gate filter (missing/invalid `x-kakeya-*` headers).
    #[error("{0}")]
    NotFromGate(String),
    /// The body is not a PCS (`code` from [`kakeya_core::ParseError::code`]).
    #[error("{message}")]
    InvalidBody { code: &'static str, message: String },
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("not found")]
    NotFound,
    /// A named resource does not exist (the message says which).
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Conflict(String),
    /// A conflict with its own stable code (e.g. `label_conflict`).
    #[error("{message}")]
    ConflictWith { code: &'static str, message: String },
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The ingest shared secret is missing or wrong: the request did not come from Envoy.
    #[error("missing or wrong x-kakeya-ingest-secret: only Envoy may call the ingest listener")]
    NotFromEnvoy,
    #[error("{0}")]
    BadRequest(String),
    /// The WAL could not be written or fsynced: nothing was acknowledged.
    #[error("write-ahead log unavailable: {0}")]
    WalUnavailable(String),
    /// The database failed; the record is in the WAL but the answer is not known.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("not ready: {0}")]
    NotReady(String),
    /// A stored registry row failed its integrity check (`registry::IntegrityError`): 500
    /// where it is to be served, 409 where a publication using it is refused.
    #[error("{message}")]
    Integrity { refused: bool, message: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFromGate(_) | ApiError::InvalidBody { .. } | ApiError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotFound | ApiError::Missing(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_)
            | ApiError::ConflictWith { .. }
            | ApiError::Integrity { refused: true, .. } => StatusCode::CONFLICT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFromEnvoy => StatusCode::FORBIDDEN,
            ApiError::WalUnavailable(_)
            | ApiError::StoreUnavailable(_)
            | ApiError::ShuttingDown
            | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) | ApiError::Integrity { refused: false, .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFromGate(_) => "not_from_gate",
            ApiError::InvalidBody { code, .. } => code,
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::NotFound | ApiError::Missing(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::ConflictWith { code, .. } => code,
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFromEnvoy => "forbidden",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::WalUnavailable(_) => "wal_unavailable",
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::NotReady(_) => "not_ready",
            ApiError::Integrity { .. } => "integrity_failure",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.to_string(),
            code: self.code().to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = self.code(), error = %self, "request failed");
        }
        let mut resp = (status, axum::Json(self.body())).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, ApiError::Unauthorized) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
