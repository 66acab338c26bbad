//! The consumer runner: drives any [`EventHandler`] from a Kafka consumer group, at least once,
//! or, as a standalone consumer ([`Membership::Standalone`]), from every partition's end leaving
//! no group on the broker.
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
//! - **Standalone** ([`Membership::Standalone`], for a reader that must see every event while
//!   its process runs and nothing before: live status, a cache in the process's own memory).
//!   A consumer group per process would outlive the process on the broker: a group stays
//!   listed (with its committed offsets, until the broker's retention drops them) after its
//!   last member left, so each start would add one, and deleting it on shutdown (the admin
//!   API's `DeleteGroups`) does not help a process that is killed. Instead the runner assigns
//!   itself every partition of the topic at its end (`assign`, not `subscribe`) and commits
//!   nothing: a broker keeps a group for a member that joined (`JoinGroup`) or for committed
//!   offsets (`OffsetCommit`), and this runner sends neither, so it leaves no trace. (librdkafka
//!   still wants a `group.id` for `assign`; the runner's name serves, the same in every
//!   process, so even a broker that kept something per group id would keep one, not one per
//!   start.) What it gives up: a restart does not resume (what was published while it was
//!   down is not read, which such a reader does not want anyway), and partitions added to the
//!   topic while it runs are read from its next start.
//! - **Lag** (`iaas_consumer_lag`, per partition) follows the assignment: a partition a
//!   rebalance took away reads 0 from the next measurement on, and every partition reads 0 once the runner stops (the `metrics` facade
//!   cannot unregister a gauge), so a stale value does not outlive the partition's ownership.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use iaas_core::{EventHandler, HandlerError, InfrastructureEvent};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
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

/// How a runner reads the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Membership {
    /// As a member of the consumer group [`ConsumerConfig::group_id`]: the group's members
    /// share the partitions, offsets are committed, a restart resumes where the group was and a
    /// new group starts at [`ConsumerConfig::auto_offset_reset`]. The default.
    #[default]
    Group,
    /// Alone, from the end of every partition, never joining a group and committing nothing:
    /// however many processes start, are stopped or are killed, no consumer group is left on
    /// the broker. [`ConsumerConfig::group_id`] is its name in logs, metrics and dead-letter
    /// headers (and the `group.id` librdkafka wants, never joined). See the module
    /// documentation for what it gives up.
    Standalone,
}

