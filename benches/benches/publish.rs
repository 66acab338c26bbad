//! Publish throughput of `KafkaPublisher` beside a raw rdkafka `FutureProducer` built from the
//! very same librdkafka settings (`KafkaConfig::client_config`), on the same broker and topic, in
//! the same run. Throughput is in events.
//!
//! - `batch/*`: 1,000 events, every one queued before any delivery report is awaited (what the
//!   outbox relay does with a claimed batch): `KafkaPublisher::publish_batch` against a loop of
//!   `send_result` followed by awaiting every `DeliveryFuture`.
//! - `single/*`: one event, awaited until the broker acknowledged it (`publish`), against one
//!   `send` awaited the same way.
//! - `kafka_linger_*`: the publisher with the default `linger` against one with the 10 ms it
//!   had before, one event and a batch, so a shorter linger shows what it costs batches.
//!
//! The raw side does the work any hand-written producer of these events must do (JSON payload,
//! instance-id key, the same four headers), so the ratio is the cost of the wrapper: its delivery
//! semantics, error mapping, timeout and metrics.
//!
//! Each timed call follows an untimed call of the other side (paired measurement), so both
//! sides meet the broker in the same state.
//!
//! The broker comes from `IAAS_TEST_KAFKA_BROKERS` (or a container, see `iaas-testkit`).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a bench panics to report a failure")]

use std::time::Duration;

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iaas_core::{
    EventAction, EventPublisher, InfrastructureEvent, InstanceId, InstanceKind, UserId,
};
use iaas_events::kafka::{
    HEADER_CONTENT_TYPE, HEADER_EVENT_ID, HEADER_EVENT_NAME, HEADER_EVENT_VERSION, KafkaConfig,
    KafkaPublisher, ensure_topic,
};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

const BATCH: usize = 1_000;
const INSTANCES: usize = 50;
const PARTITIONS: i32 = 3;

fn events(count: usize) -> Vec<InfrastructureEvent> {
    let instances: Vec<_> = (0..INSTANCES).map(|_| InstanceId::new_random()).collect();
    let user = UserId::new_random();
    (0..count)
        .map(|i| {
            InfrastructureEvent::new(
                instances[i % INSTANCES],
                user,
                InstanceKind::Postgres,
                EventAction::Started,
                Utc::now(),
            )
            .with_metadata("container_id", "3f2a9c0d")
        })
        .collect()
}

/// What a hand-written producer of these events queues: the publisher's record, byte for byte.
fn raw_send(
    producer: &FutureProducer,
    topic: &str,
    event: &InfrastructureEvent,
) -> rdkafka::producer::DeliveryFuture {
    let payload = event.to_json();
    let key = event.instance_id.to_string();
    let (name, id, version) = (event.name(), event.id.to_string(), event.version.to_string());
    let headers = OwnedHeaders::new_with_capacity(4)
        .insert(Header { key: HEADER_EVENT_NAME, value: Some(name.as_str()) })
        .insert(Header { key: HEADER_EVENT_ID, value: Some(id.as_str()) })
        .insert(Header { key: HEADER_EVENT_VERSION, value: Some(version.as_str()) })
        .insert(Header { key: HEADER_CONTENT_TYPE, value: Some("application/json") });
    producer
        .send_result(FutureRecord::to(topic).key(&key).payload(&payload).headers(headers))
        .map_err(|(err, _)| err)
        .unwrap()
}

async fn raw_batch(producer: &FutureProducer, topic: &str, events: &[InfrastructureEvent]) {
    let deliveries: Vec<_> = events.iter().map(|e| raw_send(producer, topic, e)).collect();
    for delivery in deliveries {
        delivery.await.unwrap().map_err(|(err, _)| err).unwrap();
    }
}

use iaas_benches::timing::paired;

