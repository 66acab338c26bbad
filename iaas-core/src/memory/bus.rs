use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;

use super::lock;
use crate::bus::{EventHandler, EventPublisher, HandlerError};
use crate::error::{Error, Result};
use crate::event::InfrastructureEvent;
use crate::id::EventId;

/// [`EventPublisher`] that keeps what it was given, and can be switched off to play a broker
/// outage.
#[derive(Debug, Default)]
pub struct MemoryPublisher {
    published: Mutex<Vec<InfrastructureEvent>>,
    unavailable: AtomicBool,
}

/// The error a switched-off [`MemoryPublisher`] returns.
#[derive(Debug, thiserror::Error)]
#[error("the in-memory bus is switched off")]
struct SwitchedOff;

impl MemoryPublisher {
    /// An empty, available publisher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every event published so far, in order.
    pub fn published(&self) -> Vec<InfrastructureEvent> {
        lock(&self.published).clone()
    }

    /// While `true`, `publish` fails with [`Error::Unavailable`] and keeps nothing.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }
}

#[async_trait]
impl EventPublisher for MemoryPublisher {
    async fn publish(&self, event: &InfrastructureEvent) -> Result<()> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(Error::unavailable(
                "memory-bus",
                format!("publishing event {}", event.id),
                SwitchedOff,
            ));
        }
        lock(&self.published).push(event.clone());
        Ok(())
    }
}

/// [`EventHandler`] that records each distinct event once and counts redeliveries: the
/// reference shape of an idempotent consumer.
#[derive(Debug, Default)]
pub struct RecordingHandler {
    seen: Mutex<(HashSet<EventId>, Vec<InfrastructureEvent>)>,
    duplicates: AtomicU64,
}

impl RecordingHandler {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The distinct events handled, in first-delivery order.
    pub fn events(&self) -> Vec<InfrastructureEvent> {
        lock(&self.seen).1.clone()
    }

    /// How many deliveries repeated an event already handled.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl EventHandler for RecordingHandler {
    fn name(&self) -> &str {
        "recording"
    }

    async fn handle(&self, event: &InfrastructureEvent) -> Result<(), HandlerError> {
        let mut seen = lock(&self.seen);
        if seen.0.insert(event.id) {
            seen.1.push(event.clone());
        } else {
            self.duplicates.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::event::EventAction;
    use crate::id::{InstanceId, UserId};
    use crate::instance::InstanceKind;

    fn event() -> InfrastructureEvent {
        InfrastructureEvent::new(
            InstanceId::new_random(),
            UserId::new_random(),
            InstanceKind::Docker,
            EventAction::Created,
            Utc::now(),
        )
    }

    #[tokio::test]
    async fn a_switched_off_publisher_refuses_and_keeps_nothing() {
        let publisher = MemoryPublisher::new();
        publisher.set_unavailable(true);
        let err = publisher.publish(&event()).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(publisher.published().is_empty());
        publisher.set_unavailable(false);
        let e = event();
        publisher.publish(&e).await.unwrap();
        assert_eq!(publisher.published(), vec![e]);
    }

    #[tokio::test]
    async fn a_batch_stops_at_the_first_failure() {
        let publisher = MemoryPublisher::new();
        let events = [event(), event()];
        let outcome = publisher.publish_batch(&events).await;
        assert_eq!(outcome.published, 2);
        assert!(outcome.error.is_none());
        publisher.set_unavailable(true);
        let outcome = publisher.publish_batch(&events).await;
        assert_eq!(outcome.published, 0);
        assert!(outcome.error.is_some_and(|e| e.is_transient()));
    }

    #[tokio::test]
    async fn redeliveries_are_counted_not_recorded() {
        let handler = RecordingHandler::new();
        let e = event();
        handler.handle(&e).await.unwrap();
        handler.handle(&e).await.unwrap();
        assert_eq!(handler.events(), vec![e]);
        assert_eq!(handler.duplicates(), 1);
    }
}
