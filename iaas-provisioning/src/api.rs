//! The provisioning API: `/v1/instances`.
//!
//! | route | scope | what |
//! |---|---|---|
//! | `POST /v1/instances` | `instances:write` | accept an instance (202); containers are created in the background |
//! | `GET /v1/instances` | `instances:read` | the caller's instances |
//! | `GET /v1/instances/{id}` | `instances:read` | one of them |
//! | `DELETE /v1/instances/{id}[?purge=true]` | `instances:write` | `deleting` at once (202); containers (and data with `purge`) removed in the background, then `deleted` |
//! | `POST /v1/instances/{id}/start\|stop\|restart` | `instances:write` | `starting`, `stopping` or `restarting` at once (202); the outcome follows as events (see [`crate::lifecycle`]) |
//! | `GET /v1/instances/{id}/info\|stats\|replication` | `instances:read` | cluster state, through the cache |
//! | `GET /v1/quota` | `instances:read` | the caller's quota limits and usage |
//! | `GET\|PUT\|DELETE /v1/admin/quotas/{username}` | `admin` | a user's limits, usage and override |
//!
//! The caller is the [`Principal`] the auth layer put in the request. Another user's instance is
//! answered exactly like a missing one (404), so ids cannot be probed. Every error is JSON
//! `{"error":{"code","message"}}` with one status per kind, mapped in [`ApiError`].
//!
//! # Cluster views of an instance that does not run
//!
//! `info` describes the containers whatever their state (a stopped node shows `running:
//! false`), so it always answers. `stats` and `replication` are read from the running
//! servers: for an instance that is not `running` (or whose primary container is not running
//! yet or any more) they answer 409 `not_running`: retrying will not help until someone
//! starts it. A server that runs but does not accept connections yet (PostgreSQL right after
//! its container started) is transient: 503 `unavailable` with a `Retry-After` header.
//!
//! # What a 5xx says
//!
//! A 5xx answer carries a generic message naming the failed step, never the internal chain
//! (exec output, socket paths, engine messages, keys): that goes to the log (`tracing`, level
//! error, with the instance id when the request named one), once, where the response is made.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use iaas_core::http::HttpError;
pub(crate) use iaas_core::http::JsonBody;
use iaas_core::runtime::random_password;
use iaas_core::{
    Clock, ClusterSource, ContainerRuntime, Error, EventAction, InfrastructureEvent, Instance,
    InstanceId, InstanceName, InstanceRepository, InstanceSpec, InstanceStatus, PostgresSpec,
    Principal, Quota, QuotaRepository, Resources, RuntimeError, Secrets, StatusChange,
    UserRepository,
};
use serde::Deserialize;
use serde_json::json;
use tokio_util::task::TaskTracker;

/// Scope to read instances.
pub const SCOPE_READ: &str = "instances:read";
/// Scope to create and change instances.
pub const SCOPE_WRITE: &str = "instances:write";
/// Largest accepted request body (a site configuration fits easily).
pub const MAX_BODY_BYTES: usize = iaas_core::http::DEFAULT_BODY_LIMIT;
/// `Retry-After` (seconds) of a 503: the health check of a PostgreSQL container probes every
/// 2 s, so a server still starting is usually ready by then.
pub const RETRY_AFTER_SECS: u32 = 2;

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
    /// Accounts, for administrators naming a user.
    pub users: Arc<dyn UserRepository>,
    /// Per-user quota overrides.
    pub quotas: Arc<dyn QuotaRepository>,
    /// The limits of every user without an override.
    pub default_quota: Quota,
    /// The background work of accepted requests (provisioning, actions, removals): whoever
    /// stops serving closes it and waits, so work the API answered 202 for is not cut off.
    pub background: TaskTracker,
    /// The supervisor of highly available clusters, told of the switchovers the API makes so
    /// it does not report them as failovers; `None` when no supervisor runs.
    pub supervisor: Option<Arc<crate::Supervisor>>,
    /// The durable jobs that carry out what the API accepted (see [`crate::run_jobs`]), and the
    /// key the credentials kept for them are sealed under.
    pub jobs: crate::Jobs,
}

/// The application role of every PostgreSQL instance the API creates.
pub(crate) const APP_USER: &str = "app";

