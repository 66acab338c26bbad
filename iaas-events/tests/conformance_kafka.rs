//! The conformance suite on the real Kafka-protocol broker: `KafkaPublisher` publishing,
//! `KafkaConsumerRunner` members consuming, a fresh 3-partition topic per case.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod conformance;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conformance::{
    BoxFuture, BusUnderTest, Capabilities, DELIVERY_DEADLINE, Letter, RunningMember, Support,
    conformance_suite,
};
use iaas_core::{EventHandler, EventPublisher, InfrastructureEvent};
use iaas_events::Backoff;
use iaas_events::kafka::{
    ConsumerConfig, ConsumerStats, HEADER_DLQ_ERROR, HEADER_DLQ_GROUP, HEADER_DLQ_ORIGIN,
    KafkaConfig, KafkaConsumerRunner, KafkaPublisher, ensure_topic,
};
use iaas_testkit::isolation::{topic_name, unique_name};
use iaas_testkit::wait::eventually;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 3;
/// The longest one Kafka step of a case (a publish, a member's stop) may take. A wedged broker
/// must fail the case with the step's name, not hang CI until the job's time limit.
const STEP_DEADLINE: Duration = Duration::from_secs(60);

/// Awaits `step`, failing the case with `what` when it takes longer than [`STEP_DEADLINE`].
async fn bounded<T>(what: impl std::fmt::Display, step: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP_DEADLINE, step).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: not done within {STEP_DEADLINE:?} (is the broker wedged?)"),
    }
}

struct KafkaBus {
    _broker: iaas_testkit::Service,
    kafka: KafkaConfig,
    publisher: KafkaPublisher,
    raw: FutureProducer,
}

async fn kafka_bus(case: &str) -> Arc<dyn BusUnderTest> {
    let broker = iaas_testkit::kafka().await.unwrap();
    let mut kafka = KafkaConfig::new(broker.url());
    kafka.topic = topic_name(&case.replace('_', "-"));
    ensure_topic(&kafka, &kafka.topic, PARTITIONS, 1, Duration::from_secs(10)).await.unwrap();
    ensure_topic(&kafka, &format!("{}.dlq", kafka.topic), 1, 1, Duration::from_secs(10))
        .await
        .unwrap();
    let publisher = KafkaPublisher::new(&kafka).unwrap();
    let raw = ClientConfig::new().set("bootstrap.servers", &kafka.brokers).create().unwrap();
    Arc::new(KafkaBus { _broker: broker, kafka, publisher, raw })
}

struct KafkaMember {
    cancel: CancellationToken,
    running: tokio::task::JoinHandle<ConsumerStats>,
}

impl RunningMember for KafkaMember {
    fn stop(self: Box<Self>) -> BoxFuture<()> {
        self.cancel.cancel();
        // The task owns the runner: when `run` returns, the consumer is dropped and leaves the
        // group, so a successor gets the partitions without waiting for a session timeout.
        Box::pin(async move {
            let stats =
                bounded("a kafka member stopping (final commit, leaving the group)", self.running)
                    .await
                    .unwrap();
            eprintln!("kafka member stopped: {stats:?}");
        })
    }
}

#[async_trait]
impl BusUnderTest for KafkaBus {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { raw_payloads: Support::Yes, dead_letter_origin: Support::Yes }
    }

    async fn publish(&self, events: &[InfrastructureEvent]) -> Result<(), String> {
        let outcome = bounded(
            format!("publishing {} events to {}", events.len(), self.kafka.topic),
            self.publisher.publish_batch(events),
        )
        .await;
        match outcome.error {
            None if outcome.published == events.len() => Ok(()),
            None => Err(format!("{} of {} published", outcome.published, events.len())),
            Some(error) => Err(error.to_string()),
        }
    }

    async fn publish_raw(&self, key: &str, payload: &[u8]) -> Result<(), String> {
        let sending = self.raw.send(
            FutureRecord::to(&self.kafka.topic).key(key).payload(payload),
            Duration::from_secs(10),
        );
        bounded(format!("publishing raw bytes to {}", self.kafka.topic), sending)
            .await
            .map(drop)
            .map_err(|(error, _)| error.to_string())
    }

    async fn start_group(
        &self,
        group: &str,
        handlers: Vec<Arc<dyn EventHandler>>,
    ) -> Vec<Box<dyn RunningMember>> {
        let mut runners = Vec::new();
        let mut members: Vec<Box<dyn RunningMember>> = Vec::new();
        for handler in handlers {
            let mut config = ConsumerConfig::new(self.kafka.clone(), group);
            config.backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(200));
            config.lag_interval = Duration::from_secs(1);
            let runner = Arc::new(KafkaConsumerRunner::new(config, handler).unwrap());
            let cancel = CancellationToken::new();
            let running = tokio::spawn({
                let (runner, cancel) = (runner.clone(), cancel.clone());
                async move { runner.run(cancel).await }
            });
            runners.push(runner);
            members.push(Box::new(KafkaMember { cancel, running }));
        }
        // Settled: every partition held by exactly one member, every member holding some.
        eventually(Duration::from_secs(45), || async {
            let assignments: Vec<Vec<i32>> =
                runners.iter().map(|r| r.assignment().unwrap()).collect();
            let mut all: Vec<i32> = assignments.concat();
            all.sort_unstable();
            let expected: Vec<i32> = (0..PARTITIONS).collect();
            if all == expected && assignments.iter().all(|a| !a.is_empty()) {
                Ok(())
            } else {
                Err(assignments)
            }
        })
        .await
        .unwrap();
        members
    }

    async fn dead_letters(&self, group: &str, count: usize) -> Vec<Letter> {
        let reader: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.kafka.brokers)
            .set("group.id", unique_name("dlq-reader"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        reader.subscribe(&[&format!("{}.dlq", self.kafka.topic)]).unwrap();
        let deadline = tokio::time::Instant::now() + DELIVERY_DEADLINE;
        let mut letters = Vec::new();
        while letters.len() < count {
            let message = tokio::time::timeout_at(deadline, reader.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} of {count} dead letters", letters.len()))
                .unwrap();
            let header = |name: &str| {
                message.headers().and_then(|headers| {
                    headers
                        .iter()
                        .find(|h| h.key == name)
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
            };
            if header(HEADER_DLQ_GROUP).as_deref() != Some(group) {
                continue;
            }
            letters.push(Letter {
                event_id: message
                    .payload()
                    .and_then(|p| InfrastructureEvent::from_json(p).ok())
                    .map(|e| e.id),
                error: header(HEADER_DLQ_ERROR).unwrap_or_default(),
                origin: header(HEADER_DLQ_ORIGIN),
                payload: message.payload().map(<[u8]>::to_vec),
            });
        }
        letters
    }
}

conformance_suite!(kafka_bus);
