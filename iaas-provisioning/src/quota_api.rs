//! Quotas over HTTP: what the caller may hold, and administrators' overrides for one user.
//!
//! | route | scope | what |
//! |---|---|---|
//! | `GET /v1/quota` | `instances:read` | the caller's limits and what they hold against them |
//! | `GET /v1/admin/quotas/{username}` | `admin` | a user's limits, usage and override |
//! | `PUT /v1/admin/quotas/{username}` | `admin` | replace the user's override (the limits it names; `{}` removes it) |
//! | `DELETE /v1/admin/quotas/{username}` | `admin` | remove the user's override |
//!
//! Every limit is checked when an instance is created, in the transaction that stores it (see
//! `InstanceRepository::create_instance_within`); a refusal is 403 `quota_exceeded` with the
//! limit, what it allows, what is in use and what was asked for.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use iaas_core::{Principal, Quota, QuotaOverride, SCOPE_ADMIN, Usage, UserId};
use serde_json::json;

use crate::api::{ApiError, JsonBody, ProvisioningApi, SCOPE_READ, caller};

/// The quota routes.
pub(crate) fn quota_routes() -> Router<Arc<ProvisioningApi>> {
    Router::new()
        .route("/v1/quota", get(own))
        .route("/v1/admin/quotas/{username}", get(read_user).put(set_user).delete(reset_user))
}

/// The limits `user` is held to: the configured defaults with the user's override.
pub(crate) async fn quota_of(api: &ProvisioningApi, user: UserId) -> Result<Quota, ApiError> {
    let overrides = api.quotas.quota_override(user).await?.unwrap_or_default();
    Ok(api.default_quota.with(&overrides))
}

async fn usage_of(api: &ProvisioningApi, user: UserId) -> Result<Usage, ApiError> {
    Ok(Usage::of(&api.repo.list_instances_by_owner(user).await?))
}

async fn own(
    State(api): State<Arc<ProvisioningApi>>,
    principal: Option<Extension<Principal>>,
) -> Result<Response, ApiError> {
    let principal = caller(principal, SCOPE_READ)?;
    let limits = quota_of(&api, principal.user_id).await?;
    let usage = usage_of(&api, principal.user_id).await?;
    Ok(Json(json!({"limits": limits, "usage": usage})).into_response())
}

/// The user named `username` (in any case: usernames are stored lowercased), for an
/// administrator: the stored name and the id; 404 when there is none.
async fn target(
    api: &ProvisioningApi,
    principal: Option<Extension<Principal>>,
    username: &str,
) -> Result<(String, UserId), ApiError> {
    caller(principal, SCOPE_ADMIN)?;
    let username = username.to_ascii_lowercase();
    match api.users.find_user_by_username(&username).await? {
        Some(user) => Ok((username, user.id)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no user named {:?}", username.chars().take(64).collect::<String>()),
        )),
    }
}

async fn describe(
    api: &ProvisioningApi,
    username: &str,
    user: UserId,
) -> Result<Response, ApiError> {
    let overrides = api.quotas.quota_override(user).await?.unwrap_or_default();
    let usage = usage_of(api, user).await?;
    Ok(Json(json!({
        "username": username,
        "user_id": user,
        "limits": api.default_quota.with(&overrides),
        "override": overrides,
        "usage": usage,
    }))
    .into_response())
}

async fn read_user(
    State(api): State<Arc<ProvisioningApi>>,
    principal: Option<Extension<Principal>>,
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    let (username, user) = target(&api, principal, &username).await?;
    describe(&api, &username, user).await
}

async fn set_user(
    State(api): State<Arc<ProvisioningApi>>,
    principal: Option<Extension<Principal>>,
    Path(username): Path<String>,
    JsonBody(overrides): JsonBody<QuotaOverride>,
) -> Result<Response, ApiError> {
    let (username, user) = target(&api, principal, &username).await?;
    api.quotas.set_quota_override(user, &overrides, api.clock.now()).await?;
    tracing::info!(%user, overrides = ?overrides, "quota override set");
    describe(&api, &username, user).await
}

async fn reset_user(
    State(api): State<Arc<ProvisioningApi>>,
    principal: Option<Extension<Principal>>,
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    let (username, user) = target(&api, principal, &username).await?;
    api.quotas.set_quota_override(user, &QuotaOverride::default(), api.clock.now()).await?;
    tracing::info!(%user, "quota override removed");
    describe(&api, &username, user).await
}