/// The router serving `/v1/instances`.
pub fn provisioning_router(api: ProvisioningApi) -> Router {
    Router::new()
        .route("/v1/instances", post(create).get(list))
        .route("/v1/instances/{id}", get(read).delete(delete).patch(crate::cluster_api::change))
        .route("/v1/instances/{id}/switchover", post(crate::cluster_api::switchover))
        .route("/v1/instances/{id}/password", post(crate::password_api::rotate))
        .route(
            "/v1/instances/{id}/backups",
            post(crate::cluster_api::backup).get(crate::cluster_api::backups),
        )
        .route("/v1/instances/{id}/{part}", post(act).get(cluster_view))
        .merge(crate::quota_api::quota_routes())
        // Shared, not copied: each request takes one reference instead of one per part.
        .with_state(Arc::new(api))
}

/// An error as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    /// What the client reads; generic for a 5xx.
    message: String,
    /// The whole internal chain: logged, never sent.
    detail: Option<String>,
    /// The instance the request was about, for the log.
    instance: Option<InstanceId>,
    /// Extra fields of the error object (`quota` of a `quota_exceeded`).
    fields: Option<Box<(&'static str, serde_json::Value)>>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), detail: None, instance: None, fields: None }
    }

    /// A 5xx whose client message is `message` and whose log line carries `detail`.
    fn server(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self { detail: Some(detail.into()), ..Self::new(status, code, message) }
    }

    pub(crate) fn internal(detail: impl Into<String>) -> Self {
        Self::server(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the details",
            detail,
        )
    }

    /// Names the instance the failed request was about (in the log line of a 5xx).
    pub(crate) fn about(mut self, instance: InstanceId) -> Self {
        self.instance = Some(instance);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code (`not_found`, `unavailable`, ...).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// What the client reads (generic for a 5xx).
    pub(crate) fn client_message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            let detail = self.detail.as_deref().unwrap_or(&self.message);
            match self.instance {
                Some(instance_id) => {
                    tracing::error!(%instance_id, code = self.code, status = self.status.as_u16(), detail, "request failed");
                }
                None => {
                    tracing::error!(
                        code = self.code,
                        status = self.status.as_u16(),
                        detail,
                        "request failed"
                    );
                }
            }
        }
        let mut error = HttpError::new(self.status, self.code, self.message);
        if let Some(fields) = self.fields {
            let (key, value) = *fields;
            error = error.with_field(key, value);
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            error = error.with_retry_after(u64::from(RETRY_AFTER_SECS));
        }
        error.into_response()
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
            Error::PortNotAllowed { .. } => {
                Self::new(S::FORBIDDEN, "port_not_allowed", err.to_string())
            }
            Error::QuotaExceeded(exceeded) => Self {
                fields: Some(Box::new(("quota", json!(exceeded)))),
                ..Self::new(S::FORBIDDEN, "quota_exceeded", err.to_string())
            },
            Error::Unavailable { backend, .. } => Self::server(
                S::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("{backend} is unavailable right now; retry later"),
                iaas_core::error_chain(&err),
            ),
            _ => Self::internal(iaas_core::error_chain(&err)),
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(err: RuntimeError) -> Self {
        use StatusCode as S;
        match &err {
            RuntimeError::ImageNotFound { .. } => {
                Self::new(S::UNPROCESSABLE_ENTITY, "image_not_found", err.to_string())
            }
            RuntimeError::PortTaken { .. } => Self::new(S::CONFLICT, "port_taken", err.to_string()),
            RuntimeError::PortNotAllowed { .. } => {
                Self::new(S::FORBIDDEN, "port_not_allowed", err.to_string())
            }
            RuntimeError::NameConflict { .. } => {
                Self::new(S::CONFLICT, "conflict", err.to_string())
            }
            RuntimeError::InvalidSpec { .. } => {
                Self::new(S::UNPROCESSABLE_ENTITY, "invalid", err.to_string())
            }
            RuntimeError::NotFound { .. } => Self::new(S::NOT_FOUND, "not_found", err.to_string()),
            RuntimeError::Refused { .. } => Self::new(S::CONFLICT, "refused", err.to_string()),
            RuntimeError::NotRunning { .. } => {
                Self::new(S::CONFLICT, "not_running", err.to_string())
            }
            RuntimeError::NoEngine { address, .. } => Self::server(
                S::SERVICE_UNAVAILABLE,
                "engine_unavailable",
                format!(
                    "no Docker engine at {address}: start it, or point DOCKER_HOST at a running one; provisioning resumes by itself once it answers"
                ),
                iaas_core::error_chain(&err),
            ),
            RuntimeError::Unavailable { .. } => Self::server(
                S::SERVICE_UNAVAILABLE,
                "unavailable",
                "the Docker engine is unavailable right now; retry later",
                iaas_core::error_chain(&err),
            ),
            _ => Self::server(
                S::BAD_GATEWAY,
                "engine_refused",
                "the Docker engine refused the request; the server log has the details",
                iaas_core::error_chain(&err),
            ),
        }
    }
}

