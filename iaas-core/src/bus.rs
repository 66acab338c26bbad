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
///
/// Runners (the Kafka consumer runner, the in-process bus) deliver events in batches of up to
/// [`max_batch`](Self::max_batch) through [`handle_batch`](Self::handle_batch). A batch holds
/// what had already arrived when the runner picked it up; runners never wait for a batch to
/// fill, so a lone event is handed over at once.
///
/// The batch contract, which every runner keeps and every override must keep:
///
/// - **Results per event, in order**: `results[i]` is the outcome of `events[i]`.
/// - **At least once**: a runner acknowledges an event (stores its offset, answers the
///   publisher) only once its result is `Ok` (or it was dead-lettered after a
///   [`HandlerError::Permanent`]). Handlers stay idempotent on [`InfrastructureEvent::id`].
/// - **Order per key**: the events of one instance appear in the batch in the order of the
///   bus, and are handed over again in that order when retried.
/// - **A transient failure stops the line**: when `events[i]` failed with
///   [`HandlerError::Transient`], the runner retries `events[i]` and every event after it in
///   the batch (so no later event of the same partition or key is acknowledged before it),
///   whatever their results say; permanent failures before `i` are dead-lettered one by one
///   and the others before `i` acknowledged. A handler may therefore stop at the first
///   transient failure and return fewer results than events: the events without a result
///   count as failed transiently with it.
#[async_trait]
pub trait EventHandler: Send + Sync {
    /// A short stable name for logs and metrics (`"monitoring-indexer"`).
    fn name(&self) -> &str;

    /// Handles one event. May be called more than once for the same event.
    async fn handle(&self, event: &InfrastructureEvent) -> Result<(), HandlerError>;

    /// Handles `events` (in bus order), see the batch contract on the trait. The default
    /// handles them one at a time with [`handle`](Self::handle) and stops at the first
    /// transient failure (the events after it are retried anyway).
    async fn handle_batch(&self, events: &[InfrastructureEvent]) -> Vec<Result<(), HandlerError>> {
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            let result = self.handle(event).await;
            let stop = matches!(result, Err(HandlerError::Transient(_)));
            results.push(result);
            if stop {
                break;
            }
        }
        results
    }

    /// The most events this handler wants in one [`handle_batch`](Self::handle_batch) call.
    ///
    /// The default, 1, keeps handlers that gain nothing from batches on one event per call, so
    /// a runner that is stopped mid-stream finishes exactly the event in hand. Handlers with a
    /// real batch implementation (one write for many events) return more; runners cap it with
    /// their own limit.
    fn max_batch(&self) -> usize {
        1
    }
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

    /// Where the results of a batch of `events` events stop the line: the index of the first
    /// event that must be handed over again (the first transient failure, or the first event
    /// without a result), or `None` when every event has its final result (`Ok`, or a
    /// permanent failure to dead-letter). Runners apply the batch contract of
    /// [`EventHandler`] through it.
    pub fn first_to_retry(events: usize, results: &[Result<(), HandlerError>]) -> Option<usize> {
        results
            .iter()
            .take(events)
            .position(|result| matches!(result, Err(HandlerError::Transient(_))))
            .or((results.len() < events).then_some(results.len()))
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
