//! Parked outbox entries over HTTP, for administrators: events the bus refused for good,
//! taken out of line so the ones behind them were published (see `iaas_core::Outbox`).
//!
//! | route | scope | what |
//! |---|---|---|
//! | `GET /v1/admin/outbox/parked` | `admin` | the parked entries, oldest first (at most 100) |
//! | `POST /v1/admin/outbox/parked/{seq}/retry` | `admin` | put the entry back in line; 404 when it is not parked |
//! | `DELETE /v1/admin/outbox/parked/{seq}` | `admin` | drop the entry for good; 404 when it is not parked |
//!
//! A retried event reaches the bus after the events that followed it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use iaas_core::{Outbox, ParkedEntry, Principal, SCOPE_ADMIN};
use serde_json::json;

use crate::api::{ApiError, caller};

/// Most entries one listing returns.
const LIST_LIMIT: u32 = 100;

/// The routes; put the principal layer in front of them.
pub fn outbox_admin_router(outbox: Arc<dyn Outbox>) -> Router {
    Router::new()
        .route("/v1/admin/outbox/parked", get(list))
        .route("/v1/admin/outbox/parked/{seq}/retry", post(retry))
        .route("/v1/admin/outbox/parked/{seq}", delete(drop_entry))
        .with_state(outbox)
}

fn entry_json(parked: &ParkedEntry) -> serde_json::Value {
    json!({
        "seq": parked.entry.seq,
        "name": parked.entry.event.name(),
        "event": parked.entry.event,
        "created_at": parked.entry.created_at,
        "attempts": parked.attempts,
        "error": parked.error,
        "parked_at": parked.parked_at,
    })
}

async fn list(
    State(outbox): State<Arc<dyn Outbox>>,
    principal: Option<Extension<Principal>>,
) -> Result<Response, ApiError> {
    caller(principal, SCOPE_ADMIN)?;
    let parked = outbox.parked(LIST_LIMIT).await?;
    let entries: Vec<_> = parked.iter().map(entry_json).collect();
    Ok(Json(json!({"parked": entries})).into_response())
}

fn not_parked(seq: &str) -> ApiError {
    let shown: String = seq.chars().take(32).collect();
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no parked outbox entry {shown:?}"))
}

/// Whether `seq` names a parked entry and `change` did it; 404 otherwise.
async fn change_parked<F, Fut>(
    principal: Option<Extension<Principal>>,
    seq: &str,
    change: F,
) -> Result<(u64, Principal), ApiError>
where
    F: FnOnce(u64) -> Fut,
    Fut: std::future::Future<Output = iaas_core::Result<bool>>,
{
    let admin = caller(principal, SCOPE_ADMIN)?;
    let number: u64 = seq.parse().map_err(|_| not_parked(seq))?;
    if !change(number).await? {
        return Err(not_parked(seq));
    }
    Ok((number, admin))
}

async fn retry(
    State(outbox): State<Arc<dyn Outbox>>,
    principal: Option<Extension<Principal>>,
    Path(seq): Path<String>,
) -> Result<Response, ApiError> {
    let (seq, admin) = change_parked(principal, &seq, |n| outbox.retry_parked(n)).await?;
    tracing::info!(seq, by = %admin.user_id, "parked outbox entry put back in line");
    Ok((StatusCode::ACCEPTED, Json(json!({"seq": seq, "retried": true}))).into_response())
}

async fn drop_entry(
    State(outbox): State<Arc<dyn Outbox>>,
    principal: Option<Extension<Principal>>,
    Path(seq): Path<String>,
) -> Result<Response, ApiError> {
    let (seq, admin) = change_parked(principal, &seq, |n| outbox.drop_parked(n)).await?;
    tracing::warn!(seq, by = %admin.user_id, "parked outbox entry dropped for good");
    Ok(StatusCode::NO_CONTENT.into_response())
}
