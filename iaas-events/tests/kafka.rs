//! The Kafka publisher and the relay against the real broker.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iaas_core::{EventPublisher, InfrastructureEvent, SystemClock};
use iaas_events::kafka::{
    HEADER_EVENT_ID, HEADER_EVENT_NAME, KafkaConfig, KafkaPublisher, ensure_topic,
};
use iaas_events::{OutboxRelay, RelayConfig};
use iaas_store::{SqliteConfig, SqliteStore};
use iaas_testkit::isolation::{topic_name, unique_name};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use tokio_util::sync::CancellationToken;

mod common;

/// How long a cancelled relay may take to stop (it finishes the round in flight, whose
/// deliveries are bounded by the producer's delivery timeout).
const STOP_DEADLINE: Duration = Duration::from_secs(30);

async fn topic(brokers: &str, test: &str) -> KafkaConfig {
    let mut config = KafkaConfig::new(brokers);
    config.topic = topic_name(test);
    ensure_topic(&config, &config.topic, 3, 1, Duration::from_secs(10)).await.unwrap();
    config
}

/// Reads `count` messages from the start of `topic` in a fresh consumer group; returns the
/// decoded events and the event-name headers.
async fn consume(brokers: &str, topic: &str, count: usize) -> Vec<(InfrastructureEvent, String)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_name("events-test"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::with_capacity(count);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < count {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} messages arrived", out.len()))
            .unwrap();
        let event = InfrastructureEvent::from_json(message.payload().unwrap()).unwrap();
        assert_eq!(
            message.key(),
            Some(event.instance_id.to_string().as_bytes()),
            "keyed by instance id"
        );
        let headers = message.headers().unwrap();
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
                .unwrap()
        };
        assert_eq!(header(HEADER_EVENT_ID), event.id.to_string());
        out.push((event, header(HEADER_EVENT_NAME)));
    }
    out
}

#[tokio::test]
async fn a_published_event_arrives_keyed_with_its_name_in_a_header() {
    let broker = iaas_testkit::kafka().await.unwrap();
    let config = topic(broker.url(), "publish").await;
    let publisher = KafkaPublisher::new(&config).unwrap();
    let event = InfrastructureEvent::new(
        iaas_core::InstanceId::new_random(),
        iaas_core::UserId::new_random(),
        iaas_core::InstanceKind::Postgres,
        iaas_core::EventAction::Started,
        chrono::Utc::now(),
    )
    .with_metadata("container_id", "abc");
    publisher.publish(&event).await.unwrap();

    let received = consume(broker.url(), &config.topic, 1).await;
    assert_eq!(received[0].0, event);
    assert_eq!(received[0].1, "postgres.started");
}

#[tokio::test]
async fn an_unreachable_broker_is_a_bounded_unavailable_error() {
    let mut config = KafkaConfig::new("127.0.0.1:1");
    config.delivery_timeout = Duration::from_secs(1);
    let publisher = KafkaPublisher::new(&config).unwrap();
    let event = InfrastructureEvent::new(
        iaas_core::InstanceId::new_random(),
        iaas_core::UserId::new_random(),
        iaas_core::InstanceKind::Nginx,
        iaas_core::EventAction::Created,
        chrono::Utc::now(),
    );
    let started = Instant::now();
    let err = publisher.publish(&event).await.unwrap_err();
    assert!(matches!(err, iaas_core::Error::Unavailable { backend: "kafka", .. }), "{err:?}");
    assert!(err.to_string().contains(&event.id.to_string()), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn the_relay_moves_a_sqlite_outbox_to_kafka_in_order() {
    let broker = iaas_testkit::kafka().await.unwrap();
    let config = topic(broker.url(), "relay").await;
    let dir = std::env::temp_dir().join(unique_name("iaas-events"));
    std::fs::create_dir_all(&dir).unwrap();
    let store =
        Arc::new(SqliteStore::open(&SqliteConfig::new(dir.join("outbox.db"))).await.unwrap());
    let written = common::write_events(store.as_ref(), 10, 9).await;

    let publisher = Arc::new(KafkaPublisher::new(&config).unwrap());
    let mut relay_config = RelayConfig::new("relay-kafka");
    relay_config.idle_interval = Duration::from_millis(20);
    let relay =
        Arc::new(OutboxRelay::new(store.clone(), publisher, Arc::new(SystemClock), relay_config));
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let (relay, cancel) = (relay.clone(), cancel.clone());
        async move { relay.run(cancel).await }
    });

    let received = consume(broker.url(), &config.topic, 100).await;
    let mut per_instance: HashMap<_, Vec<_>> = HashMap::new();
    for (event, _) in &received {
        per_instance.entry(event.instance_id).or_default().push(event.id);
    }
    assert_eq!(per_instance, written, "every event once, in commit order per instance");

    cancel.cancel();
    let report = tokio::time::timeout(STOP_DEADLINE, running)
        .await
        .expect("the relay stopped within 30 s of its cancellation")
        .unwrap();
    assert_eq!(report.stats.published, 100);
    std::fs::remove_dir_all(dir).unwrap();
}