fn publish(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = rt.block_on(iaas_testkit::kafka()).unwrap();
    let mut config = KafkaConfig::new(broker.url());
    config.topic = iaas_testkit::isolation::topic_name("bench-publish");
    rt.block_on(ensure_topic(&config, &config.topic, PARTITIONS, 1, Duration::from_secs(10)))
        .unwrap();
    let publisher = KafkaPublisher::new(&config).unwrap();
    // The same librdkafka properties the publisher was built from.
    let raw: FutureProducer = config.client_config().create().unwrap();
    let topic = config.topic.clone();
    let batch = events(BATCH);

    let publisher_batch = || async {
        let outcome = publisher.publish_batch(&batch).await;
        assert!(outcome.error.is_none() && outcome.published == BATCH, "{:?}", outcome.error);
    };
    let raw_batch = || raw_batch(&raw, &topic, &batch);
    let mut group = c.benchmark_group("kafka_publish_batch");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    // Paired (see `paired`): measured one side after the other, the two sides differed by
    // +-25% from run to run.
    group.bench_function("iaas_publisher", |b| {
        b.to_async(&rt).iter_custom(|iters| paired(iters, &raw_batch, &publisher_batch));
    });
    group.bench_function("raw_rdkafka", |b| {
        b.to_async(&rt).iter_custom(|iters| paired(iters, &publisher_batch, &raw_batch));
    });
    group.finish();

    let single = &batch[0];
    let publisher_one = || async { publisher.publish(single).await.unwrap() };
    let raw_one = || async {
        let delivery = raw_send(&raw, &topic, single);
        delivery.await.unwrap().map_err(|(err, _)| err).unwrap();
    };
    let mut group = c.benchmark_group("kafka_publish_single");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.bench_function("iaas_publisher", |b| {
        b.to_async(&rt).iter_custom(|iters| paired(iters, &raw_one, &publisher_one));
    });
    group.bench_function("raw_rdkafka", |b| {
        b.to_async(&rt).iter_custom(|iters| paired(iters, &publisher_one, &raw_one));
    });
    group.finish();

    // The default linger against the 10 ms the publisher had before, same broker and run: one
    // event's acknowledgement (what a lone change waits for) and a batch (what the relay does
    // under load), each timed call after an untimed one of the other side.
    let mut old_config = config.clone();
    old_config.linger = Duration::from_millis(10);
    let old = KafkaPublisher::new(&old_config).unwrap();
    let old_one = || async { old.publish(single).await.unwrap() };
    let mut group = c.benchmark_group("kafka_linger_single");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    let default_name = format!("linger_{}ms", config.linger.as_millis());
    group.bench_function(default_name.as_str(), |b| {
        b.to_async(&rt).iter_custom(|iters| paired(iters, &old_one, &publisher_one));
    });
    group.bench_function("linger_10ms", |b| {
        b.to_async(&rt).iter_custom(|iters| paired(iters, &publisher_one, &old_one));
    });
    group.finish();
    let old_batch = || async {
        let outcome = old.publish_batch(&batch).await;
        assert!(outcome.error.is_none() && outcome.published == BATCH, "{:?}", outcome.error);
    };
    let mut group = c.benchmark_group("kafka_linger_batch");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.bench_function(default_name.as_str(), |b| {
        b.to_async(&rt).iter_custom(|iters| paired(iters, &old_batch, &publisher_batch));
    });
    group.bench_function("linger_10ms", |b| {
        b.to_async(&rt).iter_custom(|iters| paired(iters, &publisher_batch, &old_batch));
    });
    group.finish();
    old.flush(Duration::from_secs(10)).unwrap();

    publisher.flush(Duration::from_secs(10)).unwrap();
    rdkafka::producer::Producer::flush(&raw, Timeout::After(Duration::from_secs(10))).unwrap();
    // A run leaves a few hundred thousand events behind; on the shared test broker (tansu on
    // sqlite) every request slows down as its storage grows, so the topic goes with the run.
    let admin: AdminClient<DefaultClientContext> = config.client_config().create().unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
    // tansu may still be deleting when the request times out (seen after a long run): the
    // figures above stand either way, so the bench says so rather than failing.
    match rt.block_on(admin.delete_topics(&[topic.as_str()], &options)) {
        Ok(results) => {
            for result in results {
                if let Err((name, code)) = result {
                    eprintln!("could not delete bench topic {name}: {code}");
                }
            }
        }
        Err(error) => eprintln!("deleting bench topic {topic}: {error} (check the broker)"),
    }
}

criterion_group!(benches, publish);
criterion_main!(benches);
