//! An engine in the tool's process that answers the control plane the way Docker does, with
//! nothing behind it: the control plane's own cost at a scale this machine cannot run
//! containers for.
//!
//! It keeps one container per instance in a map, answers every call at once, and sends the
//! engine events the bench pushes ([`SimulatedEngine::push`]) to whoever follows it (the
//! watcher).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use futures_util::StreamExt;
use iaas_core::runtime::{
    ContainerRef, ContainerRuntime, ManagedContainer, PrimaryState, RuntimeError, RuntimeEvent,
    RuntimeEventStream, RuntimeWatch, Secrets,
};
use iaas_core::{
    ClusterInfo, ClusterSource, ClusterStats, Endpoint, Instance, InstanceId, InstanceStatus,
    NodeInfo, NodeRole, ReplicationStatus, UserId,
};
use tokio::sync::broadcast;

/// Engine events kept for a follower that is behind.
const EVENT_BUFFER: usize = 65_536;

/// One simulated container.
#[derive(Debug, Clone)]
struct Container {
    id: String,
    name: String,
    owner: UserId,
    running: bool,
}

/// The in-process engine.
#[derive(Debug)]
pub(crate) struct SimulatedEngine {
    containers: Mutex<HashMap<InstanceId, Container>>,
    events: broadcast::Sender<RuntimeEvent>,
}

impl SimulatedEngine {
    pub(crate) fn new() -> Self {
        Self { containers: Mutex::default(), events: broadcast::channel(EVENT_BUFFER).0 }
    }

    fn containers(&self) -> std::sync::MutexGuard<'_, HashMap<InstanceId, Container>> {
        self.containers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops `instance`'s container behind the control plane's back and tells followers, as
    /// `docker stop` would (`die` with the exit code of SIGTERM).
    pub(crate) fn stop_behind_the_back(&self, instance: InstanceId) {
        let container = {
            let mut containers = self.containers();
            let Some(container) = containers.get_mut(&instance) else { return };
            container.running = false;
            container.clone()
        };
        let event = RuntimeEvent {
            action: "die".to_owned(),
            status: Some(InstanceStatus::Stopped),
            container_id: container.id,
            name: container.name,
            instance: Some(instance),
            role: iaas_core::runtime::PRIMARY.to_owned(),
            exit_code: Some(143),
            cursor: None,
            at: Some(chrono::Utc::now()),
        };
        // Nobody following yet is not an error: the bench subscribes first.
        let _ = self.events.send(event);
    }

    fn set_running(&self, instance: InstanceId, running: bool) -> Result<(), RuntimeError> {
        match self.containers().get_mut(&instance) {
            Some(container) => {
                container.running = running;
                Ok(())
            }
            None => Err(RuntimeError::NotFound { instance: instance.to_string() }),
        }
    }

    fn state_of(container: Option<&Container>) -> PrimaryState {
        let mut state = PrimaryState::gone();
        if let Some(container) = container {
            state.container_id.clone_from(&container.id);
            state.name.clone_from(&container.name);
            state.status =
                if container.running { InstanceStatus::Running } else { InstanceStatus::Stopped };
            state.exit_code = (!container.running).then_some(143);
            state.observed_at = Some(chrono::Utc::now());
        }
        state
    }

    fn managed(instance: InstanceId, container: &Container) -> ManagedContainer {
        ManagedContainer {
            id: container.id.clone(),
            name: container.name.clone(),
            instance,
            owner: Some(container.owner),
            role: iaas_core::runtime::PRIMARY.to_owned(),
            running: container.running,
        }
    }
}

#[async_trait]
impl ContainerRuntime for SimulatedEngine {
    async fn provision(
        &self,
        instance: &Instance,
        _secrets: &Secrets,
    ) -> Result<Vec<ContainerRef>, RuntimeError> {
        let container = Container {
            id: format!("sim-{}", instance.id),
            name: format!("iaas-{}-{}", instance.id, iaas_core::runtime::PRIMARY.to_owned()),
            owner: instance.owner,
            running: true,
        };
        let reference = ContainerRef {
            id: container.id.clone(),
            name: container.name.clone(),
            role: iaas_core::runtime::PRIMARY.to_owned(),
        };
        self.containers().insert(instance.id, container);
        Ok(vec![reference])
    }

