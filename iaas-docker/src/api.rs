//! The provisioning API: `/v1/instances`.
//!
//! | route | scope | what |
//! |---|---|---|
//! | `POST /v1/instances` | `instances:write` | accept an instance (202); containers are created in the background |
//! | `GET /v1/instances` | `instances:read` | the caller's instances |
//! | `GET /v1/instances/{id}` | `instances:read` | one of them |
//! | `DELETE /v1/instances/{id}[?purge=true]` | `instances:write` | remove containers (and data with `purge`) |
//! | `POST /v1/instances/{id}/start\|stop\|restart` | `instances:write` | act on the containers (202); the status follows from the engine's events |
//! | `GET /v1/instances/{id}/info\|stats\|replication` | `instances:read` | cluster state, through the cache |
//!
//! The caller is the [`Principal`] the auth layer put in the request. Another user's instance is
//! answered exactly like a missing one (404), so ids cannot be probed. Every error is JSON
//! `{"error":{"code","message"}}` with one status per kind, mapped in [`ApiError`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use iaas_core::{
    Clock, ClusterSource, Error, EventAction, InfrastructureEvent, Instance, InstanceId,
    InstanceName, InstanceRepository, InstanceSpec, InstanceStatus, Principal, Resources,
    StatusChange,
};
use serde::Deserialize;
use serde_json::json;

use crate::error::DockerError;
use crate::runtime::{ContainerRuntime, Secrets};

/// Scope to read instances.
pub const SCOPE_READ: &str = "instances:read";
/// Scope to create and change instances.
pub const SCOPE_WRITE: &str = "instances:write";
/// Largest accepted request body (a site configuration fits easily).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the provisioning API works with.
#[derive(Clone)]
pub struct ProvisioningApi {
    /// Instances and their outbox.
    pub repo: Arc<dyn InstanceRepository>,
    /// The container runtime.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// Cluster reads (normally the cache in front of the engine).
    pub clusters: Arc<dyn ClusterSource>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Called after every commit that appended events (wakes the outbox relay).
    pub on_commit: Arc<dyn Fn() + Send + Sync>,
}

/// The router serving `/v1/instances`.
pub fn provisioning_router(api: ProvisioningApi) -> Router {
    Router::new()
        .route("/v1/instances", post(create).get(list))
        .route("/v1/instances/{id}", get(read).delete(delete))
        .route("/v1/instances/{id}/{part}", post(act).get(cluster_view))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

/// An error as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        (self.status, Json(json!({"error": {"code": self.code, "message": self.message}})))
            .into_response()
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        use StatusCode as S;
        match &err {
            Error::NotFound { .. } => Self::new(S::NOT_FOUND, "not_found", err.to_string()),
            Error::Conflict { .. } => Self::new(S::CONFLICT, "conflict", err.to_string()),
            Error::Invalid { .. } => Self::new(S::UNPROCESSABLE_ENTITY, "invalid", err.to_string()),
            Error::InvalidTransition(_) => {
                Self::new(S::CONFLICT, "invalid_transition", err.to_string())
            }
            Error::Unsupported { .. } => {
                Self::new(S::UNPROCESSABLE_ENTITY, "unsupported", err.to_string())
            }
            Error::Forbidden { .. } => Self::new(S::FORBIDDEN, "forbidden", err.to_string()),
            Error::Unavailable { .. } => {
                Self::new(S::SERVICE_UNAVAILABLE, "unavailable", err.to_string())
            }
            _ => Self::new(S::INTERNAL_SERVER_ERROR, "internal", error_chain(&err)),
        }
    }
}

