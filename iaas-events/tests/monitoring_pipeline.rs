//! The indexer as a consumer handler: events published to the in-process bus and to the real
//! Kafka broker end up in the embedded index exactly once, even when they are delivered twice.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

#[allow(dead_code, reason = "only the suite's event helpers are used here")]
mod log_index_suite;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use iaas_core::{
    EventAction, EventPublisher, InfrastructureEvent, InstanceId, InstanceKind, UserId,
};
use iaas_events::InProcessBus;
use iaas_events::monitoring::{
    LogIndex, LogQuery, MonitoringIndexer, SqliteIndexConfig, SqliteLogIndex,
};
use log_index_suite as suite;

struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name(test));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn index_in(dir: &TempDir) -> Arc<SqliteLogIndex> {
    Arc::new(SqliteLogIndex::open(&SqliteIndexConfig::new(dir.0.join("logs.db"))).await.unwrap())
}

fn events(user: UserId, n: i64) -> Vec<InfrastructureEvent> {
    // Three instances interleaved, as several partitions would carry them.
    let instances = [InstanceId::new_random(), InstanceId::new_random(), InstanceId::new_random()];
    (0..n)
        .map(|i| {
            let instance = instances[usize::try_from(i).unwrap() % instances.len()];
            suite::event(user, instance, InstanceKind::Nginx, EventAction::Restarted, i)
        })
        .collect()
}

/// The distinct event ids indexed for `user`, failing on any duplicate.
async fn indexed_once(index: &dyn LogIndex, user: UserId) -> HashSet<iaas_core::EventId> {
    let entries = suite::all_pages(index, LogQuery::for_user(user).limit(500)).await;
    let ids: HashSet<_> = entries.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), entries.len(), "an event was indexed twice");
    ids
}

#[tokio::test]
async fn in_process_bus_indexes_every_event_once_even_when_published_twice() {
    let dir = TempDir::new("pipeline-in-process");
    let index = index_in(&dir).await;
    let bus = InProcessBus::new();
    bus.subscribe("monitoring-consumer-group", Arc::new(MonitoringIndexer::new(index.clone())));
    let user = UserId::new_random();
    let events = events(user, 40);
    for event in events.iter().chain(&events) {
        bus.publish(event).await.unwrap();
    }
    let expected: HashSet<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(indexed_once(index.as_ref(), user).await, expected);
    assert!(bus.dead_letters().is_empty());
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn kafka_consumer_indexes_every_event_once_even_when_redelivered() {
    use std::time::Duration;

    use iaas_events::Backoff;
    use iaas_events::kafka::{
        ConsumerConfig, KafkaConfig, KafkaConsumerRunner, KafkaPublisher, ensure_topic,
    };
    use iaas_testkit::isolation::{topic_name, unique_name};
    use iaas_testkit::wait::eventually;
    use tokio_util::sync::CancellationToken;

    let broker = iaas_testkit::kafka().await.unwrap();
    let mut kafka = KafkaConfig::new(broker.url());
    kafka.topic = topic_name("monitoring-pipeline");
    ensure_topic(&kafka, &kafka.topic, 3, 1, Duration::from_secs(10)).await.unwrap();
    ensure_topic(&kafka, &format!("{}.dlq", kafka.topic), 1, 1, Duration::from_secs(10))
        .await
        .unwrap();

    let dir = TempDir::new("pipeline-kafka");
    let index = index_in(&dir).await;
    let mut config = ConsumerConfig::new(kafka.clone(), unique_name("monitoring"));
    config.backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(200));
    let runner = Arc::new(
        KafkaConsumerRunner::new(config, Arc::new(MonitoringIndexer::new(index.clone()))).unwrap(),
    );
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (runner, cancel) = (runner.clone(), cancel.clone());
        async move { runner.run(cancel).await }
    });

    let user = UserId::new_random();
    let events = events(user, 60);
    let publisher = KafkaPublisher::new(&kafka).unwrap();
    // Every event twice on the broker: what a relay retrying after a lost acknowledgement does.
    for event in events.iter().chain(&events) {
        publisher.publish(event).await.unwrap();
    }
    eventually(Duration::from_secs(60), || async {
        let handled = runner.stats().handled;
        if handled >= 120 { Ok(()) } else { Err(handled) }
    })
    .await
    .unwrap();

    let expected: HashSet<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(indexed_once(index.as_ref(), user).await, expected);
    cancel.cancel();
    let stats = run.await.unwrap();
    assert_eq!(stats.dead_lettered, 0);
}
