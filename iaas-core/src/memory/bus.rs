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
/// reference shape of an idempotent consumer. It takes batches of any size (the runner's limit
/// applies) and records their sizes, so tests can see how a runner formed them.
#[derive(Debug, Default)]
pub struct RecordingHandler {
    seen: Mutex<(HashSet<EventId>, Vec<InfrastructureEvent>)>,
    duplicates: AtomicU64,
    batches: Mutex<Vec<usize>>,
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

    /// The size of every batch handed to [`EventHandler::handle_batch`], in call order (a
    /// call of [`EventHandler::handle`] is not a batch and is not listed).
    pub fn batch_sizes(&self) -> Vec<usize> {
        lock(&self.batches).clone()
    }

    fn record(&self, event: &InfrastructureEvent) {
        let mut seen = lock(&self.seen);
        if seen.0.insert(event.id) {
            seen.1.push(event.clone());
        } else {
            self.duplicates.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl EventHandler for RecordingHandler {
    fn name(&self) -> &str {
        "recording"
    }

    async fn handle(&self, event: &InfrastructureEvent) -> Result<(), HandlerError> {
        self.record(event);
        Ok(())
    }

    async fn handle_batch(&self, events: &[InfrastructureEvent]) -> Vec<Result<(), HandlerError>> {
        lock(&self.batches).push(events.len());
        events
            .iter()
            .map(|event| {
                self.record(event);
                Ok(())
            })
            .collect()
    }

    fn max_batch(&self) -> usize {
        usize::MAX
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

    /// Fails the events named at construction, the one way each says.
    struct Fails {
        transient: EventId,
        permanent: EventId,
        calls: Mutex<Vec<EventId>>,
    }

    #[async_trait]
    impl EventHandler for Fails {
        fn name(&self) -> &str {
            "fails"
        }

        async fn handle(&self, event: &InfrastructureEvent) -> Result<(), HandlerError> {
            lock(&self.calls).push(event.id);
            if event.id == self.transient {
                Err(HandlerError::Transient("down".into()))
            } else if event.id == self.permanent {
                Err(HandlerError::Permanent("refused".into()))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn the_default_batch_handles_in_order_and_stops_at_a_transient_failure() {
        let events: Vec<_> = (0..5).map(|_| event()).collect();
        let handler =
            Fails { permanent: events[1].id, transient: events[3].id, calls: Mutex::default() };
        let results = handler.handle_batch(&events).await;
        assert_eq!(results.len(), 4, "nothing after the transient failure was tried");
        assert!(results[0].is_ok() && results[2].is_ok());
        assert!(matches!(results[1], Err(HandlerError::Permanent(_))));
        assert!(matches!(results[3], Err(HandlerError::Transient(_))));
        let tried: Vec<_> = events[..4].iter().map(|e| e.id).collect();
        assert_eq!(*lock(&handler.calls), tried);
        assert_eq!(HandlerError::first_to_retry(events.len(), &results), Some(3));
        assert_eq!(handler.max_batch(), 1);
    }

    #[test]
    fn the_line_stops_at_the_first_transient_failure_or_missing_result() {
        let ok = || Ok(());
        let transient = || Err(HandlerError::Transient("down".into()));
        let permanent = || Err(HandlerError::Permanent("refused".into()));
        assert_eq!(HandlerError::first_to_retry(3, &[ok(), permanent(), ok()]), None);
        assert_eq!(HandlerError::first_to_retry(3, &[ok(), transient(), ok()]), Some(1));
        assert_eq!(HandlerError::first_to_retry(3, &[ok(), permanent()]), Some(2));
        assert_eq!(HandlerError::first_to_retry(2, &[ok(), ok(), transient()]), None);
        assert_eq!(HandlerError::first_to_retry(0, &[]), None);
    }

    #[tokio::test]
    async fn a_recorded_batch_counts_its_size_and_its_duplicates() {
        let handler = RecordingHandler::new();
        let events = [event(), event()];
        let results = handler.handle_batch(&events).await;
        assert!(results.iter().all(Result::is_ok) && results.len() == 2);
        handler.handle_batch(&events[..1]).await;
        assert_eq!(handler.events(), events.to_vec());
        assert_eq!(handler.duplicates(), 1);
        assert_eq!(handler.batch_sizes(), vec![2, 1]);
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
