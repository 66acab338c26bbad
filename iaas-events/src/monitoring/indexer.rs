//! The consumer handler that turns events into log entries.
//!
//! Group commit: [`EventHandler::handle`] is called once per event and may only return once
//! that event is durably indexed (the runner stores the offset, or acknowledges the bus, after
//! it returns: at-least-once). Calls that arrive while a write is in flight queue their entry;
//! the next writer takes the whole queue and indexes it in one `LogIndex::index` call (one
//! statement or transaction on SQLite, one bulk request on Elasticsearch), then answers every
//! caller of that batch with its outcome. Nobody waits for a timer: a lone event is written at
//! once, and batches form only from calls that overlap (several partitions, consumers or
//! groups), so sequential delivery pays no extra latency. Redelivery stays harmless because
//! the index is keyed by event id.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use iaas_core::{EventHandler, HandlerError, InfrastructureEvent};
use tokio::sync::oneshot;

use super::entry::LogEntry;
use super::{IndexError, LogIndex};

/// What each caller of a batch is told: shared, since one failure answers many callers.
type Outcome = Result<(), Arc<IndexError>>;

/// Entries waiting for the next writer, each with the channel its caller waits on.
type Queue = Vec<(LogEntry, oneshot::Sender<Outcome>)>;

/// Indexes every event it is given; idempotent because the index is keyed by event id.
///
/// A backend that is down is a [`HandlerError::Transient`] (the consumer retries the same
/// event and does not move on); an entry the index refuses for good is a
/// [`HandlerError::Permanent`] (dead-lettered, the partition moves on). When a batch is refused,
/// its entries are retried one by one, so only the refused entry is reported permanent.
///
/// Metrics: `iaas_monitoring_index_total{outcome="indexed|unavailable|rejected"}`, the
/// `iaas_monitoring_index_seconds` histogram (one sample per write) and the
/// `iaas_monitoring_index_batch_entries` histogram (entries per write).
#[derive(Clone)]
pub struct MonitoringIndexer {
    index: Arc<dyn LogIndex>,
    queue: Arc<Mutex<Queue>>,
    /// Held by the one caller writing a batch; the others queue meanwhile.
    writer: Arc<tokio::sync::Mutex<()>>,
}

impl MonitoringIndexer {
    /// The handler name used in logs and metrics.
    pub const NAME: &'static str = "monitoring-indexer";

    /// An indexer writing to `index`.
    pub fn new(index: Arc<dyn LogIndex>) -> Self {
        Self {
            index,
            queue: Arc::new(Mutex::new(Vec::new())),
            writer: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn take_queue(&self) -> Queue {
        // The queue is only pushed to and taken whole; a panic elsewhere cannot leave it
        // half-updated, so a poisoned lock is still consistent.
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Indexes everything queued so far in one write and answers each waiting caller.
    async fn flush(&self) {
        let batch = self.take_queue();
        if batch.is_empty() {
            return;
        }
        let (entries, waiters): (Vec<LogEntry>, Vec<_>) = batch.into_iter().unzip();
        let outcome = self.write(&entries).await;
        match outcome {
            Err(err) if !err.is_transient() && entries.len() > 1 => {
                // One refused entry must not dead-letter its neighbours: retry each alone.
                for (entry, waiter) in entries.iter().zip(waiters) {
                    let single = self.write(std::slice::from_ref(entry)).await;
                    // The caller may have been cancelled; its event will be redelivered.
                    let _ = waiter.send(single);
                }
            }
            outcome => {
                for waiter in waiters {
                    let _ = waiter.send(outcome.clone());
                }
            }
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
        let (sender, outcome) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((LogEntry::from_event(event), sender));
        {
            // Whoever holds the writer lock flushes the queue before releasing it, so after
            // taking the lock either our entry was already written by the previous holder
            // (and our answer is waiting) or it is still queued and we write it now.
            let _writer = self.writer.lock().await;
            self.flush().await;
        }
        let outcome = outcome.await.map_err(|_| {
            // Only possible if a writer was cancelled mid-batch: retrying is safe (idempotent).
            HandlerError::Transient("the batch holding this event was abandoned".into())
        })?;
        // The consumer runner logs the failure once, with its retry or dead-letter decision.
        outcome.map_err(|err| {
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
        let mut index = MockLogIndex::new();
        index.expect_index().returning(move |entries| {
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
        // Queue all three, then flush them as one batch.
        let mut answers = Vec::new();
        for event in &events {
            let (sender, answer) = oneshot::channel();
            indexer.queue.lock().unwrap().push((LogEntry::from_event(event), sender));
            answers.push(answer);
        }
        indexer.flush().await;
        let outcomes: Vec<bool> = futures_ok(answers).await;
        assert_eq!(outcomes, vec![true, false, true]);
    }

    async fn futures_ok(answers: Vec<oneshot::Receiver<Outcome>>) -> Vec<bool> {
        let mut out = Vec::new();
        for answer in answers {
            out.push(answer.await.unwrap().is_ok());
        }
        out
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