/// The caller, required to hold `scope`.
pub(crate) fn caller(
    principal: Option<Extension<Principal>>,
    scope: &str,
) -> Result<Principal, ApiError> {
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
pub(crate) async fn owned(
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
    State(api): State<Arc<ProvisioningApi>>,
    principal: Option<Extension<Principal>>,
    JsonBody(body): JsonBody<CreateInstance>,
) -> Result<Response, ApiError> {
    let principal = caller(principal, SCOPE_WRITE)?;
    let name = InstanceName::new(body.name)?;
    let now = api.clock.now();
    let instance =
        Instance::new(principal.user_id, name, body.spec, body.resources.unwrap_or_default(), now)?;
    refuse_foreign_restore(&api, &principal, &instance.spec).await?;
    // The runtime's own policy (host ports, ...) before anything is stored.
    api.runtime.admit(&instance)?;
    api.runtime.ready().await?;
    refuse_claimed_host_ports(&api, &instance.spec).await?;
    let quota = crate::quota_api::quota_of(&api, principal.user_id).await?;

    // Credentials are made here, the application's handed to the caller once; the platform
    // keeps them only sealed (see `keep_credentials`). They are kept before the instance is
    // written, so every instance that exists has its credentials.
    let (secrets, credentials) = match &instance.spec {
        InstanceSpec::Postgres(_) => {
            let password = random_password()
                .map_err(|reason| ApiError::internal(reason).about(instance.id))?;
            let made = || random_password().map_err(|r| ApiError::internal(r).about(instance.id));
            (
                Secrets::new()
                    .with("POSTGRES_USER", APP_USER)
                    .with("POSTGRES_PASSWORD", password.clone())
                    .with("POSTGRES_SUPERUSER_PASSWORD", made()?)
                    .with("POSTGRES_REPLICATION_PASSWORD", made()?),
                Some(json!({"user": APP_USER, "password": password})),
            )
        }
        _ => (Secrets::new(), None),
    };
    if credentials.is_some() {
        keep_credentials(&api, &instance, &secrets).await?;
    }
    let created = InfrastructureEvent::new(
        instance.id,
        instance.owner,
        instance.kind(),
        EventAction::Created,
        now,
    )
    .with_metadata("name", instance.name.as_str());
    // The store writes the provisioning job with the instance.
    if let Err(refused) = api.repo.create_instance_within(&instance, &created, &quota).await {
        // Only a refusal is certain to have written nothing; after a store that did not answer
        // the instance may exist, and its provisioning needs them.
        let certain = !matches!(refused, Error::Unavailable { .. } | Error::Internal { .. });
        if credentials.is_some()
            && certain
            && let Err(error) = api.jobs.queue.forget_secrets(instance.id).await
        {
            tracing::warn!(instance_id = %instance.id, error = %iaas_core::error_chain(&error), "forgetting the sealed secrets of a refused create; they stay, unreadable without the instance");
        }
        return Err(refused.into());
    }
    (api.on_commit)();
    api.jobs.wake();
    let body = json!({"instance": instance, "credentials": credentials});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Keeps the credentials `instance` is made with (`given`, and those the runtime needs for
/// itself) sealed, for the provisioning job, which may run in another process; for a highly
/// available cluster, also the platform's own (all but the application's password), sealed
/// apart for as long as the instance exists, to make the cluster's members again when none is
/// left. What was kept is forgotten when keeping the rest fails: no instance is written then,
/// and nothing else would remove it.
async fn keep_credentials(
    api: &ProvisioningApi,
    instance: &Instance,
    given: &Secrets,
) -> Result<(), ApiError> {
    let sealing =
        |err: crate::sealed::SealError| ApiError::internal(err.to_string()).about(instance.id);
    let secrets = api.runtime.complete_secrets(instance, given)?;
    let sealed = api.jobs.sealer.seal(instance.id, &secrets).map_err(sealing)?;
    let platform = if instance.spec.is_highly_available() {
        let own = secrets.without("POSTGRES_PASSWORD");
        Some(api.jobs.sealer.seal_platform(instance.id, &own).map_err(sealing)?)
    } else {
        None
    };
    let kept = async {
        api.jobs.queue.keep_secrets(instance.id, &sealed).await?;
        match &platform {
            Some(platform) => api.jobs.queue.keep_platform_secrets(instance.id, platform).await,
            None => Ok(()),
        }
    };
    if let Err(err) = kept.await {
        if let Err(error) = api.jobs.queue.forget_secrets(instance.id).await {
            tracing::warn!(instance_id = %instance.id, error = %iaas_core::error_chain(&error), "forgetting the sealed secrets of a create that could not keep them all; they stay, unreadable without the instance");
        }
        return Err(ApiError::from(err).about(instance.id));
    }
    Ok(())
}

/// A restore reads the backups of a highly available cluster of the caller's own: another
/// user's is reported as missing (404, as everywhere), a cluster without backups is 422.
async fn refuse_foreign_restore(
    api: &ProvisioningApi,
    principal: &Principal,
    spec: &InstanceSpec,
) -> Result<(), ApiError> {
    let InstanceSpec::Postgres(PostgresSpec { restore: Some(restore), .. }) = spec else {
        return Ok(());
    };
    let source = owned(api, principal, &restore.from.to_string()).await?;
    if !source.spec.is_highly_available() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!(
                "invalid spec.restore: instance {} is not a highly available cluster, so it has no backups",
                source.id
            ),
        ));
    }
    Ok(())
}