/// Consumer settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// Broker and topic settings (the topic consumed is `kafka.topic`); the dead-letter producer
    /// uses the same producer settings.
    pub kafka: KafkaConfig,
    /// Consumer group (`monitoring-consumer-group` for the indexer); with
    /// [`Membership::Standalone`], only the runner's name in logs, metrics and dead letters.
    pub group_id: String,
    /// Whether the runner reads in a consumer group or standalone (default
    /// [`Membership::Group`]).
    pub membership: Membership,
    /// Where poison messages go (default `{topic}.dlq`).
    pub dlq_topic: String,
    /// Delays between retries of a transient failure.
    pub backoff: Backoff,
    /// How often consumer lag is measured (default 5 s).
    pub lag_interval: Duration,
    /// Where a new group starts (`earliest` by default, so nothing published before the group
    /// existed is skipped); for a standalone runner, where it goes when its position is no
    /// longer on the broker (`latest` by [`ConsumerConfig::standalone`]).
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
            membership: Membership::Group,
            dlq_topic,
            backoff: Backoff::default(),
            lag_interval: Duration::from_secs(5),
            auto_offset_reset: "earliest".to_owned(),
            max_batch: DEFAULT_MAX_BATCH,
            extra: BTreeMap::new(),
        }
    }

    /// A standalone runner named `name` ([`Membership::Standalone`]): every event published on
    /// the topic of `kafka` from its start on, no consumer group on the broker.
    pub fn standalone(kafka: KafkaConfig, name: impl Into<String>) -> Self {
        let mut config = Self::new(kafka, name);
        config.membership = Membership::Standalone;
        config.auto_offset_reset = "latest".to_owned();
        config
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

/// A partition of a topic, as the lag gauges are labelled.
type Partition = (String, i32);

/// The `iaas_consumer_lag` gauges of one runner, kept in step with its assignment.
///
/// librdkafka forgets a partition once it is revoked, and the `metrics` facade cannot remove a
/// gauge, so without this bookkeeping a partition a rebalance took away would keep its last lag
/// for as long as the process lives (and a `max by (partition)` over the group's members would
/// read it). Each measurement covers the whole current assignment, so a partition it no longer
/// includes is set to 0; every gauge goes to 0 when the runner stops (or is dropped).
///
/// (Not done from librdkafka's rebalance callback: a consumer with a context of its own
/// recovered much worse from a broker restart in `tests/broker_outage.rs` on tansu 0.6.0; the
/// cost here is that a revoked partition reads its old lag for up to one lag interval.)
#[derive(Debug)]
struct LagGauges {
    group: String,
    /// Partitions whose gauge this runner has set to a value that may be non-zero.
    reported: Mutex<BTreeSet<Partition>>,
}

impl LagGauges {
    fn new(group: String) -> Self {
        Self { group, reported: Mutex::default() }
    }

    fn reported(&self) -> std::sync::MutexGuard<'_, BTreeSet<Partition>> {
        // A set updated in place: one left half-updated by a panicking thread is still a valid
        // (if stale) view, so poisoning is not a reason to stop measuring.
        self.reported.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, (topic, partition): &Partition, lag: f64) {
        metrics::gauge!("iaas_consumer_lag", "group" => self.group.clone(), "topic" => topic.clone(), "partition" => partition.to_string())
            .set(lag);
    }

    /// Publishes one measurement of the whole assignment (per partition: its lag) and returns
    /// the total; a partition reported before and missing now (revoked) is set to 0.
    fn publish(&self, lags: Vec<(Partition, i64)>) -> u64 {
        let mut reported = self.reported();
        let mut now = BTreeSet::new();
        let mut total: u64 = 0;
        for (partition, lag) in lags {
            let lag = u64::try_from(lag).unwrap_or(0);
            total = total.saturating_add(lag);
            self.set(&partition, lag as f64);
            now.insert(partition);
        }
        for gone in reported.difference(&now) {
            self.set(gone, 0.0);
        }
        *reported = now;
        total
    }

    /// The runner stopped: every gauge it set reads 0.
    fn clear(&self) {
        for partition in std::mem::take(&mut *self.reported()) {
            self.set(&partition, 0.0);
        }
    }
}

impl Drop for LagGauges {
    fn drop(&mut self) {
        // A runner whose task was aborted never reaches the end of `run`.
        self.clear();
    }
}

