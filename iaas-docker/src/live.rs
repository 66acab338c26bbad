//! Live status: every status change, fanned out to whoever watches.
//!
//! [`LiveStatus`] is an [`EventHandler`]: subscribed to the bus, it turns each committed status
//! event into a [`StatusUpdate`] on a broadcast channel, so a change reaches live UIs the same
//! way whether it came from the API or from the Docker engine. Each watcher reads at its own
//! pace; one that falls more than the channel's capacity behind is told it lagged (and the
//! WebSocket endpoint sends it a fresh snapshot) instead of slowing anyone else down.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use iaas_core::{
    EventAction, EventHandler, HandlerError, InfrastructureEvent, InstanceId, InstanceStatus,
    UserId,
};
use serde::Serialize;
use tokio::sync::broadcast;

/// One instance's new status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusUpdate {
    /// The instance.
    pub instance_id: InstanceId,
    /// Its owner: only they are sent the update.
    pub owner: UserId,
    /// The status it reached.
    pub status: InstanceStatus,
    /// The event name (`postgres.started`).
    pub event: String,
    /// When it happened.
    pub at: DateTime<Utc>,
}

impl StatusUpdate {
    /// The update an event stands for, if it reports a status.
    pub fn from_event(event: &InfrastructureEvent) -> Option<Self> {
        let status = match event.action {
            EventAction::Created => InstanceStatus::Provisioning,
            EventAction::Started | EventAction::Restarted => InstanceStatus::Running,
            EventAction::Stopped => InstanceStatus::Stopped,
            EventAction::Failed => InstanceStatus::Failed,
            EventAction::Deleted => InstanceStatus::Deleted,
            _ => return None,
        };
        Some(Self {
            instance_id: event.instance_id,
            owner: event.user_id,
            status,
            event: event.name(),
            at: event.occurred_at,
        })
    }
}

/// The fan-out of status updates.
#[derive(Debug, Clone)]
pub struct LiveStatus {
    sender: broadcast::Sender<StatusUpdate>,
}

impl LiveStatus {
    /// A fan-out keeping up to `capacity` updates for slow watchers (default 1024 via
    /// [`Default`]).
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender }
    }

    /// Sends an update to every current watcher; returns how many there were.
    pub fn send(&self, update: StatusUpdate) -> usize {
        // No watcher is not an error: nobody is looking.
        self.sender.send(update).unwrap_or(0)
    }

    /// A new watcher, receiving updates from now on.
    pub fn watch(&self) -> broadcast::Receiver<StatusUpdate> {
        self.sender.subscribe()
    }
}

impl Default for LiveStatus {
    fn default() -> Self {
        Self::new(1024)
    }
}

#[async_trait]
impl EventHandler for LiveStatus {
    fn name(&self) -> &str {
        "live-status"
    }

    async fn handle(&self, event: &InfrastructureEvent) -> Result<(), HandlerError> {
        if let Some(update) = StatusUpdate::from_event(event) {
            self.send(update);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iaas_core::InstanceKind;

    fn event(action: EventAction, owner: UserId) -> InfrastructureEvent {
        InfrastructureEvent::new(
            InstanceId::new_random(),
            owner,
            InstanceKind::Nginx,
            action,
            Utc::now(),
        )
    }

    #[tokio::test]
    async fn status_events_reach_every_watcher() {
        let live = LiveStatus::new(8);
        let mut a = live.watch();
        let mut b = live.watch();
        let owner = UserId::new_random();
        live.handle(&event(EventAction::Started, owner)).await.unwrap();
        live.handle(&event(EventAction::ConfigChanged, owner)).await.unwrap();
        for rx in [&mut a, &mut b] {
            let update = rx.recv().await.unwrap();
            assert_eq!(
                (update.status, update.owner, update.event.as_str()),
                (InstanceStatus::Running, owner, "nginx.started")
            );
            assert!(rx.try_recv().is_err(), "config changes carry no status");
        }
    }

    #[tokio::test]
    async fn a_slow_watcher_is_told_it_lagged() {
        let live = LiveStatus::new(2);
        let mut slow = live.watch();
        for _ in 0..5 {
            live.send(
                StatusUpdate::from_event(&event(EventAction::Stopped, UserId::new_random()))
                    .unwrap(),
            );
        }
        assert!(matches!(slow.recv().await, Err(broadcast::error::RecvError::Lagged(3))));
    }
}
