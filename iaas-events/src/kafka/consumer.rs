//! The consumer runner: drives any [`EventHandler`] from a Kafka consumer group, at least once.
//!
//! - **Batches, never waited for.** Once a message arrives, the runner takes what librdkafka has
//!   already fetched, without waiting, up to [`ConsumerConfig::max_batch`] (capped by
//!   [`EventHandler::max_batch`]), and hands it to [`EventHandler::handle_batch`]. A lone event
//!   goes at once; under load the batches grow by themselves, so a handler that writes a batch
//!   at once (the indexer) pays its write cost per batch.
//! - **At least once.** Offsets are stored only after the handler succeeded (or the message was
//!   dead-lettered), message by message in order; librdkafka commits stored offsets in the
//!   background and on shutdown. A crash redelivers what was in flight; handlers deduplicate on
//!   the event id.
//! - **Transient failures** (a dependency is down) retry with backoff the failed event and every
//!   message after it in the batch: its partition waits rather than skipping an event, and
//!   nothing before it is handled again.
//! - **Poison messages** (undecodable payloads, permanent handler failures) go to the dead-letter
//!   topic one by one, with the error and their origin in headers, and the partition moves on.
//! - **Shutdown** finishes the batch in hand, commits synchronously and leaves the group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use iaas_core::{EventHandler, HandlerError, InfrastructureEvent};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;

use super::config::KafkaConfig;
use crate::backoff::Backoff;
use crate::error::EventsError;

/// Header of a dead letter: why it could not be handled.
pub const HEADER_DLQ_ERROR: &str = "dlq-error";
/// Header of a dead letter: `topic/partition/offset` it came from.
pub const HEADER_DLQ_ORIGIN: &str = "dlq-origin";
/// Header of a dead letter: the consumer group that gave up on it.
pub const HEADER_DLQ_GROUP: &str = "dlq-group";

/// Consumer settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// Broker and topic settings (the topic consumed is `kafka.topic`); the dead-letter producer
    /// uses the same producer settings.
    pub kafka: KafkaConfig,
    /// Consumer group (`monitoring-consumer-group` for the indexer).
    pub group_id: String,
    /// Where poison messages go (default `{topic}.dlq`).
    pub dlq_topic: String,
    /// Delays between retries of a transient failure.
    pub backoff: Backoff,
    /// How often consumer lag is measured (default 5 s).
    pub lag_interval: Duration,
    /// Where a new group starts (`earliest` by default, so nothing published before the group
    /// existed is skipped).
    pub auto_offset_reset: String,
    /// The most messages handed to the handler at once (default 500; the handler's own
    /// [`EventHandler::max_batch`] caps it further). Only messages already fetched are taken:
    /// the runner never waits for a batch to fill.
    pub max_batch: usize,
    /// More librdkafka consumer properties, e.g. `fetch.wait.max.ms` (how long the broker may
    /// hold a fetch open; librdkafka's default is 500 ms, which a broker that does not answer a
    /// fetch as soon as data arrives adds to every event's latency). The runner's own settings
    /// (brokers, group, offset storing, `auto.offset.reset`) are applied after these and win.
    pub extra: BTreeMap<String, String>,
}

/// Default of [`ConsumerConfig::max_batch`]: the indexer's batch (one multi-row statement).
const DEFAULT_MAX_BATCH: usize = 500;

impl ConsumerConfig {
    /// Defaults for `group_id` on the topic of `kafka`.
    pub fn new(kafka: KafkaConfig, group_id: impl Into<String>) -> Self {
        let dlq_topic = format!("{}.dlq", kafka.topic);
        Self {
            kafka,
            group_id: group_id.into(),
            dlq_topic,
            backoff: Backoff::default(),
            lag_interval: Duration::from_secs(5),
            auto_offset_reset: "earliest".to_owned(),
            max_batch: DEFAULT_MAX_BATCH,
            extra: BTreeMap::new(),
        }
    }
}

/// Counters of a runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConsumerStats {
    /// Events the handler accepted.
    pub handled: u64,
    /// Handler calls that failed transiently and were retried.
    pub retries: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Total lag over the assigned partitions at the last measurement.
    pub lag: u64,
}

#[derive(Debug, Default)]
struct Counters {
    handled: AtomicU64,
    retries: AtomicU64,
    dead_lettered: AtomicU64,
    lag: AtomicU64,
}

