//! The consumer runner on the real broker: its own counters (retries, lag). What every bus must
//! do (order, groups, restarts, dead letters, shutdown) is in the conformance suite
//! (`conformance_kafka.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use iaas_core::memory::RecordingHandler;
use iaas_core::{
    EventAction, EventHandler, EventPublisher, HandlerError, InfrastructureEvent, InstanceId,
    InstanceKind, UserId,
};
use iaas_events::Backoff;
use iaas_events::kafka::{
    ConsumerConfig, KafkaConfig, KafkaConsumerRunner, KafkaPublisher, ensure_topic,
};
use iaas_testkit::isolation::{topic_name, unique_name};
use iaas_testkit::wait::eventually;
use tokio_util::sync::CancellationToken;

fn event(instance: InstanceId) -> InfrastructureEvent {
    InfrastructureEvent::new(
        instance,
        UserId::new_random(),
        InstanceKind::Postgres,
        EventAction::Started,
        Utc::now(),
    )
}

async fn setup(test: &str) -> (String, KafkaConfig) {
    let broker = iaas_testkit::kafka().await.unwrap();
    let mut kafka = KafkaConfig::new(broker.url());
    kafka.topic = topic_name(test);
    ensure_topic(&kafka, &kafka.topic, 3, 1, Duration::from_secs(10)).await.unwrap();
    ensure_topic(&kafka, &format!("{}.dlq", kafka.topic), 1, 1, Duration::from_secs(10))
        .await
        .unwrap();
    (broker.url().to_owned(), kafka)
}

fn config(kafka: &KafkaConfig, group: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(kafka.clone(), group);
    config.backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(100));
    config.lag_interval = Duration::from_millis(200);
    config
}

/// How long a cancelled runner may take to stop (the batch in hand, a synchronous commit,
/// leaving the group): a wedged broker fails the test here instead of hanging CI.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// Cancels the runner of `handle` and waits (bounded) for its final counters.
async fn stop(
    cancel: CancellationToken,
    handle: tokio::task::JoinHandle<iaas_events::kafka::ConsumerStats>,
) -> iaas_events::kafka::ConsumerStats {
    cancel.cancel();
    tokio::time::timeout(STOP_DEADLINE, handle)
        .await
        .expect("the consumer runner stopped within 30 s of its cancellation")
        .unwrap()
}

fn spawn(
    runner: Arc<KafkaConsumerRunner>,
) -> (CancellationToken, tokio::task::JoinHandle<iaas_events::kafka::ConsumerStats>) {
    let cancel = CancellationToken::new();
    let handle = tokio::spawn({
        let cancel = cancel.clone();
        async move { runner.run(cancel).await }
    });
    (cancel, handle)
}

async fn handled(recorder: &RecordingHandler, count: usize) {
    eventually(Duration::from_secs(60), || async {
        let seen = recorder.events().len();
        if seen >= count { Ok(()) } else { Err(seen) }
    })
    .await
    .unwrap();
}

/// Fails transiently a number of times, then records.
struct Flaky {
    failures_left: AtomicU32,
    inner: RecordingHandler,
}

#[async_trait]
impl EventHandler for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }

    async fn handle(&self, event: &InfrastructureEvent) -> Result<(), HandlerError> {
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(HandlerError::Transient("index is down".into()));
        }
        self.inner.handle(event).await
    }
}

#[tokio::test]
async fn transient_failures_are_retried_without_skipping() {
    let (_, kafka) = setup("consumer-retry").await;
    let publisher = KafkaPublisher::new(&kafka).unwrap();
    let events: Vec<_> = (0..3).map(|_| event(InstanceId::new_random())).collect();
    assert!(publisher.publish_batch(&events).await.error.is_none());

    let flaky =
        Arc::new(Flaky { failures_left: AtomicU32::new(4), inner: RecordingHandler::new() });
    let runner = Arc::new(
        KafkaConsumerRunner::new(config(&kafka, &unique_name("group")), flaky.clone()).unwrap(),
    );
    let (cancel, handle) = spawn(runner);
    handled(&flaky.inner, 3).await;
    let stats = stop(cancel, handle).await;
    assert_eq!(stats.retries, 4);
    assert_eq!(stats.dead_lettered, 0);
    assert_eq!(flaky.inner.events().len(), 3);
}

/// Blocks every event until released.
struct Gate {
    open: tokio::sync::Semaphore,
    inner: RecordingHandler,
}

#[async_trait]
impl EventHandler for Gate {
    fn name(&self) -> &str {
        "gate"
    }

