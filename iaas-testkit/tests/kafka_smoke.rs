//! Proves the broker the suite uses speaks Kafka: keyed messages produced with an idempotent
//! producer come back through a consumer group, every one of them.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use std::collections::BTreeSet;
use std::time::Duration;

use iaas_testkit::isolation::{topic_name, unique_name};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

const MESSAGES: usize = 200;
/// How long each step (creating the topic, producing, consuming) may take: a broker that
/// accepts connections but does not answer fails the test naming the step, instead of hanging
/// CI (librdkafka retries requests to such a broker until its own, much longer, timeouts).
const STEP_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn produce_then_consume_in_a_consumer_group() {
    let service = iaas_testkit::kafka().await.unwrap();
    let topic = topic_name("smoke");

    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", service.url()).create().unwrap();
    let new_topic = [NewTopic::new(&topic, 3, TopicReplication::Fixed(1))];
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created = tokio::time::timeout(STEP_DEADLINE, admin.create_topics(&new_topic, &options))
        .await
        .unwrap_or_else(|_| panic!("topic {topic} not created within {STEP_DEADLINE:?}"))
        .unwrap();
    for result in created {
        result.unwrap();
    }

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", service.url())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    let producing = async {
        for i in 0..MESSAGES {
            let key = format!("instance-{}", i % 7);
            let payload = format!("event-{i}");
            producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&payload),
                    Timeout::After(Duration::from_secs(30)),
                )
                .await
                .map_err(|(err, _)| err)
                .unwrap();
        }
    };
    tokio::time::timeout(STEP_DEADLINE, producing)
        .await
        .unwrap_or_else(|_| panic!("{MESSAGES} messages not produced within {STEP_DEADLINE:?}"));

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", service.url())
        .set("group.id", unique_name("smoke-group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();

    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + STEP_DEADLINE;
    while seen.len() < MESSAGES {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {MESSAGES} messages arrived", seen.len()))
            .unwrap();
        let payload = std::str::from_utf8(message.payload().unwrap()).unwrap().to_owned();
        assert!(message.key().is_some_and(|k| k.starts_with(b"instance-")));
        seen.insert(payload);
    }
    let expected: BTreeSet<_> = (0..MESSAGES).map(|i| format!("event-{i}")).collect();
    assert_eq!(seen, expected);
}