/// 409 `port_taken`, before anything is created, when another instance that is not deleted
/// already publishes one of `spec`'s chosen host ports (a stopped one gets its port back when
/// it starts). A port held by something outside the platform is found by the engine while
/// provisioning: the instance then ends `failed` with the same reason and nothing left behind.
async fn refuse_claimed_host_ports(
    api: &ProvisioningApi,
    spec: &InstanceSpec,
) -> Result<(), ApiError> {
    let InstanceSpec::Docker(docker) = spec else { return Ok(()) };
    let wanted: Vec<u16> = docker.ports.iter().filter_map(|port| port.host).collect();
    if wanted.is_empty() {
        return Ok(());
    }
    for other in api.repo.list_active_instances().await? {
        let InstanceSpec::Docker(theirs) = &other.spec else { continue };
        let claimed = theirs.ports.iter().filter_map(|port| port.host).find(|p| wanted.contains(p));
        if let Some(port) = claimed {
            return Err(RuntimeError::PortTaken { port }.into());
        }
    }
    Ok(())
}

async fn list(
    State(api): State<Arc<ProvisioningApi>>,
    principal: Option<Extension<Principal>>,
) -> Result<Response, ApiError> {
    let principal = caller(principal, SCOPE_READ)?;
    let instances = api.repo.list_instances_by_owner(principal.user_id).await?;
    Ok(Json(InstanceList { instances: &instances }).into_response())
}

/// The body of `GET /v1/instances`, serialized straight from the instances.
#[derive(serde::Serialize)]
struct InstanceList<'a> {
    instances: &'a [Instance],
}

async fn read(
    State(api): State<Arc<ProvisioningApi>>,
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

/// Records `deleting` with its removal job and answers at once; the containers are removed by
/// a job worker and the instance becomes `deleted` when none is left (see [`crate::run_jobs`]).
/// The order closes a race with a provisioning still under way: either its final check sees
/// the delete and removes what it made, or it finished before and the removal finds every
/// container. Deleting an instance that is `deleting` or `deleted` answers the same; its
/// removal job is retried until it succeeds, by any process.
async fn delete(
    State(api): State<Arc<ProvisioningApi>>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<String>,
    Query(options): Query<DeleteOptions>,
) -> Result<Response, ApiError> {
    let principal = caller(principal, SCOPE_WRITE)?;
    let mut instance = owned(&api, &principal, &id).await?;
    if !matches!(instance.status, InstanceStatus::Deleting | InstanceStatus::Deleted) {
        instance = match begin(&api, &instance, InstanceStatus::Deleting, Some(options.purge)).await
        {
            Ok(deleting) => deleting,
            // The watcher saw the containers go and recorded it first.
            Err(ApiError { code: "invalid_transition", .. }) => {
                owned(&api, &principal, &id).await?
            }
            Err(err) => return Err(err),
        };
    }
    api.jobs.wake();
    let status = if instance.status == InstanceStatus::Deleted {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(instance)).into_response())
}

