//! The in-process bus: the embedded default when no Kafka is configured.
//!
//! It has no storage of its own and needs none: the durable part is the outbox. `publish`
//! delivers the event to every subscribed group's handler before it returns, so when the relay
//! marks an event sent, every consumer has handled it. A transient handler failure fails the
//! publish (the event stays in the outbox and comes again; groups that already handled it see a
//! duplicate and drop it by id); a permanent one dead-letters the event for that group and the
//! others go on.

use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use iaas_core::{Error, EventHandler, EventPublisher, HandlerError, InfrastructureEvent, Result};

/// An event a group gave up on.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The group.
    pub group: String,
    /// The event.
    pub event: InfrastructureEvent,
    /// Why the handler refused it.
    pub error: String,
}

/// Delivers events to in-process handlers, one per consumer group.
#[derive(Default)]
pub struct InProcessBus {
    groups: RwLock<Vec<(String, Arc<dyn EventHandler>)>>,
    dead_letters: Mutex<Vec<DeadLetter>>,
}

impl std::fmt::Debug for InProcessBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups: Vec<String> = self
            .groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(g, _)| g.clone())
            .collect();
        f.debug_struct("InProcessBus").field("groups", &groups).finish_non_exhaustive()
    }
}

impl InProcessBus {
    /// A bus with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `handler` as consumer group `group`: it gets every event published from now on.
    pub fn subscribe(&self, group: impl Into<String>, handler: Arc<dyn EventHandler>) {
        self.groups.write().unwrap_or_else(|p| p.into_inner()).push((group.into(), handler));
    }

    /// Events dead-lettered so far.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl EventPublisher for InProcessBus {
    async fn publish(&self, event: &InfrastructureEvent) -> Result<()> {
        // Handlers are called without holding the lock, so one may subscribe another.
        let groups = self.groups.read().unwrap_or_else(|p| p.into_inner()).clone();
        for (group, handler) in groups {
            match handler.handle(event).await {
                Ok(()) => {}
                Err(HandlerError::Transient(source)) => {
                    return Err(Error::unavailable(
                        "in-process bus",
                        format!("group {group} handling event {} ({})", event.id, event.name()),
                        source,
                    ));
                }
                Err(error) => {
                    tracing::error!(%group, event_id = %event.id, %error, "dead-lettering an event");
                    metrics::counter!("iaas_consumer_dead_lettered_total", "group" => group.clone()).increment(1);
                    self.dead_letters.lock().unwrap_or_else(|p| p.into_inner()).push(DeadLetter {
                        group,
                        event: event.clone(),
                        error: error.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}