impl From<DockerError> for ApiError {
    fn from(err: DockerError) -> Self {
        use StatusCode as S;
        match &err {
            DockerError::ImageNotFound { .. } => {
                Self::new(S::UNPROCESSABLE_ENTITY, "image_not_found", err.to_string())
            }
            DockerError::PortTaken { .. } => Self::new(S::CONFLICT, "port_taken", err.to_string()),
            DockerError::NameConflict { .. } => Self::new(S::CONFLICT, "conflict", err.to_string()),
            DockerError::InvalidSpec { .. } => {
                Self::new(S::UNPROCESSABLE_ENTITY, "invalid", err.to_string())
            }
            DockerError::NotFound { .. } => Self::new(S::NOT_FOUND, "not_found", err.to_string()),
            DockerError::Unavailable { .. } => {
                Self::new(S::SERVICE_UNAVAILABLE, "unavailable", err.to_string())
            }
            _ => Self::new(S::BAD_GATEWAY, "engine_refused", err.to_string()),
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The caller, required to hold `scope`.
fn caller(principal: Option<Extension<Principal>>, scope: &str) -> Result<Principal, ApiError> {
    let Some(Extension(principal)) = principal else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid access token is required",
        ));
    };
    if !principal.has_scope(scope) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("the token lacks the scope {scope}"),
        ));
    }
    Ok(principal)
}

/// The caller's instance `id`; someone else's is reported as missing.
async fn owned(
    api: &ProvisioningApi,
    principal: &Principal,
    id: &str,
) -> Result<Instance, ApiError> {
    let not_found =
        || ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("instance {id} not found"));
    let id: InstanceId = id.parse().map_err(|_| not_found())?;
    match api.repo.get_instance(id).await? {
        Some(instance) if instance.is_owned_by(principal.user_id) => Ok(instance),
        _ => Err(not_found()),
    }
}

/// JSON request bodies: `application/json` only, at most [`MAX_BODY_BYTES`], errors as JSON.
struct JsonBody<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let content_type =
            request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("expected application/json, got {content_type:?}"),
            ));
        }
        let bytes =
            Bytes::from_request(request, state).await.map_err(|rejection: BytesRejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!("bodies are limited to {MAX_BODY_BYTES} bytes"),
                    )
                } else {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", rejection.body_text())
                }
            })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|err| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("invalid JSON body: {err}"),
            )
        })
    }
}

/// `POST /v1/instances` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateInstance {
    name: String,
    spec: InstanceSpec,
    #[serde(default)]
    resources: Option<Resources>,
}

async fn create(
    State(api): State<ProvisioningApi>,
    principal: Option<Extension<Principal>>,
    JsonBody(body): JsonBody<CreateInstance>,
) -> Result<Response, ApiError> {
    let principal = caller(principal, SCOPE_WRITE)?;
    let name = InstanceName::new(body.name)?;
    let now = api.clock.now();
    let instance =
        Instance::new(principal.user_id, name, body.spec, body.resources.unwrap_or_default(), now)?;
    let created = InfrastructureEvent::new(
        instance.id,
        instance.owner,
        instance.kind(),
        EventAction::Created,
        now,
    )
    .with_metadata("name", instance.name.as_str());
    api.repo.create_instance(&instance, &created).await?;
    (api.on_commit)();

    // Credentials are made here, handed to the engine and to the caller once, and kept nowhere.
    let (secrets, credentials) = match &instance.spec {
        InstanceSpec::Postgres(_) => {
            let password = random_password().map_err(|reason| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", reason)
            })?;
            (
                Secrets::new()
                    .with("POSTGRES_USER", "app")
                    .with("POSTGRES_PASSWORD", password.clone()),
                Some(json!({"user": "app", "password": password})),
            )
        }
        _ => (Secrets::new(), None),
    };
    tokio::spawn(provision_in_background(api.clone(), instance.clone(), secrets));
    let body = json!({"instance": instance, "credentials": credentials});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Creates the containers; a failure marks the instance failed with the reason in its event.