    async fn handle(&self, event: &InfrastructureEvent) -> Result<(), HandlerError> {
        let permit = self.open.acquire().await.map_err(|e| HandlerError::Permanent(Box::new(e)))?;
        permit.forget();
        self.inner.handle(event).await
    }
}

#[tokio::test]
async fn lag_shows_the_events_waiting_behind_a_slow_handler() {
    let (_, kafka) = setup("consumer-lag").await;
    let publisher = KafkaPublisher::new(&kafka).unwrap();
    let instance = InstanceId::new_random();
    let events: Vec<_> = (0..10).map(|_| event(instance)).collect();
    assert!(publisher.publish_batch(&events).await.error.is_none());

    let gate =
        Arc::new(Gate { open: tokio::sync::Semaphore::new(1), inner: RecordingHandler::new() });
    let runner = Arc::new(
        KafkaConsumerRunner::new(config(&kafka, &unique_name("group")), gate.clone()).unwrap(),
    );
    let (cancel, handle) = spawn(runner.clone());
    // One event passes; the rest wait behind the closed gate.
    let lag = eventually(Duration::from_secs(30), || async {
        let stats = runner.stats();
        if stats.handled == 1 && stats.lag >= 8 { Ok(stats.lag) } else { Err(stats) }
    })
    .await
    .unwrap();
    assert!(lag <= 9, "lag {lag}");
    gate.open.add_permits(100);
    eventually(Duration::from_secs(30), || async {
        let stats = runner.stats();
        if stats.handled == 10 && stats.lag == 0 { Ok(()) } else { Err(stats) }
    })
    .await
    .unwrap();
    stop(cancel, handle).await;
}

/// What librdkafka has already fetched is handed over in batches, capped by the configured
/// `max_batch`, in order, each event once.
#[tokio::test]
async fn buffered_messages_are_handed_over_in_batches_up_to_the_limit() {
    let (_, kafka) = setup("consumer-batches").await;
    let publisher = KafkaPublisher::new(&kafka).unwrap();
    let instance = InstanceId::new_random();
    let events: Vec<_> = (0..60).map(|_| event(instance)).collect();
    assert!(publisher.publish_batch(&events).await.error.is_none());

    // Started after the events are on the broker: its first fetch brings many at once.
    let recorder = Arc::new(RecordingHandler::new());
    let mut config = config(&kafka, &unique_name("group"));
    config.max_batch = 25;
    let runner = Arc::new(KafkaConsumerRunner::new(config, recorder.clone()).unwrap());
    let (cancel, handle) = spawn(runner);
    handled(&recorder, events.len()).await;
    let stats = stop(cancel, handle).await;

    assert_eq!(recorder.events(), events, "every event once, in order");
    assert_eq!(stats.handled, 60);
    let sizes = recorder.batch_sizes();
    assert_eq!(sizes.iter().sum::<usize>(), 60, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n <= 25), "the limit holds: {sizes:?}");
    assert!(sizes.iter().any(|&n| n > 1), "buffered messages formed batches: {sizes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_runner_reads_only_what_is_published_after_each_start() {
    let (_, kafka) = setup("consumer-standalone").await;
    let publisher = KafkaPublisher::new(&kafka).unwrap();
    let before = event(InstanceId::new_random());
    assert!(publisher.publish_batch(std::slice::from_ref(&before)).await.error.is_none());
    let name = unique_name("standalone");
    for start in 1..=10 {
        let recorder = Arc::new(RecordingHandler::new());
        let mut standalone = ConsumerConfig::standalone(kafka.clone(), &name);
        standalone.backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(100));
        let runner = Arc::new(KafkaConsumerRunner::new(standalone, recorder.clone()).unwrap());
        let (cancel, handle) = spawn(runner.clone());
        // It reads from the end of every partition once it holds them all.
        eventually(Duration::from_secs(30), || async {
            let assigned = runner.assignment().map_err(|e| e.to_string())?;
            if assigned == [0, 1, 2] { Ok(()) } else { Err(format!("{assigned:?}")) }
        })
        .await
        .unwrap_or_else(|err| panic!("start {start}: {err}"));
        let after = event(InstanceId::new_random());
        // Published until it arrives: the end offsets are resolved just after the assignment.
        eventually(Duration::from_secs(30), || async {
            if recorder.events().iter().any(|e| e.id == after.id) {
                return Ok(());
            }
            let outcome = publisher.publish_batch(std::slice::from_ref(&after)).await;
            Err(outcome.error.map(|e| e.to_string()))
        })
        .await
        .unwrap_or_else(|err| panic!("start {start}: {err}"));
        stop(cancel, handle).await;
        assert!(
            recorder.events().iter().all(|e| e.id != before.id),
            "start {start}: read an event published before it started"
        );
    }
}
