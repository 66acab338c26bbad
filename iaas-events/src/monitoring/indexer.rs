//! The consumer handler that turns events into log entries.
//!
//! Batches: runners hand over what they have buffered (up to [`MonitoringIndexer::MAX_BATCH`]
//! events) through [`EventHandler::handle_batch`], which is one `LogIndex::index` call (one
//! multi-row statement on SQLite, one bulk request on Elasticsearch): the write cost is paid per
//! batch, not per event.
//!
//! Group commit on top: a call may only return once its events are durably indexed (the runner
//! stores the offset, or acknowledges the bus, after it returns: at-least-once). Calls that
//! arrive while a write is in flight (several partitions, consumers or groups) queue their
//! entries; the next writer takes the whole queue and indexes it in one write, then answers
//! every caller with its own results. Nobody waits for a timer: a lone event is written at
//! once. Redelivery stays harmless because the index is keyed by event id.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use iaas_core::{EventHandler, HandlerError, InfrastructureEvent};
use tokio::sync::oneshot;

use super::entry::LogEntry;
use super::{IndexError, LogIndex};

/// What one entry's caller is told: shared, since one failure answers many entries.
type Outcome = Result<(), Arc<IndexError>>;

/// One caller's entries waiting for the next writer, with the channel it waits on for their
/// outcomes (one per entry, in order).
struct Pending {
    entries: Vec<LogEntry>,
    answer: oneshot::Sender<Vec<Outcome>>,
}

/// Indexes every event it is given; idempotent because the index is keyed by event id.
///
/// A backend that is down is a [`HandlerError::Transient`] (the consumer retries the same
/// event and does not move on); an entry the index refuses for good is a
/// [`HandlerError::Permanent`] (dead-lettered, the partition moves on). When a write is
/// refused, its entries are retried one by one, so only the refused entry is reported
/// permanent.
///
/// Metrics: `iaas_monitoring_index_total{outcome="indexed|unavailable|rejected"}`, the
/// `iaas_monitoring_index_seconds` histogram (one sample per write) and the
/// `iaas_monitoring_index_batch_entries` histogram (entries per write).
#[derive(Clone)]
pub struct MonitoringIndexer {
    index: Arc<dyn LogIndex>,
    queue: Arc<Mutex<Vec<Pending>>>,
    /// Held by the one caller writing a batch; the others queue meanwhile.
    writer: Arc<tokio::sync::Mutex<()>>,
}

impl MonitoringIndexer {
    /// The handler name used in logs and metrics.
    pub const NAME: &'static str = "monitoring-indexer";

    /// The most events the indexer asks for per [`EventHandler::handle_batch`] call: one
    /// multi-row `INSERT` statement of the SQLite index, and a modest bulk request for
    /// Elasticsearch. Larger batches gain little (the per-write cost is already spread over
    /// 500 entries) and make a refused batch's entry-by-entry retry longer.
    pub const MAX_BATCH: usize = 500;

