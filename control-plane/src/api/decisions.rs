//! `GET /v1/decisions`: the decision log, newest first, a page at a time.
//!
//! Pages follow an opaque cursor (`next_cursor` of the previous page) instead of silently
//! capping: a `limit` outside 1..=[`MAX_LIMIT`] is a 400, and a client that follows
//! `next_cursor` until it is `null` sees every row exactly once (rows are ordered by id).

use super::AdminState;
use crate::error::{ApiError, ErrorBody};
use crate::store::decision_log::{self, DecisionRow};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DecisionsQuery {
    /// Only this tenant's rows (empty: every tenant).
    pub tenant: Option<String>,
    /// Rows per page, 1..=1000 (default 100); anything else is a 400.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; omit for the newest rows.
    pub cursor: Option<String>,
}

/// One page of the decision log.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DecisionsPage {
    /// Newest first.
    pub decisions: Vec<DecisionRow>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Cursor = base64url of "before id". Opaque to clients; decoding is strict.
fn encode_cursor(before_id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("before:{before_id}"))
}

fn decode_cursor(c: &str) -> Option<i64> {
    let raw = URL_SAFE_NO_PAD.decode(c).ok()?;
    let id = std::str::from_utf8(&raw).ok()?.strip_prefix("before:")?;
    id.parse::<i64>().ok().filter(|id| *id > 0)
}

/// Checks `limit` (default [`DEFAULT_LIMIT`], 1..=[`MAX_LIMIT`]) and decodes `cursor` into
/// the id to page below: the paging rules of every id-ordered listing (`/v1/decisions`,
/// `/v1/reviews`).
pub fn page_args(limit: Option<u32>, cursor: Option<&str>) -> Result<(u32, Option<i64>), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1..={MAX_LIMIT} (got {limit}); follow next_cursor for more rows"
        )));
    }
    let before = match cursor {
        None | Some("") => None,
        Some(c) => Some(decode_cursor(c).ok_or_else(|| {
            ApiError::BadRequest("invalid cursor: pass next_cursor of the previous page".into())
        })?),
    };
    Ok((limit, before))
}

/// Cuts `rows` (fetched with `limit + 1`, newest first) to `limit` and returns the cursor of
/// the next page: `None` when no row was left over.
pub fn finish_page<T>(rows: &mut Vec<T>, limit: u32, id: impl Fn(&T) -> i64) -> Option<String> {
    if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| encode_cursor(id(r)))
    } else {
        None
    }
}

#[utoipa::path(
    get,
    path = "/v1/decisions",
    tag = "admin",
    params(DecisionsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = DecisionsPage, description = "Newest first; follow next_cursor for older rows"),
        (status = 400, body = ErrorBody, description = "limit outside 1..=1000, malformed cursor or query"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn list(
    State(st): State<AdminState>,
    q: Result<Query<DecisionsQuery>, QueryRejection>,
) -> Result<Json<DecisionsPage>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (limit, before) = page_args(q.limit, q.cursor.as_deref())?;
    let tenant = q.tenant.as_deref().filter(|t| !t.is_empty());
    // One row more than asked tells whether another page follows.
    let mut rows = decision_log::page(&st.db.pool, tenant, before, i64::from(limit) + 1)
        .await
        .map_err(|e| ApiError::StoreUnavailable(e.to_string()))?;
    let next_cursor = finish_page(&mut rows, limit, |r| r.id);
    Ok(Json(DecisionsPage {
        decisions: rows,
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_strict_decoding() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        for bad in ["", "x", "YmVmb3JlOg", "YmVmb3JlOi0x", "!!!", "MTIz"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }
}
