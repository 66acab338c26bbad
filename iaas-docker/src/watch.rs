//! [`RuntimeWatch`] on a Docker engine: what provisioning's watcher and reconciler read.
//!
//! The engine's event stream, filtered on the `iaas.managed` label, is read into
//! [`RuntimeEvent`]s: each engine event keeps its action (recorded with the status change it
//! causes) and the status it implies ([`status_for_event`]); the container's labels, which
//! the engine copies into every event's attributes, name its instance and role. The replay
//! position is the engine's `since`, in seconds.

use std::collections::HashMap;

use async_trait::async_trait;
use bollard::models::ContainerSummary;
use bollard::query_parameters::{
    EventsOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use iaas_core::InstanceStatus;
use iaas_core::runtime::{
    ENDPOINT, LABEL_INSTANCE, LABEL_MANAGED, LABEL_ROLE, ManagedContainer, PrimaryState,
    RuntimeError, RuntimeEvent, RuntimeEventStream, RuntimeWatch, role_decides_status,
    status_without_primary,
};

use crate::connection::EngineConnection;
use crate::engine::{DockerRuntime, is_not_found, is_removal_in_progress};
use crate::error::from_bollard;
use crate::mapping::{status_for_event, status_for_state};

/// The Docker engine as the watcher sees it: its events, its managed containers, the state of
/// an instance's primary.
#[derive(Debug, Clone)]
pub struct DockerWatch {
    engine: EngineConnection,
}

impl DockerWatch {
    /// The events and containers of `engine` (a bollard client or an [`EngineConnection`] that
    /// connects on first use: until the engine appears, each call fails with
    /// [`RuntimeError::NoEngine`] and the watcher retries with its backoff).
    pub fn new(engine: impl Into<EngineConnection>) -> Self {
        Self { engine: engine.into() }
    }
}

#[async_trait]
impl RuntimeWatch for DockerWatch {
    async fn events(&self, since: i64) -> Result<RuntimeEventStream, RuntimeError> {
        let label = format!("{LABEL_MANAGED}=true");
        let filters = HashMap::from([("type", vec!["container"]), ("label", vec![label.as_str()])]);
        let options =
            EventsOptionsBuilder::new().since(&since.to_string()).filters(&filters).build();
        let docker = self.engine.client()?;
        let events = docker.events(Some(options)).then(move |next| {
            let docker = docker.clone();
            async move {
                let message = next.map_err(|err| from_bollard("following events", err))?;
                let action = message.action.unwrap_or_default();
                let actor = message.actor.unwrap_or_default();
                let attributes = actor.attributes.unwrap_or_default();
                let mut status = status_for_event(&action, &attributes);
                // A cluster's endpoint removed: what is left of the cluster decides.
                if status == Some(InstanceStatus::Deleted)
                    && attributes.get(LABEL_ROLE).is_some_and(|role| role == ENDPOINT)
                    && let Some(instance) = attributes.get(LABEL_INSTANCE)
                {
                    status = Some(left_of(&docker, instance).await?);
                }
                Ok(RuntimeEvent::from_attributes(
                    action,
                    status,
                    actor.id.unwrap_or_default(),
                    &attributes,
                    message.time,
                    message.time_nano.map(chrono::DateTime::from_timestamp_nanos),
                ))
            }
        });
        Ok(Box::pin(events))
    }

    async fn list_managed(&self) -> Result<Vec<ManagedContainer>, RuntimeError> {
        crate::engine::list_managed(&self.engine).await
    }

    async fn observe(&self, containers: &[ManagedContainer]) -> Result<PrimaryState, RuntimeError> {
        let primary = containers.iter().find(|c| role_decides_status(&c.role));
        let without =
            status_without_primary(containers.iter().map(|c| (c.role.as_str(), c.running)));
        inspect_primary(&self.engine, primary.map(|c| c.id.clone()), without).await
    }

    async fn remove_container(&self, id: &str) -> Result<bool, RuntimeError> {
        let removed = self
            .engine
            .client()?
            .remove_container(id, Some(RemoveContainerOptionsBuilder::new().force(true).build()))
            .await;
        match removed {
            Ok(()) => Ok(true),
            Err(err) if is_not_found(&err) || is_removal_in_progress(&err) => Ok(false),
            Err(err) => Err(from_bollard(format!("removing container {id}"), err)),
        }
    }

    async fn unused_networks(
        &self,
        busy: &std::collections::HashSet<iaas_core::UserId>,
    ) -> Result<Vec<(iaas_core::UserId, String)>, RuntimeError> {
        crate::network::unused(&self.engine, busy).await
    }

    async fn remove_network(&self, name: &str) -> Result<bool, RuntimeError> {
        crate::network::remove(&self.engine, name).await
    }
}

impl From<&DockerRuntime> for DockerWatch {
    /// The watcher's view of the engine `runtime` runs on.
    fn from(runtime: &DockerRuntime) -> Self {
        Self::new(runtime.engine().clone())
    }
}

/// The role label of `container` (empty when it has none).
fn role_of(container: &ContainerSummary) -> &str {
    container.labels.as_ref().and_then(|l| l.get(LABEL_ROLE)).map_or("", String::as_str)
}

/// What the containers of `containers` (one instance's) that decide nothing add up to, once
/// none that decides is left (see [`status_without_primary`]).
pub(crate) fn left_status(containers: &[ContainerSummary]) -> InstanceStatus {
    status_without_primary(
        containers
            .iter()
            .map(|c| (role_of(c), c.state.as_ref().is_some_and(|s| s.to_string() == "running"))),
    )
}

/// What is left of instance `instance` (its id, as its containers' label has it), listed now.
async fn left_of(docker: &bollard::Docker, instance: &str) -> Result<InstanceStatus, RuntimeError> {
    let label = format!("{LABEL_INSTANCE}={instance}");
    let filters = HashMap::from([("label", vec![label.as_str()])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new().all(true).filters(&filters).build(),
        ))
        .await
        .map_err(|err| {
            from_bollard(format!("listing the containers of instance {instance}"), err)
        })?;
    Ok(left_status(&containers))
}

/// The state `containers` (one instance's) add up to: its primary's, inspected; when no
/// primary is left (the rule of [`role_decides_status`]), what the others say (deleted unless
/// a highly available cluster's data is left, see [`status_without_primary`]).
pub(crate) async fn observe(
    engine: &EngineConnection,
    containers: &[ContainerSummary],
) -> Result<PrimaryState, RuntimeError> {
    let primary = containers.iter().find(|c| role_decides_status(role_of(c)));
    inspect_primary(engine, primary.and_then(|c| c.id.clone()), left_status(containers)).await
}

/// The state of the primary container `id`, inspected now; `without` (what the other
/// containers say) when there is none, or when it was removed since it was listed.
async fn inspect_primary(
    engine: &EngineConnection,
    id: Option<String>,
    without: InstanceStatus,
) -> Result<PrimaryState, RuntimeError> {
    let mut state = PrimaryState::gone();
    state.observed_at = Some(chrono::Utc::now());
    state.status = without;
    let Some(id) = id else {
        return Ok(state);
    };
    let inspected = match engine.client()?.inspect_container(&id, None).await {
        Ok(inspected) => inspected,
        // Removed between the listing and the inspection.
        Err(err) if is_not_found(&err) => return Ok(state),
        Err(err) => return Err(from_bollard(format!("inspecting container {id}"), err)),
    };
    let engine_state = inspected.state.unwrap_or_default();
    state.container_id = id;
    state.name = inspected.name.unwrap_or_default().trim_start_matches('/').to_owned();
    state.status = status_for_state(&engine_state);
    state.exit_code = engine_state.exit_code;
    state.started_at = engine_state.started_at.filter(|at| !at.is_empty());
    Ok(state)
}
