//! `POST /v1/instances/{id}/password`: a new password for a PostgreSQL instance's application
//! role, made by the platform, set on the primary (the replicas follow through replication)
//! and answered once, like the one the create answered. The old one stops working at once;
//! connections already open stay open. Recorded as a `config_changed` event that names the
//! role, never the password.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use iaas_core::runtime::random_password;
use iaas_core::{EventAction, InfrastructureEvent, InstanceSpec, Principal};
use serde_json::json;

use crate::api::{APP_USER, ApiError, ProvisioningApi, SCOPE_WRITE, caller, owned};

/// Sets and answers a new application password.
pub(crate) async fn rotate(
    State(api): State<Arc<ProvisioningApi>>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = caller(principal, SCOPE_WRITE)?;
    let instance = owned(&api, &principal, &id).await?;
    if !matches!(instance.spec, InstanceSpec::Postgres(_)) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported",
            format!("instance {} is no PostgreSQL instance; it has no password", instance.id),
        ));
    }
    crate::cluster_api::running(&instance, "its password changes while it runs")?;
    let password =
        random_password().map_err(|reason| ApiError::internal(reason).about(instance.id))?;
    api.runtime.change_password(instance.id, APP_USER, &password).await?;
    let event = InfrastructureEvent::new(
        instance.id,
        instance.owner,
        instance.kind(),
        EventAction::ConfigChanged,
        api.clock.now(),
    )
    .with_metadata("changed", "password")
    .with_metadata("user", APP_USER);
    if let Err(error) = api.repo.record_event(&event).await {
        // The password is changed; only the log of it is missing.
        tracing::warn!(instance_id = %instance.id, error = %iaas_core::error_chain(&error), "recording a password change");
    } else {
        (api.on_commit)();
    }
    let body = json!({
        "instance_id": instance.id,
        "credentials": {"user": APP_USER, "password": password},
    });
    Ok((StatusCode::OK, Json(body)).into_response())
}
