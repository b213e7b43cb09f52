//! Routes of cost attribution (admin listener, bearer token), merged into
//! [`crate::api::protected_admin_routes`].

use super::billing::Provider;
use super::budgets::{Budget, BudgetStatus};
use super::prices::{day_of_ms, parse_day, PriceBook, PriceEntry};
use super::{advisor, budgets, import, record, store, CostError, CostForecast, CostSummary};
use super::{ReconciliationReport, MAX_WINDOW_DAYS};
use crate::api::AdminState;
use crate::error::{ApiError, ErrorBody};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(get_prices, add_price))
        .routes(routes!(summary))
        .routes(routes!(start_import))
        .routes(routes!(import_job))
        .routes(routes!(run_reconcile))
        .routes(routes!(latest_reconcile))
        .routes(routes!(reconcile_history))
        .routes(routes!(run_forecast))
        .routes(routes!(recommendations))
        .routes(routes!(apply_recommendation))
        .routes(routes!(list_budgets, put_budget))
        .routes(routes!(delete_budget))
        .routes(routes!(recompute_budgets))
}

impl From<CostError> for ApiError {
    fn from(e: CostError) -> Self {
        match e {
            CostError::Invalid(m) => ApiError::BadRequest(m),
            CostError::NotFound(m) => ApiError::Missing(m),
            CostError::Conflict(m) => ApiError::ConflictWith {
                code: "not_pending",
                message: m,
            },
            CostError::NotConfigured(m) => ApiError::ConflictWith {
                code: "not_configured",
                message: m,
            },
            CostError::Store(e) => ApiError::StoreUnavailable(e.to_string()),
        }
    }
}

fn json<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v)
        .map_err(|e| ApiError::BadRequest(format!("malformed body: {}", e.body_text())))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// A day from `YYYY-MM-DD` or an RFC 3339 time (its UTC day).
pub fn day_param(what: &str, s: &str) -> Result<i64, ApiError> {
    if s.len() > 64 {
        return Err(ApiError::BadRequest(format!("{what} is too long")));
    }
    parse_day(s)
        .or_else(|_| crate::learn::parse_rfc3339(s).map(day_of_ms))
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "{what} must be a date YYYY-MM-DD or an RFC 3339 time (got {s:?})"
            ))
        })
}

/// `[start, end)` in days, checked.
fn window(start: &str, end: &str) -> Result<(i64, i64), ApiError> {
    let (a, b) = (day_param("start_time", start)?, day_param("end_time", end)?);
    if b <= a || b - a > MAX_WINDOW_DAYS {
        return Err(ApiError::BadRequest(format!(
            "end_time must be after start_time, at most {MAX_WINDOW_DAYS} days later"
        )));
    }
    Ok((a, b))
}