/// The running status itself arrives through the Docker watcher.
async fn provision_in_background(api: ProvisioningApi, instance: Instance, secrets: Secrets) {
    let Err(err) = api.runtime.provision(&instance, &secrets).await else {
        // A delete that ran while the containers were being created found nothing to remove:
        // remove them now, so a deleted instance never leaves containers behind.
        if let Ok(Some(current)) = api.repo.get_instance(instance.id).await
            && current.status == InstanceStatus::Deleted
            && let Err(error) = api.runtime.remove(instance.id, true).await
        {
            tracing::error!(instance_id = %instance.id, %error, "removing the containers of an instance deleted while provisioning");
        }
        return;
    };
    tracing::warn!(instance_id = %instance.id, error = %err, "provisioning failed");
    let now = api.clock.now();
    let event = InfrastructureEvent::new(
        instance.id,
        instance.owner,
        instance.kind(),
        EventAction::Failed,
        now,
    )
    .with_metadata("error", err.to_string());
    let change = StatusChange {
        id: instance.id,
        expected_version: None,
        to: InstanceStatus::Failed,
        event,
        at: now,
    };
    match api.repo.update_status(change).await {
        Ok(_) => (api.on_commit)(),
        // Deleted meanwhile: nothing to report.
        Err(Error::InvalidTransition(_)) => {}
        Err(error) => {
            tracing::error!(instance_id = %instance.id, %error, "recording a failed provisioning")
        }
    }
}

fn random_password() -> Result<String, String> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes)
        .map_err(|err| format!("no randomness for a password: {err}"))?;
    Ok(bytes.iter().map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])).collect())
}

async fn list(
    State(api): State<ProvisioningApi>,
    principal: Option<Extension<Principal>>,
) -> Result<Response, ApiError> {
    let principal = caller(principal, SCOPE_READ)?;
    let instances = api.repo.list_instances_by_owner(principal.user_id).await?;
    Ok(Json(json!({"instances": instances})).into_response())
}

async fn read(
    State(api): State<ProvisioningApi>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = caller(principal, SCOPE_READ)?;
    Ok(Json(owned(&api, &principal, &id).await?).into_response())
}

#[derive(Debug, Deserialize)]
struct DeleteOptions {
    #[serde(default)]
    purge: bool,
}

async fn delete(
    State(api): State<ProvisioningApi>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<String>,
    Query(options): Query<DeleteOptions>,
) -> Result<Response, ApiError> {
    let principal = caller(principal, SCOPE_WRITE)?;
    let instance = owned(&api, &principal, &id).await?;
    api.runtime.remove(instance.id, options.purge).await?;
    let now = api.clock.now();
    let event = InfrastructureEvent::new(
        instance.id,
        instance.owner,
        instance.kind(),
        EventAction::Deleted,
        now,
    )
    .with_metadata("purge", options.purge.to_string());
    let change = StatusChange {
        id: instance.id,
        expected_version: None,
        to: InstanceStatus::Deleted,
        event,
        at: now,
    };
    let deleted = api.repo.update_status(change).await?;
    (api.on_commit)();
    Ok(Json(deleted).into_response())
}

async fn act(
    State(api): State<ProvisioningApi>,
    principal: Option<Extension<Principal>>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let principal = caller(principal, SCOPE_WRITE)?;
    let instance = owned(&api, &principal, &id).await?;
    if matches!(instance.status, InstanceStatus::Deleted | InstanceStatus::Provisioning) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_transition",
            format!("instance {} is {}; it cannot be {action}ed now", instance.id, instance.status),
        ));
    }
    match action.as_str() {
        "start" => api.runtime.start(instance.id).await?,
        "stop" => api.runtime.stop(instance.id).await?,
        "restart" => api.runtime.restart(instance.id).await?,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no action {action:?}; expected start, stop or restart"),
            ));
        }
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"instance_id": instance.id, "action": action})))
        .into_response())
}

/// `GET /v1/instances/{id}/info|stats|replication`: the cluster state, through the cache.
async fn cluster_view(
    State(api): State<ProvisioningApi>,
    principal: Option<Extension<Principal>>,
    Path((id, view)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let principal = caller(principal, SCOPE_READ)?;
    let instance = owned(&api, &principal, &id).await?;
    let body = match view.as_str() {
        "info" => serde_json::to_value(api.clusters.cluster_info(instance.id).await?),
        "stats" => serde_json::to_value(api.clusters.cluster_stats(instance.id).await?),
        "replication" => serde_json::to_value(api.clusters.replication_status(instance.id).await?),
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no view {view:?}; expected info, stats or replication"),
            ));
        }
    };
    let body = body.map_err(|err| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", err.to_string())
    })?;
    Ok(Json(body).into_response())
}