    /// An indexer writing to `index`.
    pub fn new(index: Arc<dyn LogIndex>) -> Self {
        Self {
            index,
            queue: Arc::new(Mutex::new(Vec::new())),
            writer: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        // The queue is only pushed to and taken whole; a panic elsewhere cannot leave it
        // half-updated, so a poisoned lock is still consistent.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Indexes everything queued so far in one write and answers each waiting caller.
    async fn flush(&self) {
        let batch = std::mem::take(&mut *self.queue());
        if batch.is_empty() {
            return;
        }
        let mut entries = Vec::with_capacity(batch.iter().map(|p| p.entries.len()).sum());
        let mut waiters = Vec::with_capacity(batch.len());
        for pending in batch {
            waiters.push((pending.entries.len(), pending.answer));
            entries.extend(pending.entries);
        }
        let outcomes = match self.write(&entries).await {
            Err(err) if !err.is_transient() && entries.len() > 1 => {
                // One refused entry must not dead-letter its neighbours: retry each alone.
                let mut outcomes = Vec::with_capacity(entries.len());
                for entry in &entries {
                    outcomes.push(self.write(std::slice::from_ref(entry)).await);
                }
                outcomes
            }
            outcome => vec![outcome; entries.len()],
        };
        let mut outcomes = outcomes.into_iter();
        for (count, answer) in waiters {
            // The caller may have been cancelled; its events will be redelivered.
            let _ = answer.send(outcomes.by_ref().take(count).collect());
        }
    }

    async fn write(&self, entries: &[LogEntry]) -> Outcome {
        let started = std::time::Instant::now();
        let result = self.index.index(entries).await;
        metrics::histogram!("iaas_monitoring_index_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("iaas_monitoring_index_batch_entries").record(entries.len() as f64);
        let outcome = match &result {
            Ok(()) => "indexed",
            Err(err) if err.is_transient() => "unavailable",
            Err(_) => "rejected",
        };
        metrics::counter!("iaas_monitoring_index_total", "outcome" => outcome)
            .increment(entries.len() as u64);
        result.map_err(Arc::new)
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
        self.handle_batch(std::slice::from_ref(event)).await.pop().unwrap_or_else(|| {
            Err(HandlerError::Transient("the index gave no outcome for this event".into()))
        })
    }

    #[tracing::instrument(skip_all, fields(events = events.len()))]
    async fn handle_batch(&self, events: &[InfrastructureEvent]) -> Vec<Result<(), HandlerError>> {
        if events.is_empty() {
            return Vec::new();
        }
        let (answer, outcomes) = oneshot::channel();
        let entries = events.iter().map(LogEntry::from_event).collect();
        self.queue().push(Pending { entries, answer });
        {
            // Whoever holds the writer lock flushes the queue before releasing it, so after
            // taking the lock either our entries were already written by the previous holder
            // (and our answer is waiting) or they are still queued and we write them now.
            let _writer = self.writer.lock().await;
            self.flush().await;
        }
        let Ok(outcomes) = outcomes.await else {
            // Only possible if a writer was cancelled mid-batch: retrying is safe (idempotent).
            // No result for the rest means they are retried with the first.
            return vec![Err(HandlerError::Transient(
                "the batch holding these events was abandoned".into(),
            ))];
        };
        // The consumer runner logs each failure once, with its retry or dead-letter decision.
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome.map_err(|err| {
                    if err.is_transient() {
                        HandlerError::Transient(Box::new(err))
                    } else {
                        HandlerError::Permanent(Box::new(err))
                    }
                })
            })
            .collect()
    }

    fn max_batch(&self) -> usize {
        Self::MAX_BATCH
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

    /// Overlapping calls share one write, and each returns only after that write: with the
    /// first write held open, the calls queued behind it arrive in one second batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overlapping_events_are_indexed_in_one_batch() {
        let (first_started, started) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(std::sync::Barrier::new(2));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let mut index = MockLogIndex::new();
        let (gate_in, sizes_in) = (gate.clone(), sizes.clone());
        index.expect_index().times(2).returning(move |entries| {
            let mut sizes = sizes_in.lock().unwrap();
            sizes.push(entries.len());
            if sizes.len() == 1 {
                drop(sizes);
                first_started.send(()).unwrap();
                gate_in.wait();
            }
            Ok(())
        });
        let indexer = MonitoringIndexer::new(Arc::new(index));
        let events: Vec<_> = (0..5).map(|_| event()).collect();
        let first = tokio::spawn({
            let (indexer, event) = (indexer.clone(), events[0].clone());
            async move { indexer.handle(&event).await }
        });
        tokio::task::spawn_blocking(move || started.recv().unwrap()).await.unwrap();
        let rest: Vec<_> = events[1..]
            .iter()
            .map(|event| {
                let (indexer, event) = (indexer.clone(), event.clone());
                tokio::spawn(async move { indexer.handle(&event).await })
            })
            .collect();
        // Let the four queue up behind the held writer, then release it.
        iaas_testkit::wait::eventually(std::time::Duration::from_secs(5), || {
            let queued = indexer.queue.lock().unwrap().len();
            async move { if queued == 4 { Ok(()) } else { Err(queued) } }
        })
        .await
        .unwrap();
        tokio::task::spawn_blocking(move || gate.wait()).await.unwrap();
        assert!(first.await.unwrap().is_ok());
        for call in rest {
            assert!(call.await.unwrap().is_ok());
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1, 4]);
    }

    /// A refused batch is retried entry by entry: only the bad entry is permanent.
    #[tokio::test]
    async fn a_refused_batch_dead_letters_only_the_refused_entry() {
        let events: Vec<_> = (0..3).map(|_| event()).collect();
        let bad = events[1].id;
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let mut index = MockLogIndex::new();
        let sizes_in = sizes.clone();
        index.expect_index().returning(move |entries| {
            sizes_in.lock().unwrap().push(entries.len());
            if entries.iter().any(|e| e.event_id == bad) {
                Err(IndexError::Rejected {
                    backend: "elasticsearch",
                    event_id: bad,
                    reason: "mapper_parsing_exception".into(),
                })
            } else {
                Ok(())
            }
        });
        let indexer = MonitoringIndexer::new(Arc::new(index));
        let results = indexer.handle_batch(&events).await;
        let kinds: Vec<_> =
            results.iter().map(|r| r.as_ref().map(|_| ()).map_err(|e| e.is_transient())).collect();
        assert_eq!(kinds, vec![Ok(()), Err(false), Ok(())]);
        assert_eq!(*sizes.lock().unwrap(), vec![3, 1, 1, 1], "one write, then one per entry");
    }

    /// A batch is one write of all its entries, in order, and every event is answered.
    #[tokio::test]
    async fn a_batch_is_one_write() {
        let events: Vec<_> = (0..7).map(|_| event()).collect();
        let expected: Vec<_> = events.iter().map(LogEntry::from_event).collect();
        let mut index = MockLogIndex::new();
        index
            .expect_index()
            .withf(move |entries| entries == expected.as_slice())
            .times(1)
            .returning(|_| Ok(()));
        let indexer = MonitoringIndexer::new(Arc::new(index));
        let results = indexer.handle_batch(&events).await;
        assert_eq!(results.len(), 7);
        assert!(results.iter().all(Result::is_ok));
        assert!(indexer.handle_batch(&[]).await.is_empty());
        assert_eq!(indexer.max_batch(), MonitoringIndexer::MAX_BATCH);
    }

    /// A backend that is down fails the whole batch transiently: the runner retries it all.
    #[tokio::test]
    async fn an_unavailable_backend_fails_the_whole_batch_transiently() {
        let mut index = MockLogIndex::new();
        index.expect_index().times(1).returning(|_| {
            Err(IndexError::Unavailable {
                backend: "sqlite",
                operation: "indexing".into(),
                source: "disk I/O error".into(),
            })
        });
        let events: Vec<_> = (0..3).map(|_| event()).collect();
        let results = MonitoringIndexer::new(Arc::new(index)).handle_batch(&events).await;
        assert_eq!(HandlerError::first_to_retry(events.len(), &results), Some(0));
        assert!(results.iter().all(|r| matches!(r, Err(e) if e.is_transient())));
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