#[utoipa::path(get, path = "/v1/cost/prices", tag = "cost", security(("bearer" = [])),
    responses((status = 200, body = PriceBook, description = "The price book in force: the [[cost.prices]] entries of kakeya.toml and those added through the API, sorted by tenant then effective date"),
              (status = 400, body = ErrorBody, description = "The stored entries and the configured ones conflict"),
              (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get_prices(State(st): State<AdminState>) -> Result<Json<PriceBook>, ApiError> {
    Ok(Json(super::book(&st.db, &st.cost).await?))
}

#[utoipa::path(post, path = "/v1/cost/prices", tag = "cost", request_body = PriceEntry, security(("bearer" = [])),
    responses((status = 201, body = PriceBook, description = "Entry stored; the new price book"),
              (status = 400, body = ErrorBody, description = "Malformed entry (date, negative or non-finite price), or a second entry of the same scope and day; nothing stored"),
              (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn add_price(
    State(st): State<AdminState>,
    body: Result<Json<PriceEntry>, JsonRejection>,
) -> Result<(StatusCode, Json<PriceBook>), ApiError> {
    let e = json(body)?;
    let mut stored = store::stored_prices(&st.db)
        .await
        .map_err(CostError::from)?;
    stored.push(e.clone());
    st.cost
        .book(&stored)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    store::add_price(&st.db, &e, crate::now_ms())
        .await
        .map_err(CostError::from)?;
    Ok((
        StatusCode::CREATED,
        Json(super::book(&st.db, &st.cost).await?),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    /// First day (`YYYY-MM-DD`), default 30 days ago.
    pub from: Option<String>,
    /// Day after the last (`YYYY-MM-DD`), default tomorrow (today included).
    pub to: Option<String>,
    pub tenant: Option<String>,
    /// `champion`, `challenger` or `canary`: that arm's scored decisions only.
    pub arm: Option<String>,
    pub model_version: Option<String>,
}

#[utoipa::path(get, path = "/v1/cost/summary", tag = "cost", params(SummaryQuery), security(("bearer" = [])),
    responses((status = 200, body = CostSummary, description = "Per tenant and day: the summed cost records (decisions, trusted tasks, bytes) priced by the price book per service (compute, storage, network, model_calls), cost per trusted task; per tenant totals"),
              (status = 400, body = ErrorBody, description = "A date that is not YYYY-MM-DD, a window of more than 400 days, unknown parameter"),
              (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn summary(
    State(st): State<AdminState>,
    q: Result<Query<SummaryQuery>, QueryRejection>,
) -> Result<Json<CostSummary>, ApiError> {
    let q = query(q)?;
    let today = super::today();
    let from = q
        .from
        .as_deref()
        .map(|s| day_param("from", s))
        .transpose()?
        .unwrap_or(today - 30);
    let to =
        q.to.as_deref()
            .map(|s| day_param("to", s))
            .transpose()?
            .unwrap_or(today + 1);
    if to <= from || to - from > MAX_WINDOW_DAYS {
        return Err(ApiError::BadRequest(format!(
            "to must be after from, at most {MAX_WINDOW_DAYS} days later"
        )));
    }
    let sel = record::Selection {
        from_day: from,
        to_day: to,
        tenant: q.tenant,
        arm: q.arm,
        model_version: q.model_version,
    };
    let days = super::rollup(&st.db, &st.cost, &sel).await?;
    Ok(Json(super::summarise(&st.cost.currency, from, to, days)))
}

/// `POST /v1/cost/import`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    pub provider: Provider,
    /// First day of usage imported (`YYYY-MM-DD` or RFC 3339).
    #[schema(max_length = 64)]
    pub start_time: String,
    /// Day after the last (exclusive).
    #[schema(max_length = 64)]
    pub end_time: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobAccepted {
    pub job_id: String,
}

#[utoipa::path(post, path = "/v1/cost/import", tag = "cost", request_body = ImportRequest, security(("bearer" = [])),
    responses((status = 202, body = JobAccepted, description = "Import started: poll GET /v1/cost/import/{job_id}"),
              (status = 400, body = ErrorBody, description = "Malformed body, unknown provider (aws|gcp|azure), bad dates or window; nothing started"),
              (status = 401, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "Code `not_configured`: no exports configured for the provider, or the location is unreadable"),
              (status = 503, body = ErrorBody)))]
pub async fn start_import(
    State(st): State<AdminState>,
    body: Result<Json<ImportRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<JobAccepted>), ApiError> {
    let req = json(body)?;
    let w = window(&req.start_time, &req.end_time)?;
    let root = st.cost.exports(req.provider).cloned().ok_or_else(|| {
        CostError::NotConfigured(format!(
            "no {} exports configured: set [cost] {}_exports",
            req.provider.as_str(),
            req.provider.as_str()
        ))
    })?;
    import::export_files(&root)?;
    let now = crate::now_ms();
    let id = import::job_id(req.provider, now);
    store::insert_job(&st.db, &id, req.provider, w, now)
        .await
        .map_err(CostError::from)?;
    let (db, opts, job, metrics) = (
        st.db.clone(),
        st.cost.clone(),
        id.clone(),
        st.metrics.clone(),
    );
    tokio::spawn(async move {
        match import::run_job(&db, &opts, req.provider, w, &job, &|_| {}).await {
            Ok(r) => metrics.cost.imported(req.provider, &r),
            Err(e) => tracing::warn!(job = %job, error = %e, "billing import failed"),
        }
    });
    Ok((StatusCode::ACCEPTED, Json(JobAccepted { job_id: id })))
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImportJob {
    pub job_id: String,
    pub provider: String,
    pub start_time: String,
    pub end_time: String,
    /// `running`, `succeeded`, `failed`.
    pub status: String,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// Lines of the window imported (when succeeded).
    pub records: Option<u64>,
    /// The whole result: per file its format, rows, malformed rows with line numbers.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
}

#[utoipa::path(get, path = "/v1/cost/import/{job_id}", tag = "cost", params(("job_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ImportJob), (status = 404, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn import_job(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<ImportJob>, ApiError> {
    let (provider, from, to, status, created, finished, result, error) = store::job(&st.db, &id)
        .await
        .map_err(CostError::from)?
        .ok_or_else(|| ApiError::Missing(format!("no import job {id:?}")))?;
    Ok(Json(ImportJob {
        job_id: id,
        provider,
        start_time: super::prices::format_day(from),
        end_time: super::prices::format_day(to),
        status,
        created_at: crate::learn::rfc3339(created),
        finished_at: finished.map(crate::learn::rfc3339),
        records: result
            .as_ref()
            .and_then(|r| r.get("records"))
            .and_then(|v| v.as_u64()),
        result,
        error,
    }))
}

/// `POST /v1/cost/reconcile`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileRequest {
    #[schema(max_length = 64)]
    pub start_time: String,
    #[schema(max_length = 64)]
    pub end_time: String,
}

#[utoipa::path(post, path = "/v1/cost/reconcile", tag = "cost", request_body = ReconcileRequest, security(("bearer" = [])),
    responses((status = 200, body = ReconciliationReport, description = "Internal against billed per service and day and per service and month (signed symmetric relative difference, `no_data` where a side is empty, `alert` above [cost] alert_drift_pct), stored with the SHA-256 of both inputs"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn run_reconcile(
    State(st): State<AdminState>,
    body: Result<Json<ReconcileRequest>, JsonRejection>,
) -> Result<Json<ReconciliationReport>, ApiError> {
    let req = json(body)?;
    let (from, to) = window(&req.start_time, &req.end_time)?;
    let r = super::reconcile_window(&st.db, &st.cost, from, to).await?;
    st.metrics.cost.reconciled(&r);
    Ok(Json(r))
}

#[utoipa::path(get, path = "/v1/cost/reconcile/latest", tag = "cost", security(("bearer" = [])),
    responses((status = 200, body = ReconciliationReport), (status = 404, body = ErrorBody, description = "No reconciliation yet: POST /v1/cost/reconcile"),
              (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn latest_reconcile(
    State(st): State<AdminState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    store::reconciliations(&st.db, 1, None)
        .await
        .map_err(CostError::from)?
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError::Missing("no reconciliation yet: POST /v1/cost/reconcile".into()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// 1..=100 (default 20), newest first.
    pub limit: Option<u32>,
    /// Only reports with an id below this one (the next page).
    pub before_id: Option<i64>,
}

#[utoipa::path(get, path = "/v1/cost/reconcile/history", tag = "cost", params(HistoryQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<ReconciliationReport>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn reconcile_history(
    State(st): State<AdminState>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1..=100 (got {limit})"
        )));
    }
    Ok(Json(
        store::reconciliations(&st.db, i64::from(limit), q.before_id)
            .await
            .map_err(CostError::from)?,
    ))
}

/// `POST /v1/cost/forecast`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForecastRequest {
    /// 1..=366.
    pub horizon_days: usize,
}

#[utoipa::path(post, path = "/v1/cost/forecast", tag = "cost", request_body = ForecastRequest, security(("bearer" = [])),
    responses((status = 200, body = CostForecast, description = "Per tenant and total: daily point forecast with 80 % and 95 % intervals (additive Holt-Winters, weekly season; naive below 14 days of history), the fitted parameters and the rolling-origin backtest (MAPE and interval coverage at 7 and 30 days)"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn run_forecast(
    State(st): State<AdminState>,
    body: Result<Json<ForecastRequest>, JsonRejection>,
) -> Result<Json<CostForecast>, ApiError> {
    let req = json(body)?;
    let f = super::forecast_costs(&st.db, &st.cost, req.horizon_days, super::today()).await?;
    st.metrics.cost.forecasted(&f);
    Ok(Json(f))
}

#[utoipa::path(get, path = "/v1/cost/recommendations", tag = "cost", security(("bearer" = [])),
    responses((status = 200, body = advisor::Recommendations, description = "Recommendations computed now (earlier pending ones are superseded) and the applied ones with their realised savings; rules without data are listed under `skipped` as `no_data`"),
              (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn recommendations(
    State(st): State<AdminState>,
) -> Result<Json<advisor::Recommendations>, ApiError> {
    Ok(Json(
        advisor::recommend(&st.db, &st.cost, crate::now_ms()).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CostApplyRequest)]
pub struct ApplyRequest {
    #[schema(max_length = 256)]
    pub recommendation_id: String,
}

#[utoipa::path(post, path = "/v1/cost/recommendations/apply", tag = "cost", request_body = ApplyRequest, security(("bearer" = [])),
    responses((status = 200, body = advisor::Recommendation, description = "Applied: its diff changed the policy (status applied, applied_at)"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "Code `not_pending`: already applied or superseded"),
              (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn apply_recommendation(
    State(st): State<AdminState>,
    body: Result<Json<ApplyRequest>, JsonRejection>,
) -> Result<Json<advisor::Recommendation>, ApiError> {
    let req = json(body)?;
    let r = advisor::apply(&st.db, &req.recommendation_id, crate::now_ms()).await?;
    recompute(&st).await?;
    if r.kind != "budget_cap" {
        // A policy change (micro_vote_off, rag_off) reaches the filter in the next bundle.
        republish_budgets(&st).await?;
    }
    Ok(Json(r))
}

#[utoipa::path(get, path = "/v1/cost/budgets", tag = "cost", security(("bearer" = [])),
    responses((status = 200, body = Vec<BudgetStatus>), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_budgets(
    State(st): State<AdminState>,
) -> Result<Json<Vec<BudgetStatus>>, ApiError> {
    Ok(Json(budgets::list(&st.db).await?))
}

#[utoipa::path(put, path = "/v1/cost/budgets", tag = "cost", request_body = Budget, security(("bearer" = [])),
    responses((status = 200, body = Vec<BudgetStatus>, description = "Budget set, every budget recomputed (and the bundle republished when an action changed)"),
              (status = 400, body = ErrorBody, description = "Malformed body, caps not 0 ≤ soft ≤ hard, unknown action; nothing changed"),
              (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn put_budget(
    State(st): State<AdminState>,
    body: Result<Json<Budget>, JsonRejection>,
) -> Result<Json<Vec<BudgetStatus>>, ApiError> {
    let b = json(body)?;
    budgets::set(&st.db, &b, crate::now_ms()).await?;
    Ok(Json(recompute(&st).await?))
}

#[utoipa::path(delete, path = "/v1/cost/budgets/{tenant}", tag = "cost", params(("tenant" = String, Path)), security(("bearer" = [])),
    responses((status = 204, description = "Removed (and the bundle republished)"), (status = 404, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn delete_budget(
    State(st): State<AdminState>,
    Path(tenant): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !budgets::delete(&st.db, &tenant).await? {
        return Err(ApiError::Missing(format!(
            "tenant {tenant:?} has no budget"
        )));
    }
    republish_budgets(&st).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/cost/budgets/recompute", tag = "cost", security(("bearer" = [])),
    responses((status = 200, body = Vec<BudgetStatus>, description = "Month-to-date spend and action of every budget, recomputed now"),
              (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn recompute_budgets(
    State(st): State<AdminState>,
) -> Result<Json<Vec<BudgetStatus>>, ApiError> {
    Ok(Json(recompute(&st).await?))
}

async fn recompute(st: &AdminState) -> Result<Vec<BudgetStatus>, ApiError> {
    let now = crate::now_ms();
    let (list, _) = budgets::recompute(&st.db, &st.cost, now).await?;
    st.metrics.cost.budgets(&list);
    if budgets::needs_publish(&st.db, now).await? {
        republish_budgets(st).await?;
    }
    Ok(list)
}

/// Publishes the next bundle (carrying the budget states) when a champion exists.
async fn republish_budgets(st: &AdminState) -> Result<(), ApiError> {
    let Some(seed) = st.bundle_seed.as_deref() else {
        return Ok(());
    };
    match crate::registry::republish(&st.db, seed, crate::now_ms()).await {
        Ok(_) | Err(crate::registry::RegistryError::Conflict(_)) => Ok(()),
        Err(e) => Err(crate::api::registry::refused(e)),
    }
}