    async fn start(&self, instance: InstanceId) -> Result<(), RuntimeError> {
        self.set_running(instance, true)
    }

    async fn stop(&self, instance: InstanceId) -> Result<(), RuntimeError> {
        self.set_running(instance, false)
    }

    async fn restart(&self, instance: InstanceId) -> Result<(), RuntimeError> {
        self.set_running(instance, true)
    }

    async fn remove(&self, instance: InstanceId, _purge: bool) -> Result<(), RuntimeError> {
        self.containers().remove(&instance);
        Ok(())
    }

    async fn list_managed(&self) -> Result<Vec<ManagedContainer>, RuntimeError> {
        Ok(self
            .containers()
            .iter()
            .map(|(instance, container)| Self::managed(*instance, container))
            .collect())
    }

    async fn primary_state(&self, instance: InstanceId) -> Result<PrimaryState, RuntimeError> {
        Ok(Self::state_of(self.containers().get(&instance)))
    }
}

#[async_trait]
impl RuntimeWatch for SimulatedEngine {
    async fn events(&self, _since: i64) -> Result<RuntimeEventStream, RuntimeError> {
        let stream = tokio_stream_of(self.events.subscribe());
        Ok(Box::pin(stream))
    }

    async fn list_managed(&self) -> Result<Vec<ManagedContainer>, RuntimeError> {
        ContainerRuntime::list_managed(self).await
    }

    async fn observe(&self, containers: &[ManagedContainer]) -> Result<PrimaryState, RuntimeError> {
        let Some(first) = containers.first() else { return Ok(PrimaryState::gone()) };
        Ok(Self::state_of(self.containers().get(&first.instance)))
    }

    async fn remove_container(&self, id: &str) -> Result<bool, RuntimeError> {
        let mut containers = self.containers();
        let before = containers.len();
        containers.retain(|_, container| container.id != id);
        Ok(containers.len() < before)
    }
}

/// The events of `receiver` as the watcher's stream; a follower that fell behind by more than
/// [`EVENT_BUFFER`] events gets an error, as a broken engine stream would give it.
fn tokio_stream_of(receiver: broadcast::Receiver<RuntimeEvent>) -> RuntimeEventStream {
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        match receiver.recv().await {
            Ok(event) => Some((Ok(event), receiver)),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some((
                Err(RuntimeError::Engine {
                    operation: "following events".to_owned(),
                    message: format!("{missed} events missed"),
                }),
                receiver,
            )),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    });
    stream.boxed()
}

#[async_trait]
impl ClusterSource for SimulatedEngine {
    async fn cluster_info(&self, id: InstanceId) -> iaas_core::Result<ClusterInfo> {
        let Some(container) = self.containers().get(&id).cloned() else {
            return Err(iaas_core::Error::NotFound { entity: "cluster", id: id.to_string() });
        };
        Ok(ClusterInfo {
            instance_id: id,
            status: if container.running {
                InstanceStatus::Running
            } else {
                InstanceStatus::Stopped
            },
            nodes: vec![NodeInfo {
                name: container.name,
                container_id: Some(container.id),
                role: NodeRole::Primary,
                running: container.running,
            }],
            endpoints: Vec::<Endpoint>::new(),
            observed_at: iaas_core::observed_now(),
        })
    }

    async fn cluster_stats(&self, id: InstanceId) -> iaas_core::Result<ClusterStats> {
        Ok(ClusterStats {
            instance_id: id,
            cpu_percent: 0.0,
            memory_bytes: 0,
            memory_limit_bytes: 0,
            connections: None,
            observed_at: iaas_core::observed_now(),
        })
    }

    async fn replication_status(&self, _id: InstanceId) -> iaas_core::Result<ReplicationStatus> {
        Err(iaas_core::Error::Unsupported { what: "replication".to_owned() })
    }
}
