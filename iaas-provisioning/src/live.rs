//! Live status: every status change, fanned out to whoever watches.
//!
//! [`LiveStatus`] is an [`EventHandler`]: subscribed to the bus, it turns each committed status
//! event into a [`StatusUpdate`] on a broadcast channel, so a change reaches live UIs the same
//! way whether it came from the API or from the engine. Each watcher reads at its own
//! pace; one that falls more than the channel's capacity behind is told it lagged (and the
//! WebSocket endpoint sends it a fresh snapshot) instead of slowing anyone else down.
//!
//! The channel carries [`LiveUpdate`]s: one shared allocation per update, so handing it to N
//! watchers costs N reference counts rather than N copies of its strings, and (feature `http`)
//! the WebSocket frame it becomes is serialized once, when it is sent, for every client. The
//! work left per client is the owner check and the socket write.

use std::sync::Arc;

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
            EventAction::Stopping => InstanceStatus::Stopping,
            EventAction::Starting => InstanceStatus::Starting,
            EventAction::Restarting => InstanceStatus::Restarting,
            EventAction::Deleting => InstanceStatus::Deleting,
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

/// A [`StatusUpdate`] as watchers receive it: cheap to clone, and (feature `http`) carrying
/// its WebSocket frame, serialized once for all clients.
#[derive(Debug, Clone)]
pub struct LiveUpdate(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    update: StatusUpdate,
    /// The `status` frame of the live endpoint; a clone shares the bytes.
    #[cfg(feature = "http")]
    frame: axum::extract::ws::Utf8Bytes,
}

impl LiveUpdate {
    /// Wraps `update` (and, with the `http` feature, serializes its frame).
    pub fn new(update: StatusUpdate) -> Self {
        Self(Arc::new(Shared {
            #[cfg(feature = "http")]
            frame: crate::http::status_frame(&update),
            update,
        }))
    }

    /// The update.
    pub fn update(&self) -> &StatusUpdate {
        &self.0.update
    }

    /// Whether `user` may see it (only the instance's owner does).
    pub fn is_for(&self, user: UserId) -> bool {
        self.0.update.owner == user
    }

    /// The WebSocket `status` frame, shared by every client it is sent to.
    #[cfg(feature = "http")]
    pub(crate) fn frame(&self) -> &axum::extract::ws::Utf8Bytes {
        &self.0.frame
    }
}

/// The fan-out of status updates.
#[derive(Debug, Clone)]
pub struct LiveStatus {
    sender: broadcast::Sender<LiveUpdate>,
    /// Updates handed over so far (watched or not): a snapshot read after the n-th holds
    /// every change up to it.
    sent: Arc<std::sync::atomic::AtomicU64>,
}

impl LiveStatus {
    /// A fan-out keeping up to `capacity` updates for slow watchers (default 1024 via
    /// [`Default`]).
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender, sent: Arc::default() }
    }

    /// How many updates were handed over so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Sends an update to every current watcher; returns how many there were.
    pub fn send(&self, update: StatusUpdate) -> usize {
        self.sent.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        // No watcher is not an error: nobody is looking, so nothing is serialized either. A
        // watcher subscribing right after this check would not have received the update anyway
        // (a broadcast reaches only current receivers); its snapshot, read after subscribing,
        // already has the committed status.
        if self.sender.receiver_count() == 0 {
            return 0;
        }
        self.sender.send(LiveUpdate::new(update)).unwrap_or(0)
    }

    /// A new watcher, receiving updates from now on.
    pub fn watch(&self) -> broadcast::Receiver<LiveUpdate> {
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
            let watchers = self.send(update);
            // One hop of the engine event -> frame latency: how long after the
            // status change (its event time) the bus handed it over. Debug only, off the hot
            // path unless asked for (`RUST_LOG=iaas_provisioning::live=debug`).
            if tracing::enabled!(tracing::Level::DEBUG) {
                let since_event_us = (Utc::now() - event.occurred_at).num_microseconds();
                tracing::debug!(instance_id = %event.instance_id, event_id = %event.id, watchers, since_event_us, "status update handed to live watchers");
            }
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
            assert!(update.is_for(owner) && !update.is_for(UserId::new_random()));
            let update = update.update();
            assert_eq!(
                (update.status, update.owner, update.event.as_str()),
                (InstanceStatus::Running, owner, "nginx.started")
            );
            assert!(rx.try_recv().is_err(), "config changes carry no status");
        }
    }

    #[tokio::test]
    async fn without_watchers_nothing_is_sent() {
        let live = LiveStatus::new(8);
        let update =
            StatusUpdate::from_event(&event(EventAction::Started, UserId::new_random())).unwrap();
        assert_eq!(live.send(update.clone()), 0);
        let _watcher = live.watch();
        assert_eq!(live.send(update), 1);
    }

    #[cfg(feature = "http")]
    #[tokio::test]
    async fn every_watcher_shares_one_serialized_frame() {
        let live = LiveStatus::new(8);
        let (mut a, mut b) = (live.watch(), live.watch());
        let owner = UserId::new_random();
        live.handle(&event(EventAction::Stopped, owner)).await.unwrap();
        let (a, b) = (a.recv().await.unwrap(), b.recv().await.unwrap());
        // The same bytes, not equal copies: the frame was serialized once.
        assert_eq!(a.frame().as_ptr(), b.frame().as_ptr());
        let frame: serde_json::Value = serde_json::from_str(a.frame()).unwrap();
        assert_eq!(frame["status"], "stopped");
        assert_eq!(frame["instance_id"], a.update().instance_id.to_string());
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