async fn act(
    State(api): State<Arc<ProvisioningApi>>,
    principal: Option<Extension<Principal>>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let principal = caller(principal, SCOPE_WRITE)?;
    let instance = owned(&api, &principal, &id).await?;
    let (target, already) = match action.as_str() {
        "start" => (InstanceStatus::Starting, Some(InstanceStatus::Running)),
        "stop" => (InstanceStatus::Stopping, Some(InstanceStatus::Stopped)),
        "restart" => (InstanceStatus::Restarting, None),
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no action {action:?}; expected start, stop or restart"),
            ));
        }
    };
    // Asking for what already is changes nothing and records nothing.
    let instance = if already == Some(instance.status) {
        instance
    } else {
        // The store writes the action's job with the status.
        let acting = begin(&api, &instance, target, None).await?;
        api.jobs.wake();
        acting
    };
    let body = json!({"instance_id": instance.id, "action": action, "instance": instance});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Attempts of a status change the API asks for before a version conflict is answered.
const MAX_BEGIN_ATTEMPTS: u32 = 3;

/// Records `instance` entering the transitional status `target` with its event (the answer of
/// the request); 409 `invalid_transition` when its status does not allow it (provisioning,
/// deleted, or another action under way).
async fn begin(
    api: &ProvisioningApi,
    instance: &Instance,
    target: InstanceStatus,
    purge: Option<bool>,
) -> Result<Instance, ApiError> {
    let refused = |status: InstanceStatus| {
        let verb = match target {
            InstanceStatus::Starting => "started",
            InstanceStatus::Stopping => "stopped",
            InstanceStatus::Restarting => "restarted",
            _ => "deleted",
        };
        ApiError::new(
            StatusCode::CONFLICT,
            "invalid_transition",
            format!("instance {} is {status}; it cannot be {verb} now", instance.id),
        )
    };
    // The user's request holds whatever the engine did meanwhile: a status recorded between
    // the read and this write (the watcher saw the containers start) is read again and the
    // request decided on it, a few times, rather than answered with a version conflict.
    let mut current = instance.clone();
    let mut attempts = 0;
    loop {
        attempts += 1;
        if !current.status.can_change_to(target) {
            return Err(refused(current.status));
        }
        let now = api.clock.now();
        let mut event = InfrastructureEvent::new(
            current.id,
            current.owner,
            current.kind(),
            EventAction::for_status(target),
            now,
        );
        if let Some(purge) = purge {
            event = event.with_metadata(iaas_core::PURGE_METADATA, purge.to_string());
        }
        let change = StatusChange {
            id: current.id,
            expected_version: Some(current.version),
            to: target,
            event,
            at: now,
        };
        match api.repo.update_status(change).await {
            Ok(acting) => {
                (api.on_commit)();
                return Ok(acting);
            }
            Err(Error::InvalidTransition(transition)) => return Err(refused(transition.from)),
            Err(Error::Conflict { .. }) if attempts < MAX_BEGIN_ATTEMPTS => {
                match api.repo.get_instance(current.id).await {
                    Ok(Some(read)) => current = read,
                    Ok(None) => {
                        return Err(ApiError::from(Error::not_found("instance", current.id)));
                    }
                    Err(err) => return Err(ApiError::from(err).about(current.id)),
                }
            }
            Err(err) => return Err(ApiError::from(err).about(current.id)),
        }
    }
}