/// Runs an [`EventHandler`] over a consumer group.
pub struct KafkaConsumerRunner {
    consumer: Arc<StreamConsumer>,
    dlq: FutureProducer,
    handler: Arc<dyn EventHandler>,
    config: ConsumerConfig,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for KafkaConsumerRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumerRunner")
            .field("group", &self.config.group_id)
            .field("handler", &self.handler.name())
            .field("stats", &self.stats())
            .finish()
    }
}

/// How handing a message (or a batch) over ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Handled, or dead-lettered: its offset may be stored.
    Done,
    /// Shutdown came first: nothing more is stored, the rest is redelivered.
    Cancelled,
}

/// A message of a batch as the runner sees it once decoded.
enum Slot {
    /// The `n`th event of the batch's event list.
    Event(usize),
    /// Not an event: dead-lettered with this reason.
    Poison(String),
}

/// The next message if librdkafka already has one, without waiting: `recv` is cancellation
/// safe, and a `recv` future polled once either takes a ready message or registers nothing
/// that outlives it.
fn ready_now<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// The consumer's librdkafka settings: `config.extra` first, then the runner's own, which win.
fn consumer_client_config(config: &ConsumerConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    for (key, value) in &config.extra {
        client.set(key, value);
    }
    client
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "true")
        // Offsets are stored by hand, after the handler succeeded.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", &config.auto_offset_reset);
    client
}

