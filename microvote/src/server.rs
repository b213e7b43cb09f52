//! `kakeya microvote serve`: `POST /v1/microvote`, `GET /healthz`, `GET /metrics`,
//! `GET /v1/openapi.json` on a listener of its own.
//!
//! Inference runs on a fixed pool of worker threads fed by a bounded queue: a request that
//! finds the queue full gets 503 at once (the filter's deadline would expire anyway), so memory
//! stays bounded under any load. Inputs are capped (body and each text → 413) and parsed strictly
//! (400); every error is `{"error", "code"}`.

use crate::metrics::Metrics;
use crate::scorer::{Scored, Scorer};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use kakeya_core::microvote::{MicroVoteRequest, MicroVoteResponse};
use serde::Serialize;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Limits and pool size of one server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Inference worker threads (each runs one request at a time).
    pub workers: usize,
    /// Requests waiting for a worker beyond which new ones get 503.
    pub queue: usize,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Largest question, context or response, bytes.
    pub max_text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            workers: 1,
            queue: 32,
            max_body_bytes: 256 * 1024,
            max_text_bytes: 64 * 1024,
        }
    }
}

/// Body of every error answer.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    pub code: String,
}

/// An error answer: status, stable code, message that says what to do.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    /// The `outcome` label the request is counted under.
    fn outcome(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::SERVICE_UNAVAILABLE => "overloaded",
            _ => "error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(ErrorBody {
                error: self.message,
                code: self.code.to_string(),
            }),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

type Reply = tokio::sync::oneshot::Sender<Result<Scored, String>>;
struct Job {
    req: MicroVoteRequest,
    reply: Reply,
}

#[derive(Clone)]
pub struct AppState {
    scorer: Arc<Scorer>,
    queue: SyncSender<Job>,
    metrics: Metrics,
    limits: Limits,
}

/// Starts the worker threads and returns the state the routes share.
pub fn start(scorer: Arc<Scorer>, limits: Limits, metrics: Metrics) -> AppState {
    let (tx, rx) = sync_channel::<Job>(limits.queue.max(1));
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..limits.workers.clamp(1, 2) {
        let rx = rx.clone();
        let scorer = scorer.clone();
        let _ = std::thread::Builder::new()
            .name(format!("microvote-{i}"))
            .spawn(move || work(&rx, &scorer));
    }
    AppState {
        scorer,
        queue: tx,
        metrics,
        limits,
    }
}

fn work(rx: &Mutex<Receiver<Job>>, scorer: &Scorer) {
    loop {
        let job = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let out = scorer.score(&job.req).map_err(|e| e.to_string());
        let _ = job.reply.send(out);
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kakeya Edge micro-vote",
        description = "The auxiliary hallucination model the gate calls (cluster kakeya_microvote)."
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(microvote))
        .routes(routes!(healthz))
        .routes(routes!(metrics))
}

/// The OpenAPI document of the routes [`router`] serves.
pub fn document() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

pub fn router(state: AppState) -> Router {
    let (r, doc) = routes().split_for_parts();
    let doc = Arc::new(doc);
    r.route(
        "/v1/openapi.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { Json((*doc).clone()) }
        }),
    )
    .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
    .method_not_allowed_fallback(|| async {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        )
    })
    .with_state(state)
}

/// The micro-vote's request body (the contract in `kakeya_core::microvote`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct MicroVoteRequestDoc {
    question: Option<String>,
    context: Option<String>,
    response: String,
    /// `qa | dialogue | summarization | rag | other`
    task: Option<String>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct MicroVoteResponseDoc {
    p_hallucinated: f64,
    model: String,
    server_us: u64,
    context_cached: bool,
}

fn parse(state: &AppState, body: &Bytes) -> Result<MicroVoteRequest, ApiError> {
    let req: MicroVoteRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("body is not a micro-vote request ({{\"response\", \"context\"?, \"question\"?, \"task\"?}}): {e}"),
        )
    })?;
    let cap = state.limits.max_text_bytes;
    for (name, text) in [
        ("question", req.question.as_deref()),
        ("context", req.context.as_deref()),
        ("response", Some(req.response.as_str())),
    ] {
        if text.is_some_and(|t| t.len() > cap) {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "field_too_large",
                format!("{name} is larger than {cap} bytes"),
            ));
        }
    }
    if req.response.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_response",
            "response is empty: there is nothing to judge",
        ));
    }
    Ok(req)
}

#[utoipa::path(
    post,
    path = "/v1/microvote",
    tag = "microvote",
    request_body = MicroVoteRequestDoc,
    responses(
        (status = 200, body = MicroVoteResponseDoc, description = "calibrated probability that the response is hallucinated"),
        (status = 400, body = ErrorBody, description = "not JSON of the contract, or an empty response"),
        (status = 413, body = ErrorBody, description = "body or a text over its cap"),
        (status = 503, body = ErrorBody, description = "inference queue full; Retry-After: 1"),
    )
)]
async fn microvote(State(st): State<AppState>, body: Body) -> Response {
    let t0 = Instant::now();
    let out = answer(&st, body, t0).await;
    let outcome = match &out {
        Ok(_) => "ok",
        Err(e) => e.outcome(),
    };
    st.metrics.requests.with_label_values(&[outcome]).inc();
    st.metrics.duration.observe(t0.elapsed().as_secs_f64());
    match out {
        Ok(r) => Json(r).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn answer(st: &AppState, body: Body, t0: Instant) -> Result<MicroVoteResponse, ApiError> {
    let cap = st.limits.max_body_bytes;
    let bytes = axum::body::to_bytes(body, cap).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("body is larger than {cap} bytes"),
        )
    })?;
    let req = parse(st, &bytes)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    match st.queue.try_send(Job { req, reply: tx }) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "every inference worker is busy and the queue is full; retry later",
            ))
        }
        Err(TrySendError::Disconnected(_)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "workers_down",
                "the inference workers stopped; restart `kakeya microvote serve`",
            ))
        }
    }
    let scored = rx
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "worker_lost",
                "the inference worker dropped the request",
            )
        })?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "inference_failed", e))?;
    st.metrics.observe_caches(&scored);
    Ok(MicroVoteResponse {
        p_hallucinated: scored.p_hallucinated,
        model: st.scorer.version().to_string(),
        server_us: u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX),
        context_cached: scored.context_cached,
    })
}

#[utoipa::path(get, path = "/healthz", tag = "microvote", responses((status = 200, description = "`{\"status\":\"ok\",\"model\":\"mv-…\"}`")))]
async fn healthz(State(st): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok", "model": st.scorer.version()}))
}

#[utoipa::path(get, path = "/metrics", tag = "microvote", responses((status = 200, body = String, description = "Prometheus text format")))]
async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        st.metrics.render(),
    )
        .into_response()
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