/// Runs an [`EventHandler`] over a consumer group.
pub struct KafkaConsumerRunner {
    consumer: Arc<StreamConsumer>,
    gauges: Arc<LagGauges>,
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
        // Offsets are stored by hand, after the handler succeeded.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", &config.auto_offset_reset);
    // A standalone runner still needs a `group.id` (librdkafka refuses `assign` without one),
    // but it never joins the group and never commits, so the broker keeps nothing for it.
    client.set("group.id", &config.group_id).set(
        "enable.auto.commit",
        if config.membership == Membership::Group { "true" } else { "false" },
    );
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
        let gauges = Arc::new(LagGauges::new(config.group_id.clone()));
        let consumer: StreamConsumer =
            consumer_client_config(&config).create().map_err(client_error("consumer"))?;
        // A standalone consumer assigns itself its partitions when it runs (that needs the
        // broker; creating the runner does not).
        if config.membership == Membership::Group {
            consumer.subscribe(&[&config.kafka.topic]).map_err(client_error("consumer"))?;
        }
        let dlq: FutureProducer =
            config.kafka.client_config().create().map_err(client_error("dead-letter producer"))?;
        Ok(Self {
            consumer: Arc::new(consumer),
            gauges,
            dlq,
            handler,
            config,
            counters: Arc::default(),
        })
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
        let stop_lag = lag_cancel.clone();
        let _stop_lag_on_drop = lag_cancel.clone().drop_guard();
        let lag_task = tokio::spawn(measure_lag_until(
            self.consumer.clone(),
            self.counters.clone(),
            self.gauges.clone(),
            self.config.lag_interval,
            lag_cancel,
        ));
        let limit = self.config.max_batch.min(self.handler.max_batch()).max(1);
        let mut failures: u32 = 0;
        // Cancelled before a standalone runner had its partitions: nothing to read.
        let ready = self.config.membership == Membership::Group
            || self.assign_every_partition_at_its_end(&cancel).await == Outcome::Done;
        loop {
            if !ready {
                break;
            }
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
        match self.config.membership {
            Membership::Group => {
                if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Sync) {
                    // Nothing stored since the last commit is also reported as an error; either
                    // way the worst case is a redelivery.
                    tracing::debug!(%group, error = %iaas_core::error_chain(&error), "final commit");
                }
                self.consumer.unsubscribe();
            }
            Membership::Standalone => {
                if let Err(error) = self.consumer.unassign() {
                    tracing::debug!(%group, error = %iaas_core::error_chain(&error), "unassigning");
                }
            }
        }
        // Stopped and awaited, not aborted: an abort cannot stop a watermark query already
        // running on a blocking thread, and librdkafka crashed (SIGSEGV in its metadata cache)
        // when such a query outlived `run` and the caller then deleted the topic. Each query is
        // bounded by its own timeout, so this wait is too.
        stop_lag.cancel();
        if let Err(error) = lag_task.await {
            tracing::warn!(%group, error = %iaas_core::error_chain(&error), "the lag task failed");
        }
        // After the lag task ended, so no measurement can land after this.
        self.gauges.clear();
        let stats = self.stats();
        tracing::info!(%group, ?stats, "consumer stopped");
        stats
    }

    /// A standalone runner's start: assigns every partition of the topic at its end, retrying
    /// with backoff while the broker cannot say which partitions there are (down, or the topic
    /// not created yet).
    async fn assign_every_partition_at_its_end(&self, cancel: &CancellationToken) -> Outcome {
        let group = &self.config.group_id;
        let mut attempt: u32 = 0;
        loop {
            let consumer = self.consumer.clone();
            let topic = self.config.kafka.topic.clone();
            // librdkafka's metadata request blocks: off the async threads, bounded.
            let assigned = tokio::task::spawn_blocking(move || assign_at_end(&consumer, &topic))
                .await
                .unwrap_or_else(|join| Err(format!("the assignment task failed: {join}")));
            match assigned {
                Ok(partitions) => {
                    tracing::info!(%group, topic = %self.config.kafka.topic, partitions, "standalone consumer assigned every partition at its end");
                    return Outcome::Done;
                }
                Err(error) => {
                    let delay = self.config.backoff.delay(attempt);
                    attempt = attempt.saturating_add(1);
                    tracing::warn!(%group, %error, retry_in_ms = delay.as_millis() as u64, "standalone consumer cannot assign its partitions yet");
                    tokio::select! {
                        () = cancel.cancelled() => return Outcome::Cancelled,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
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
                if self.config.membership == Membership::Standalone {
                    // Nothing is committed: the position lives in librdkafka only.
                } else if let Err(error) = self.consumer.store_offset_from_message(message) {
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

/// How long one metadata request of a standalone runner's start may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// Assigns `consumer` every partition of `topic` at its end (blocking: one metadata request);
/// returns how many partitions.
fn assign_at_end(consumer: &StreamConsumer, topic: &str) -> Result<usize, String> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|error| format!("reading the partitions of {topic}: {error}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(format!("the broker knows no partition of {topic}"));
    }
    let mut assignment = TopicPartitionList::new();
    for partition in &partitions {
        assignment
            .add_partition_offset(topic, *partition, Offset::End)
            .map_err(|error| format!("assigning {topic}/{partition}: {error}"))?;
    }
    consumer.assign(&assignment).map_err(|error| format!("assigning {topic}: {error}"))?;
    Ok(partitions.len())
}

/// Lag = high watermark - position, summed over the assigned partitions and exported per
/// partition, every `interval` until `cancel`. librdkafka's calls block, so they run off the
/// async threads.
async fn measure_lag_until(
    consumer: Arc<StreamConsumer>,
    counters: Arc<Counters>,
    gauges: Arc<LagGauges>,
    interval: Duration,
    cancel: CancellationToken,
) {
    let group = &gauges.group;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let consumer = consumer.clone();
        let measured = tokio::task::spawn_blocking(
            move || -> Result<Vec<(Partition, i64)>, rdkafka::error::KafkaError> {
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
                    lags.push(((element.topic().to_owned(), element.partition()), lag));
                }
                Ok(lags)
            },
        )
        .await;
        match measured {
            Ok(Ok(lags)) => {
                let total = gauges.publish(lags);
                counters.lag.store(total, Ordering::Relaxed);
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

    /// The last value of every `iaas_consumer_lag` gauge set while it was the local recorder,
    /// by `topic/partition`.
    #[derive(Debug, Default, Clone)]
    struct LagRecorder {
        values: Arc<Mutex<BTreeMap<String, f64>>>,
    }

    struct GaugeCell {
        key: String,
        values: Arc<Mutex<BTreeMap<String, f64>>>,
    }

    impl metrics::GaugeFn for GaugeCell {
        fn increment(&self, value: f64) {
            *self.values.lock().unwrap().entry(self.key.clone()).or_default() += value;
        }

        fn decrement(&self, value: f64) {
            *self.values.lock().unwrap().entry(self.key.clone()).or_default() -= value;
        }

        fn set(&self, value: f64) {
            self.values.lock().unwrap().insert(self.key.clone(), value);
        }
    }

    impl metrics::Recorder for LagRecorder {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }

        fn register_counter(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            metrics::Counter::noop()
        }

        fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            assert_eq!(key.name(), "iaas_consumer_lag");
            let label = |name: &str| {
                key.labels().find(|l| l.key() == name).map(|l| l.value().to_owned()).unwrap()
            };
            assert_eq!(label("group"), "indexers");
            let key = format!("{}/{}", label("topic"), label("partition"));
            metrics::Gauge::from_arc(Arc::new(GaugeCell { key, values: self.values.clone() }))
        }

        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    impl LagRecorder {
        fn read(&self) -> BTreeMap<String, f64> {
            self.values.lock().unwrap().clone()
        }
    }

    fn p(partition: i32) -> Partition {
        ("events".to_owned(), partition)
    }

    fn gauges(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn a_partition_no_longer_assigned_reads_zero_from_the_next_measurement() {
        let recorder = LagRecorder::default();
        metrics::with_local_recorder(&recorder, || {
            let lag = LagGauges::new("indexers".to_owned());
            assert_eq!(lag.publish(vec![(p(0), 5), (p(1), 7)]), 12);
            assert_eq!(recorder.read(), gauges(&[("events/0", 5.0), ("events/1", 7.0)]));

            // A rebalance took partition 1 away: the next measurement does not include it.
            assert_eq!(lag.publish(vec![(p(0), 4)]), 4);
            assert_eq!(recorder.read(), gauges(&[("events/0", 4.0), ("events/1", 0.0)]));

            // And a partition given back is reported again.
            assert_eq!(lag.publish(vec![(p(0), 4), (p(1), 2)]), 6);
            assert_eq!(recorder.read(), gauges(&[("events/0", 4.0), ("events/1", 2.0)]));
        });
    }

    #[test]
    fn stopping_or_dropping_the_runner_zeroes_every_gauge_it_set() {
        let recorder = LagRecorder::default();
        metrics::with_local_recorder(&recorder, || {
            let stopped = LagGauges::new("indexers".to_owned());
            stopped.publish(vec![(p(0), 5), (p(1), 7)]);
            stopped.clear();
            assert_eq!(recorder.read(), gauges(&[("events/0", 0.0), ("events/1", 0.0)]));

            let aborted = LagGauges::new("indexers".to_owned());
            aborted.publish(vec![(p(2), 8)]);
            assert_eq!(recorder.read()["events/2"], 8.0);
            drop(aborted);
            assert_eq!(recorder.read()["events/2"], 0.0);
        });
    }

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

    #[test]
    fn a_standalone_runner_commits_nothing() {
        let mut config = ConsumerConfig::standalone(KafkaConfig::new("127.0.0.1:9092"), "live");
        config.extra.insert("enable.auto.commit".to_owned(), "true".to_owned());
        let client = consumer_client_config(&config);
        assert_eq!(client.get("enable.auto.commit"), Some("false"));
        assert_eq!(client.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(client.get("auto.offset.reset"), Some("latest"));
    }
}