/// `GET /v1/instances/{id}/info|stats|replication`: the cluster state, through the cache.
async fn cluster_view(
    State(api): State<Arc<ProvisioningApi>>,
    principal: Option<Extension<Principal>>,
    Path((id, view)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let principal = caller(principal, SCOPE_READ)?;
    let instance = owned(&api, &principal, &id).await?;
    let live = match view.as_str() {
        "info" => false,
        "stats" | "replication" => true,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no view {view:?}; expected info, stats or replication"),
            ));
        }
    };
    if live && instance.status != InstanceStatus::Running {
        return Err(not_running(instance.id, &view, &instance.status.to_string()));
    }
    let read = async {
        Ok::<_, Error>(match view.as_str() {
            "stats" => serde_json::to_value(api.clusters.cluster_stats(instance.id).await?),
            "replication" => {
                serde_json::to_value(api.clusters.replication_status(instance.id).await?)
            }
            _ => serde_json::to_value(api.clusters.cluster_info(instance.id).await?),
        })
    };
    let body = match read.await {
        Ok(body) => body,
        // What a cluster source reports for a view of servers that do not run (the recorded
        // status said running, the engine has seen them stop since).
        Err(err) if live && reports_a_conflict(&err) => {
            return Err(not_running(instance.id, &view, "not running"));
        }
        Err(err) => return Err(ApiError::from(err).about(instance.id)),
    };
    let body = body.map_err(|err| {
        ApiError::internal(format!("serializing the {view} of instance {}: {err}", instance.id))
            .about(instance.id)
    })?;
    Ok(Json(body).into_response())
}

/// Whether `err` is, or wraps, a [`Error::Conflict`]. A cache in front of the engine may carry
/// the engine's error inside its own (the cluster cache keeps only some kinds and wraps the
/// rest as `Internal`, holding the original behind an `Arc`), so the whole chain is searched.
fn reports_a_conflict(err: &Error) -> bool {
    type Shared = Arc<dyn std::error::Error + Send + Sync>;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = current {
        let core = cause
            .downcast_ref::<Error>()
            .or_else(|| cause.downcast_ref::<Shared>().and_then(|shared| shared.downcast_ref()));
        if matches!(core, Some(Error::Conflict { .. })) {
            return true;
        }
        current = cause.source();
    }
    false
}

/// 409 `not_running`: the view needs the instance's servers running.
fn not_running(instance: InstanceId, view: &str, status: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "not_running",
        format!("instance {instance} is {status}; its {view} can only be read while it runs"),
    )
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    async fn answer(err: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = err.into_response();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, retry_after, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_5xx_answers_a_generic_message_and_keeps_the_chain_for_the_log() {
        let secret = "psql: error: connection to server on socket \"/var/run/postgresql/.s.PGSQL.5432\" failed";
        let internal =
            Error::Internal { operation: "reading replication".into(), source: secret.into() };
        let (status, retry_after, body) = answer(ApiError::from(internal)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(retry_after, None);
        assert_eq!(body["error"]["code"], "internal");
        assert!(!body.to_string().contains("socket"), "{body}");

        let unavailable = Error::unavailable("postgres", "reading replication", secret);
        let err = ApiError::from(unavailable);
        assert!(err.detail.as_deref().is_some_and(|d| d.contains("PGSQL")), "the log has it all");
        let (status, retry_after, body) = answer(err).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after, Some(RETRY_AFTER_SECS.to_string()));
        assert_eq!(body["error"]["code"], "unavailable");
        assert!(!body.to_string().contains("socket"), "{body}");

        let refused = RuntimeError::Engine {
            operation: "exec in container iaas-x".into(),
            message: "OCI runtime exec failed: /var/lib/docker/x".into(),
        };
        let (status, _, body) = answer(ApiError::from(refused)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_GATEWAY, Some("engine_refused"))
        );
        assert!(!body.to_string().contains("/var/lib"), "{body}");
    }

    #[test]
    fn a_conflict_is_found_behind_a_cache_that_wrapped_it() {
        #[derive(Debug, thiserror::Error)]
        #[error("loading cluster:stats:i-1")]
        struct Load {
            #[source]
            source: Arc<dyn std::error::Error + Send + Sync>,
        }
        let conflict = || Error::conflict("instance", "i-1", "its primary is not running");
        assert!(reports_a_conflict(&conflict()));
        let wrapped = Error::Internal {
            operation: "reading cluster state".into(),
            source: Box::new(Load { source: Arc::new(conflict()) }),
        };
        assert!(reports_a_conflict(&wrapped));
        let other = Error::Internal {
            operation: "reading cluster state".into(),
            source: Box::new(Load { source: Arc::new(Error::not_found("instance", "i-1")) }),
        };
        assert!(!reports_a_conflict(&other));
    }

    #[tokio::test]
    async fn a_4xx_keeps_its_precise_message() {
        let (status, _, body) = answer(ApiError::from(Error::not_found("instance", "i-1"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["error"]["message"].as_str().unwrap().contains("i-1"), "{body}");
    }
}
