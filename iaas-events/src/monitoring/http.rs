//! The monitoring API: search the caller's event log and count it over time.
//!
//! - `GET /v1/events?instance=&type=&action=&from=&to=&q=&cursor=&limit=`: newest first,
//!   `{"entries":[...],"next_cursor":...}`; pass `next_cursor` back as `cursor` for the next page.
//! - `GET /v1/events/stats?from=&to=&bucket=`: counts per action and type in buckets of `bucket`
//!   seconds (default 3600) over `[from, to)` (default the last 24 hours).
//!
//! Times are RFC 3339. The caller is the [`Principal`] the auth layer put in the request and
//! needs the `events:read` scope; only the caller's own events are ever searched. Errors are
//! JSON `{"error":{"code","message"}}`; a bad parameter is 400 and names it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use iaas_core::Principal;
use iaas_core::http::HttpError;
use serde_json::json;

use super::{CountQuery, Cursor, IndexError, LogIndex, LogQuery};

/// Scope needed to read the event log.
pub const SCOPE_EVENTS_READ: &str = "events:read";

/// The router serving `/v1/events` and `/v1/events/stats`.
pub fn monitoring_router(index: Arc<dyn LogIndex>) -> Router {
    Router::new()
        .route("/v1/events", get(search))
        .route("/v1/events/stats", get(stats))
        .with_state(index)
}

/// An error as the API reports it.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    fn bad_param(name: &str, what: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("parameter {name}: expected {what}"),
        )
    }
}

impl From<IndexError> for ApiError {
    fn from(err: IndexError) -> Self {
        let status =
            StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, err.code(), err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "event log request failed");
        }
        HttpError::new(self.status, self.code, self.message).into_response()
    }
}

fn caller(principal: Option<Extension<Principal>>) -> Result<Principal, ApiError> {
    let Some(Extension(principal)) = principal else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid access token is required",
        ));
    };
    if !principal.has_scope(SCOPE_EVENTS_READ) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("the token lacks the scope {SCOPE_EVENTS_READ}"),
        ));
    }
    Ok(principal)
}

/// Parses query parameter `name`, if present, naming it when it does not parse.
fn param<T: std::str::FromStr>(
    params: &HashMap<String, String>,
    name: &str,
    what: &str,
) -> Result<Option<T>, ApiError> {
    match params.get(name).map(String::as_str).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(value) => value.parse().map(Some).map_err(|_| ApiError::bad_param(name, what)),
    }
}

async fn search(
    State(index): State<Arc<dyn LogIndex>>,
    principal: Option<Extension<Principal>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let principal = caller(principal)?;
    let mut query = LogQuery::for_user(principal.user_id);
    query.instance = param(&params, "instance", "an instance id")?;
    query.kind = param(&params, "type", "an instance type (postgres, nginx, docker, k8s)")?;
    query.action = param(&params, "action", "an action name (started, stopped, ...)")?;
    query.from = param::<DateTime<Utc>>(&params, "from", "an RFC 3339 time")?;
    query.to = param::<DateTime<Utc>>(&params, "to", "an RFC 3339 time")?;
    query.q = params.get("q").filter(|q| !q.trim().is_empty()).cloned();
    query.cursor = param::<Cursor>(&params, "cursor", "a cursor returned by an earlier page")?;
    if let Some(limit) = param::<u32>(&params, "limit", "a number from 1 to 500")? {
        query.limit = limit;
    }
    let page = index.search(&query).await?;
    Ok(Json(
        json!({"entries": page.entries, "next_cursor": page.next_cursor.map(|c| c.to_string())}),
    )
    .into_response())
}

async fn stats(
    State(index): State<Arc<dyn LogIndex>>,
    principal: Option<Extension<Principal>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let principal = caller(principal)?;
    let to = param::<DateTime<Utc>>(&params, "to", "an RFC 3339 time")?.unwrap_or_else(Utc::now);
    let from = param::<DateTime<Utc>>(&params, "from", "an RFC 3339 time")?
        .unwrap_or(to - chrono::Duration::hours(24));
    let bucket = param::<u64>(&params, "bucket", "whole seconds")?.unwrap_or(3600);
    let counts = index
        .counts(&CountQuery::new(principal.user_id, from, to, Duration::from_secs(bucket)))
        .await?;
    let buckets: Vec<_> = counts
        .buckets
        .iter()
        .map(|b| json!({"start": b.start, "total": b.total, "by_action": b.by_action, "by_type": b.by_type}))
        .collect();
    Ok(Json(json!({"buckets": buckets})).into_response())
}