impl KafkaConsumerRunner {
    /// Subscribes `handler` to the topic in the configured group.
    pub fn new(
        config: ConsumerConfig,
        handler: Arc<dyn EventHandler>,
    ) -> Result<Self, EventsError> {
        config.kafka.validate()?;
        let client_error = |client: &'static str| {
            let brokers = config.kafka.brokers.clone();
            move |source| EventsError::Client { client, brokers, source }
        };
        let consumer: StreamConsumer =
            consumer_client_config(&config).create().map_err(client_error("consumer"))?;
        consumer.subscribe(&[&config.kafka.topic]).map_err(client_error("consumer"))?;
        let dlq: FutureProducer =
            config.kafka.client_config().create().map_err(client_error("dead-letter producer"))?;
        Ok(Self { consumer: Arc::new(consumer), dlq, handler, config, counters: Arc::default() })
    }

    /// Counters so far.
    pub fn stats(&self) -> ConsumerStats {
        ConsumerStats {
            handled: self.counters.handled.load(Ordering::Relaxed),
            retries: self.counters.retries.load(Ordering::Relaxed),
            dead_lettered: self.counters.dead_lettered.load(Ordering::Relaxed),
            lag: self.counters.lag.load(Ordering::Relaxed),
        }
    }

    /// The partitions of the topic this member holds now (empty before the group assigned it
    /// any, or while a rebalance is in progress), sorted.
    pub fn assignment(&self) -> Result<Vec<i32>, EventsError> {
        let assigned = self.consumer.assignment().map_err(|source| EventsError::Kafka {
            operation: format!("reading the assignment of group {}", self.config.group_id),
            source,
        })?;
        let mut partitions: Vec<i32> = assigned.elements().iter().map(|e| e.partition()).collect();
        partitions.sort_unstable();
        Ok(partitions)
    }

    /// Consumes until `cancel` fires; returns the final counters.
    pub async fn run(&self, cancel: CancellationToken) -> ConsumerStats {
        let group = &self.config.group_id;
        let handler = self.handler.name().to_owned();
        tracing::info!(%group, %handler, topic = %self.config.kafka.topic, "consumer started");
        // Lag is measured beside the consumer, never in its way: librdkafka's watermark queries
        // block, and a slow broker answer must not hold up handling.
        // The lag task holds the consumer too: when this future is dropped without `cancel`
        // (the task running it was aborted), the guard still stops it, so the consumer closes
        // and leaves the group instead of holding its partitions until the poll timeout.
        let lag_cancel = cancel.child_token();
        let _stop_lag_on_drop = lag_cancel.clone().drop_guard();
        let lag_task = tokio::spawn(measure_lag_until(
            self.consumer.clone(),
            self.counters.clone(),
            group.clone(),
            self.config.lag_interval,
            lag_cancel,
        ));
        let limit = self.config.max_batch.min(self.handler.max_batch()).max(1);
        let mut failures: u32 = 0;
        loop {
            tokio::select! {
                // Biased: once cancelled, no further message is started even when librdkafka
                // already has the next ones buffered (an unbiased select picks at random).
                biased;
                () = cancel.cancelled() => break,
                received = self.consumer.recv() => match received {
                    Err(error) => {
                        let delay = self.config.backoff.delay(failures);
                        failures = failures.saturating_add(1);
                        tracing::warn!(%group, error = %iaas_core::error_chain(&error), retry_in_ms = delay.as_millis() as u64, "consumer error");
                        tokio::select! {
                            () = cancel.cancelled() => break,
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                    Ok(message) => {
                        failures = 0;
                        let mut batch = vec![message];
                        while batch.len() < limit {
                            match ready_now(self.consumer.recv()) {
                                Some(Ok(message)) => batch.push(message),
                                Some(Err(error)) => {
                                    // The batch so far is handled; if the error persists, the
                                    // next `recv` meets it again and backs off.
                                    tracing::warn!(%group, error = %iaas_core::error_chain(&error), "consumer error");
                                    break;
                                }
                                None => break,
                            }
                        }
                        if self.process_batch(&batch, &cancel).await == Outcome::Cancelled {
                            break;
                        }
                    }
                },
            }
        }
        if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit is also reported as an error; either way the
            // worst case is a redelivery.
            tracing::debug!(%group, error = %iaas_core::error_chain(&error), "final commit");
        }
        self.consumer.unsubscribe();
        lag_task.abort();
        if let Err(error) = lag_task.await
            && !error.is_cancelled()
        {
            tracing::warn!(%group, error = %iaas_core::error_chain(&error), "the lag task failed");
        }
        let stats = self.stats();
        tracing::info!(%group, ?stats, "consumer stopped");
        stats
    }

    /// Hands `messages` (in the order received) to the handler and stores the offset of every
    /// message whose result is final, in order; retries from the first transient failure.
    async fn process_batch(
        &self,
        messages: &[BorrowedMessage<'_>],
        cancel: &CancellationToken,
    ) -> Outcome {
        let mut events = Vec::with_capacity(messages.len());
        let slots: Vec<Slot> = messages
            .iter()
            .map(|message| match message.payload().map(InfrastructureEvent::from_json) {
                None => Slot::Poison("empty payload".to_owned()),
                Some(Err(error)) => Slot::Poison(format!("undecodable: {error}")),
                Some(Ok(event)) => {
                    events.push(event);
                    Slot::Event(events.len() - 1)
                }
            })
            .collect();
        // The first message not final yet, and the first event at or after it.
        let (mut start, mut first_event) = (0, 0);
        let mut attempt: u32 = 0;
        loop {
            let results = if first_event < events.len() {
                self.handler.handle_batch(&events[first_event..]).await
            } else {
                Vec::new()
            };
            let handed = events.len() - first_event;
            let stop = HandlerError::first_to_retry(handed, &results).map(|k| first_event + k);
            let mut results = results.into_iter();
            let mut retry_from = None;
            for (position, (message, slot)) in messages.iter().zip(&slots).enumerate().skip(start) {
                let reason = match slot {
                    Slot::Poison(reason) => Some(reason.clone()),
                    Slot::Event(n) if Some(*n) == stop => {
                        retry_from = Some((position, *n));
                        break;
                    }
                    Slot::Event(_) => match results.next() {
                        Some(Err(error)) => {
                            Some(format!("handler {}: {error}", self.handler.name()))
                        }
                        // `first_to_retry` stops at the first missing result, so an event
                        // before `stop` always has one.
                        Some(Ok(())) | None => None,
                    },
                };
                match reason {
                    Some(reason) => {
                        if self.dead_letter(message, reason, cancel).await == Outcome::Cancelled {
                            return Outcome::Cancelled;
                        }
                    }
                    None => {
                        self.counters.handled.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("iaas_consumer_handled_total", "group" => self.config.group_id.clone()).increment(1);
                    }
                }
                if let Err(error) = self.consumer.store_offset_from_message(message) {
                    tracing::warn!(group = %self.config.group_id, error = %iaas_core::error_chain(&error), offset = message.offset(), "storing the offset; the message may be redelivered");
                }
            }
            let Some((position, event)) = retry_from else {
                return Outcome::Done;
            };
            let error = match results.next() {
                Some(Err(error)) => iaas_core::error_chain(&error),
                _ => "the handler gave no result".to_owned(),
            };
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            let delay = self.config.backoff.delay(attempt);
            attempt = attempt.saturating_add(1);
            tracing::warn!(group = %self.config.group_id, event_id = %events[event].id, %error, attempt, retried = events.len() - event, "handler failed transiently; retrying from this event");
            tokio::select! {
                () = cancel.cancelled() => return Outcome::Cancelled,
                () = tokio::time::sleep(delay) => {}
            }
            (start, first_event) = (position, event);
        }
    }

    /// Sends the message to the dead-letter topic, retrying until the broker takes it (moving
    /// on without it would lose it).
    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        reason: String,
        cancel: &CancellationToken,
    ) -> Outcome {
        let origin = format!("{}/{}/{}", message.topic(), message.partition(), message.offset());
        tracing::error!(group = %self.config.group_id, %origin, %reason, "dead-lettering a message");
        let mut attempt: u32 = 0;
        loop {
            let mut headers = OwnedHeaders::new()
                .insert(Header { key: HEADER_DLQ_ERROR, value: Some(reason.as_str()) })
                .insert(Header { key: HEADER_DLQ_ORIGIN, value: Some(origin.as_str()) })
                .insert(Header {
                    key: HEADER_DLQ_GROUP,
                    value: Some(self.config.group_id.as_str()),
                });
            if let Some(original) = message.headers() {
                use rdkafka::message::Headers;
                for header in original.iter() {
                    headers = headers.insert(Header { key: header.key, value: header.value });
                }
            }
            let mut record = FutureRecord::to(&self.config.dlq_topic).headers(headers);
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            if let Some(payload) = message.payload() {
                record = record.payload(payload);
            }
            match self.dlq.send(record, Timeout::After(Duration::from_secs(5))).await {
                Ok(_) => {
                    self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("iaas_consumer_dead_lettered_total", "group" => self.config.group_id.clone()).increment(1);
                    return Outcome::Done;
                }
                Err((error, _)) => {
                    let delay = self.config.backoff.delay(attempt);
                    attempt = attempt.saturating_add(1);
                    tracing::warn!(group = %self.config.group_id, error = %iaas_core::error_chain(&error), %origin, "dead-letter topic unavailable; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => return Outcome::Cancelled,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

/// Lag = high watermark - position, summed over the assigned partitions and exported per
/// partition, every `interval` until `cancel`. librdkafka's calls block, so they run off the
/// async threads.
async fn measure_lag_until(
    consumer: Arc<StreamConsumer>,
    counters: Arc<Counters>,
    group: String,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let consumer = consumer.clone();
        let measured = tokio::task::spawn_blocking(
            move || -> Result<Vec<(String, i32, i64)>, rdkafka::error::KafkaError> {
                let positions = consumer.position()?;
                let mut lags = Vec::new();
                for element in positions.elements() {
                    let (_, high) = consumer.fetch_watermarks(
                        element.topic(),
                        element.partition(),
                        Duration::from_secs(2),
                    )?;
                    let lag = match element.offset().to_raw() {
                        Some(position) if position >= 0 => (high - position).max(0),
                        _ => 0,
                    };
                    lags.push((element.topic().to_owned(), element.partition(), lag));
                }
                Ok(lags)
            },
        )
        .await;
        match measured {
            Ok(Ok(lags)) => {
                let total: i64 = lags.iter().map(|(_, _, lag)| lag).sum();
                for (topic, partition, lag) in lags {
                    metrics::gauge!("iaas_consumer_lag", "group" => group.clone(), "topic" => topic, "partition" => partition.to_string())
                        .set(lag as f64);
                }
                counters.lag.store(u64::try_from(total).unwrap_or(0), Ordering::Relaxed);
            }
            Ok(Err(error)) => {
                tracing::debug!(%group, error = %iaas_core::error_chain(&error), "measuring consumer lag")
            }
            Err(error) => {
                tracing::warn!(%group, error = %iaas_core::error_chain(&error), "the lag measurement task failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_properties_reach_the_consumer_but_never_override_offset_handling() {
        let mut config = ConsumerConfig::new(KafkaConfig::new("127.0.0.1:9092"), "group-a");
        config.extra.insert("fetch.wait.max.ms".to_owned(), "20".to_owned());
        config.extra.insert("enable.auto.offset.store".to_owned(), "true".to_owned());
        config.extra.insert("group.id".to_owned(), "someone-else".to_owned());
        let client = consumer_client_config(&config);
        assert_eq!(client.get("fetch.wait.max.ms"), Some("20"));
        assert_eq!(client.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(client.get("group.id"), Some("group-a"));
        assert_eq!(client.get("bootstrap.servers"), Some("127.0.0.1:9092"));
    }
}
