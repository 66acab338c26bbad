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

/// A relay of `store` to `config`'s topic, running until the token is cancelled.
fn spawn_relay(
    store: Arc<SqliteStore>,
    config: &KafkaConfig,
    relay_config: RelayConfig,
) -> (CancellationToken, tokio::task::JoinHandle<iaas_events::RelayReport>) {
    let publisher = Arc::new(KafkaPublisher::new(config).unwrap());
    let relay = OutboxRelay::new(store, publisher, Arc::new(SystemClock), relay_config);
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let cancel = cancel.clone();
        async move { relay.run(cancel).await }
    });
    (cancel, running)
}

/// The ids of `received`, per instance in the order they arrived.
fn per_instance(
    received: &[(InfrastructureEvent, String)],
) -> HashMap<iaas_core::InstanceId, Vec<iaas_core::EventId>> {
    let mut per_instance: HashMap<_, Vec<_>> = HashMap::new();
    for (event, _) in received {
        per_instance.entry(event.instance_id).or_default().push(event.id);
    }
    per_instance
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

    let mut relay_config = RelayConfig::new("relay-kafka");
    relay_config.idle_interval = Duration::from_millis(20);
    let (cancel, running) = spawn_relay(store.clone(), &config, relay_config);

    let received = consume(broker.url(), &config.topic, 100).await;
    assert_eq!(per_instance(&received), written, "every event once, in commit order per instance");

    cancel.cancel();
    let report = tokio::time::timeout(STOP_DEADLINE, running)
        .await
        .expect("the relay stopped within 30 s of its cancellation")
        .unwrap();
    assert_eq!(report.stats.published, 100);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_poison_event_is_parked_while_a_thousand_later_ones_are_published_in_order() {
    let broker = iaas_testkit::kafka().await.unwrap();
    let config = topic(broker.url(), "poison").await;
    let dir = std::env::temp_dir().join(unique_name("iaas-events"));
    std::fs::create_dir_all(&dir).unwrap();
    let store =
        Arc::new(SqliteStore::open(&SqliteConfig::new(dir.join("outbox.db"))).await.unwrap());

    // The first event of one instance is larger than the broker takes (the producer's
    // message.max.bytes, 1,000,000 by default): refused for good, every time.
    let owner = iaas_core::UserId::new_random();
    let poisoned = iaas_core::Instance::new(
        owner,
        iaas_core::InstanceName::new("poisoned").unwrap(),
        iaas_core::InstanceSpec::Nginx(iaas_core::NginxSpec::default()),
        iaas_core::Resources::default(),
        chrono::Utc::now(),
    )
    .unwrap();
    let poison = InfrastructureEvent::new(
        poisoned.id,
        owner,
        poisoned.kind(),
        iaas_core::EventAction::Created,
        chrono::Utc::now(),
    )
    .with_metadata("blob", "x".repeat(2 * 1024 * 1024));
    iaas_core::InstanceRepository::create_instance(store.as_ref(), &poisoned, &poison)
        .await
        .unwrap();
    // 1,000 events behind it: 10 more of the poisoned instance, 990 of 99 others.
    let mut written: HashMap<_, Vec<_>> = HashMap::new();
    for step in 0..10 {
        let to = if step % 2 == 0 {
            iaas_core::InstanceStatus::Running
        } else {
            iaas_core::InstanceStatus::Stopped
        };
        let event = InfrastructureEvent::new(
            poisoned.id,
            owner,
            poisoned.kind(),
            iaas_core::EventAction::for_status(to),
            chrono::Utc::now(),
        );
        written.entry(poisoned.id).or_default().push(event.id);
        iaas_core::InstanceRepository::update_status(
            store.as_ref(),
            iaas_core::StatusChange {
                id: poisoned.id,
                expected_version: None,
                to,
                event,
                at: chrono::Utc::now(),
            },
        )
        .await
        .unwrap();
    }
    written.extend(common::write_events(store.as_ref(), 99, 9).await);

    let mut relay_config = RelayConfig::new("relay-poison");
    relay_config.idle_interval = Duration::from_millis(20);
    relay_config.backoff =
        iaas_events::Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
    relay_config.max_attempts = 3;
    let (cancel, running) = spawn_relay(store.clone(), &config, relay_config);

    let received = consume(broker.url(), &config.topic, 1000).await;
    assert!(
        received.iter().all(|(event, _)| event.id != poison.id),
        "the poison event was published"
    );
    assert_eq!(
        per_instance(&received),
        written,
        "every later event once, in commit order per instance"
    );

    cancel.cancel();
    let report = tokio::time::timeout(STOP_DEADLINE, running)
        .await
        .expect("the relay stopped within 30 s of its cancellation")
        .unwrap();
    assert_eq!((report.stats.published, report.stats.parked), (1000, 1));
    let parked = iaas_core::Outbox::parked(store.as_ref(), 10).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!((parked[0].entry.event.id, parked[0].attempts), (poison.id, 3));
    assert!(parked[0].error.contains("too large"), "{}", parked[0].error);
    let stats = iaas_core::Outbox::stats(store.as_ref()).await.unwrap();
    assert_eq!((stats.pending, stats.parked), (0, 1));
    std::fs::remove_dir_all(dir).unwrap();
}
