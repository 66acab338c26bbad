use std::time::{Duration, Instant};

use async_trait::async_trait;
use iaas_core::{BatchOutcome, Error, EventPublisher, InfrastructureEvent, Result};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::config::KafkaConfig;
use crate::error::EventsError;

/// Header carrying the event name (`postgres.started`).
pub const HEADER_EVENT_NAME: &str = "event-name";
/// Header carrying the event id, for consumers that deduplicate before decoding.
pub const HEADER_EVENT_ID: &str = "event-id";
/// Header carrying the envelope version.
pub const HEADER_EVENT_VERSION: &str = "event-version";
/// Header carrying the payload's media type.
pub const HEADER_CONTENT_TYPE: &str = "content-type";

/// Extra wait beyond `message.timeout.ms` for librdkafka's delivery report, which it promises
/// within that time; past it the report is treated as lost.
const REPORT_GRACE: Duration = Duration::from_secs(5);

/// Publishes events to one Kafka topic, keyed by instance id.
///
/// "Published" means the broker acknowledged the message (the delivery report came back), never
/// merely that it was queued in the client.
pub struct KafkaPublisher {
    producer: FutureProducer,
    topic: String,
    report_timeout: Duration,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    /// A publisher with these settings. Connecting happens in the background; an unreachable
    /// broker shows up as failed publishes, not here.
    pub fn new(config: &KafkaConfig) -> Result<Self, EventsError> {
        config.validate()?;
        let producer: FutureProducer = config.client_config().create().map_err(|source| {
            EventsError::Client { client: "producer", brokers: config.brokers.clone(), source }
        })?;
        Ok(Self {
            producer,
            topic: config.topic.clone(),
            report_timeout: config.delivery_timeout + REPORT_GRACE,
        })
    }

    /// The topic events go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Waits up to `timeout` for every queued message to be delivered (on shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.producer.flush(timeout).map_err(|err| {
            Error::unavailable("kafka", format!("flushing the producer for {}", self.topic), err)
        })
    }

    fn enqueue(&self, event: &InfrastructureEvent) -> Result<DeliveryFuture> {
        let payload = event.to_json();
        let key = event.instance_id.to_string();
        let name = event.name();
        let id = event.id.to_string();
        let version = event.version.to_string();
        let headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header { key: HEADER_EVENT_NAME, value: Some(name.as_str()) })
            .insert(Header { key: HEADER_EVENT_ID, value: Some(id.as_str()) })
            .insert(Header { key: HEADER_EVENT_VERSION, value: Some(version.as_str()) })
            .insert(Header { key: HEADER_CONTENT_TYPE, value: Some("application/json") });
        let record = FutureRecord::to(&self.topic).key(&key).payload(&payload).headers(headers);
        self.producer.send_result(record).map_err(|(err, _)| self.error(event, err))
    }

    fn error(&self, event: &InfrastructureEvent, err: KafkaError) -> Error {
        let operation =
            format!("publishing event {} ({}) to {}", event.id, event.name(), self.topic);
        let permanent = matches!(
            err.rdkafka_error_code(),
            Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessage)
        );
        if permanent {
            Error::Internal { operation, source: Box::new(err) }
        } else {
            Error::unavailable("kafka", operation, err)
        }
    }

    async fn await_report(
        &self,
        event: &InfrastructureEvent,
        delivery: DeliveryFuture,
    ) -> Result<()> {
        match tokio::time::timeout(self.report_timeout, delivery).await {
            Ok(Ok(Ok(_delivery))) => Ok(()),
            Ok(Ok(Err((err, _message)))) => Err(self.error(event, err)),
            Ok(Err(_canceled)) => Err(self.error(event, KafkaError::Canceled)),
            Err(_elapsed) => Err(Error::unavailable(
                "kafka",
                format!("waiting for the delivery report of event {} on {}", event.id, self.topic),
                format!("no report within {:?}", self.report_timeout),
            )),
        }
    }
}

#[async_trait]
impl EventPublisher for KafkaPublisher {
    async fn publish(&self, event: &InfrastructureEvent) -> Result<()> {
        let outcome = self.publish_batch(std::slice::from_ref(event)).await;
        match outcome.error {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Queues every event at once (librdkafka pipelines them; the idempotent producer keeps
    /// their order per partition), then collects the delivery reports in order.
    async fn publish_batch(&self, events: &[InfrastructureEvent]) -> BatchOutcome {
        let started = Instant::now();
        let mut deliveries = Vec::with_capacity(events.len());
        let mut enqueue_error = None;
        for event in events {
            match self.enqueue(event) {
                Ok(delivery) => deliveries.push(delivery),
                Err(err) => {
                    enqueue_error = Some(err);
                    break;
                }
            }
        }
        // Every report is awaited, even after a failure, so none is abandoned mid-flight; only
        // the deliveries before the first failure count, so `published` is a prefix.
        let mut published = 0;
        let mut report_error = None;
        for (event, delivery) in events.iter().zip(deliveries) {
            match self.await_report(event, delivery).await {
                Ok(()) if report_error.is_none() => published += 1,
                Ok(()) => {}
                Err(err) => {
                    report_error.get_or_insert(err);
                }
            }
        }
        let error = report_error.or(enqueue_error);
        metrics::counter!("iaas_events_published_total", "topic" => self.topic.clone())
            .increment(published as u64);
        if error.is_some() {
            metrics::counter!("iaas_events_publish_errors_total", "topic" => self.topic.clone())
                .increment(1);
        }
        metrics::histogram!("iaas_events_publish_seconds", "topic" => self.topic.clone())
            .record(started.elapsed().as_secs_f64());
        BatchOutcome { published, error }
    }
}
