//! The consumer handler that turns events into log entries.

use std::sync::Arc;

use async_trait::async_trait;
use iaas_core::{EventHandler, HandlerError, InfrastructureEvent};

use super::LogIndex;
use super::entry::LogEntry;

/// Indexes every event it is given; idempotent because the index is keyed by event id.
///
/// A backend that is down is a [`HandlerError::Transient`] (the consumer retries the same
/// event and does not move on); an entry the index refuses for good is a
/// [`HandlerError::Permanent`] (dead-lettered, the partition moves on).
///
/// Metrics: `iaas_monitoring_index_total{outcome="indexed|unavailable|rejected"}` and the
/// `iaas_monitoring_index_seconds` histogram.
#[derive(Clone)]
pub struct MonitoringIndexer {
    index: Arc<dyn LogIndex>,
}

impl MonitoringIndexer {
    /// The handler name used in logs and metrics.
    pub const NAME: &'static str = "monitoring-indexer";

    /// An indexer writing to `index`.
    pub fn new(index: Arc<dyn LogIndex>) -> Self {
        Self { index }
    }
}

impl std::fmt::Debug for MonitoringIndexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitoringIndexer").finish_non_exhaustive()
    }
}

#[async_trait]
impl EventHandler for MonitoringIndexer {
    fn name(&self) -> &str {
        Self::NAME
    }

    #[tracing::instrument(
        skip_all,
        fields(event_id = %event.id, instance_id = %event.instance_id, user_id = %event.user_id)
    )]
    async fn handle(&self, event: &InfrastructureEvent) -> Result<(), HandlerError> {
        let entry = LogEntry::from_event(event);
        let started = std::time::Instant::now();
        let result = self.index.index(std::slice::from_ref(&entry)).await;
        metrics::histogram!("iaas_monitoring_index_seconds")
            .record(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(()) => "indexed",
            Err(err) if err.is_transient() => "unavailable",
            Err(_) => "rejected",
        };
        metrics::counter!("iaas_monitoring_index_total", "outcome" => outcome).increment(1);
        // The consumer runner logs the failure once, with its retry or dead-letter decision.
        result.map_err(|err| {
            if err.is_transient() {
                HandlerError::Transient(Box::new(err))
            } else {
                HandlerError::Permanent(Box::new(err))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use iaas_core::{EventAction, EventId, InstanceId, InstanceKind, UserId};

    use super::super::{IndexError, MockLogIndex};
    use super::*;

    fn event() -> InfrastructureEvent {
        InfrastructureEvent::new(
            InstanceId::new_random(),
            UserId::new_random(),
            InstanceKind::Nginx,
            EventAction::Failed,
            Utc::now(),
        )
    }

    #[tokio::test]
    async fn indexes_the_entry_of_the_event() {
        let event = event();
        let expected = LogEntry::from_event(&event);
        let mut index = MockLogIndex::new();
        index
            .expect_index()
            .withf(move |entries| entries == std::slice::from_ref(&expected))
            .times(1)
            .returning(|_| Ok(()));
        let indexer = MonitoringIndexer::new(Arc::new(index));
        assert_eq!(indexer.name(), "monitoring-indexer");
        assert!(indexer.handle(&event).await.is_ok());
    }

    #[tokio::test]
    async fn unavailable_backend_is_transient() {
        let mut index = MockLogIndex::new();
        index.expect_index().returning(|_| {
            Err(IndexError::Unavailable {
                backend: "sqlite",
                operation: "indexing".into(),
                source: "disk I/O error".into(),
            })
        });
        let err = MonitoringIndexer::new(Arc::new(index)).handle(&event()).await;
        assert!(matches!(err, Err(ref e) if e.is_transient()), "{err:?}");
    }

    #[tokio::test]
    async fn rejected_entry_is_permanent() {
        let mut index = MockLogIndex::new();
        index.expect_index().returning(|_| {
            Err(IndexError::Rejected {
                backend: "elasticsearch",
                event_id: EventId::new_v7(),
                reason: "mapper_parsing_exception".into(),
            })
        });
        let err = MonitoringIndexer::new(Arc::new(index)).handle(&event()).await;
        assert!(matches!(err, Err(HandlerError::Permanent(_))), "{err:?}");
    }
}
