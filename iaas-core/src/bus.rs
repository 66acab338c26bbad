//! The event bus ports: publishing events and handling them.
//!
//! Publishers promise durability: `publish` returns `Ok` only once the bus has the event (for
//! Kafka, once the delivery report came back). Handlers are called at least once per event, so
//! they must be idempotent on [`InfrastructureEvent::id`].

use async_trait::async_trait;

use crate::error::{BoxError, Result};
use crate::event::InfrastructureEvent;

/// Sends events to the bus.
#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Publishes one event, keyed by its instance id. `Ok` means the bus has it; a bus that is
    /// down gives [`Error::Unavailable`](crate::Error::Unavailable) and the caller keeps the
    /// event to retry.
    async fn publish(&self, event: &InfrastructureEvent) -> Result<()>;

    /// Publishes events in order and reports how many of them, from the first, the bus has.
    ///
    /// Events of one instance must reach the bus in the order given, so publishing stops at the
    /// first failure: `published` counts the prefix that made it, `error` says why the next one
    /// did not. The default publishes one at a time; backends with pipelining (Kafka) override
    /// it to keep many events in flight while preserving the order per key.
    async fn publish_batch(&self, events: &[InfrastructureEvent]) -> BatchOutcome {
        for (published, event) in events.iter().enumerate() {
            if let Err(error) = self.publish(event).await {
                return BatchOutcome { published, error: Some(error) };
            }
        }
        BatchOutcome { published: events.len(), error: None }
    }
}

/// What [`EventPublisher::publish_batch`] achieved.
#[derive(Debug)]
pub struct BatchOutcome {
    /// How many events, from the start of the batch, the bus has.
    pub published: usize,
    /// Why the event after them was not published, if the batch stopped short.
    pub error: Option<crate::Error>,
}

/// Reacts to events delivered by a consumer.
#[async_trait]
pub trait EventHandler: Send + Sync {
    /// A short stable name for logs and metrics (`"monitoring-indexer"`).
    fn name(&self) -> &str;

    /// Handles one event. May be called more than once for the same event.
    async fn handle(&self, event: &InfrastructureEvent) -> Result<(), HandlerError>;
}

/// Why a handler could not handle an event; decides between retrying and dead-lettering.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// A dependency is down; retry the same event later, do not move on.
    #[error("transient failure: {0}")]
    Transient(#[source] BoxError),
    /// The event can never be handled (bad content, violated invariant); send it to the
    /// dead-letter topic and move on.
    #[error("permanent failure: {0}")]
    Permanent(#[source] BoxError),
}

impl HandlerError {
    /// Whether retrying may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, HandlerError::Transient(_))
    }
}

impl From<crate::Error> for HandlerError {
    /// Unavailable backends are transient; everything else is permanent.
    fn from(err: crate::Error) -> Self {
        if err.is_transient() {
            HandlerError::Transient(Box::new(err))
        } else {
            HandlerError::Permanent(Box::new(err))
        }
    }
}
