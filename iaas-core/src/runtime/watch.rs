//! What a watcher needs from an engine to keep instance statuses true to it.
//!
//! The watcher lives with provisioning and knows no engine: a runtime hands it the engine's
//! events already read in the platform's terms ([`RuntimeEvent`]), lists its managed
//! containers, inspects an instance's primary and removes what a deleted instance left.

use std::collections::HashMap;
use std::pin::Pin;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::Stream;

use super::{ManagedContainer, PrimaryState, RuntimeError};
use crate::{InstanceId, InstanceStatus};

/// Something that happened to a managed container, as the engine reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEvent {
    /// The engine's own name for what happened (`start`, `die`, ...), recorded with the
    /// status change so an operator can tell which engine event caused it.
    pub action: String,
    /// The status the event implies for the container's instance, if any: most engine events
    /// (`create`, `exec_start`, ...) change nothing, yet still move [`cursor`](Self::cursor).
    pub status: Option<InstanceStatus>,
    /// The container's engine id.
    pub container_id: String,
    /// The container's name.
    pub name: String,
    /// The instance the container belongs to (its `iaas.instance` label), when it names one.
    pub instance: Option<InstanceId>,
    /// The container's role (its `iaas.role` label; empty for a single node).
    pub role: String,
    /// The exit status the event reports, for an exit.
    pub exit_code: Option<i64>,
    /// Where to resume the stream after this event (seconds since the epoch, as the engine
    /// counts its replay position).
    pub cursor: Option<i64>,
    /// When the engine says it happened.
    pub at: Option<DateTime<Utc>>,
}

impl RuntimeEvent {
    /// The labels and attributes the engine reported, read into an event (`attributes` holds
    /// the container's labels, its `name` and, for an exit, its `exitCode`).
    pub fn from_attributes(
        action: String,
        status: Option<InstanceStatus>,
        container_id: String,
        attributes: &HashMap<String, String>,
        cursor: Option<i64>,
        at: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            action,
            status,
            container_id,
            name: attributes.get("name").cloned().unwrap_or_default(),
            instance: attributes.get(super::LABEL_INSTANCE).and_then(|id| id.parse().ok()),
            role: attributes.get(super::LABEL_ROLE).cloned().unwrap_or_default(),
            exit_code: attributes.get("exitCode").and_then(|code| code.parse().ok()),
            cursor,
            at,
        }
    }
}

/// The engine's events for managed containers, until the stream ends or fails.
pub type RuntimeEventStream =
    Pin<Box<dyn Stream<Item = Result<RuntimeEvent, RuntimeError>> + Send + 'static>>;

/// What the watcher and reconciler ask of an engine.
#[async_trait]
pub trait RuntimeWatch: Send + Sync {
    /// The engine's events about managed containers from `since` (seconds since the epoch) on,
    /// replaying what happened since then: the watcher resumes from the last event it saw
    /// after a disconnection, so nothing is lost.
    async fn events(&self, since: i64) -> Result<RuntimeEventStream, RuntimeError>;

    /// Every managed container, running or not.
    async fn list_managed(&self) -> Result<Vec<ManagedContainer>, RuntimeError>;

    /// The state of the primary among `containers` (one instance's), inspected now;
    /// [`PrimaryState::gone`] when none of them is a primary or it is gone by now.
    async fn observe(&self, containers: &[ManagedContainer]) -> Result<PrimaryState, RuntimeError>;

    /// Removes the container `id` by force. `Ok(false)` when it was already gone or its
    /// removal is under way, which is no error: the reconciler retries leftovers on its next
    /// pass.
    async fn remove_container(&self, id: &str) -> Result<bool, RuntimeError>;

    /// The owner networks no container of their owner's uses any more, running or not, each
    /// with its owner: the network a provisioning made before it failed to make any container,
    /// or the one whose last container the reconciler swept. Owners in `busy` (known to have
    /// containers) are skipped without asking the engine. A runtime without networks of its
    /// own has none.
    async fn unused_networks(
        &self,
        busy: &std::collections::HashSet<crate::UserId>,
    ) -> Result<Vec<(crate::UserId, String)>, RuntimeError> {
        let _ = busy;
        Ok(Vec::new())
    }

    /// Removes the network `name`; `Ok(false)` when it was gone already or a container uses
    /// it again.
    async fn remove_network(&self, name: &str) -> Result<bool, RuntimeError> {
        let _ = name;
        Ok(false)
    }
}
