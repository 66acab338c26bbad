//! `iaas-load pipeline`: events at a target rate through outbox -> bus -> monitoring indexer,
//! with the end-to-end latency of each event and the consumer lag over time.
//!
//! The platform has no API that writes events at a chosen rate, so this mode does not drive a
//! platform process: it assembles the same pipeline **in the tool's process, from the same
//! building blocks** the platform binary wires (`iaas-platform/src/platform.rs` and
//! `services.rs`): the store (SQLite file or PostgreSQL) whose instance writes append to the
//! transactional outbox, an [`OutboxRelay`] woken after every commit (as the provisioning API's
//! `on_commit` does), and either the [`InProcessBus`] with the platform's three groups
//! (monitoring, cluster cache, live status) or a [`KafkaPublisher`] and a
//! [`KafkaConsumerRunner`] in its own monitoring group, feeding a [`MonitoringIndexer`] over the
//! embedded SQLite log index. What is not there: the HTTP layer in front of the write and the
//! Docker engine behind it (the write is `InstanceRepository::create_instance`, the outbox write
//! of provisioning), and the platform's metric wrapper around the handlers.
//!
//! Each event is written as provisioning writes a new instance: one transaction stores the
//! instance row and appends its `created` event to the outbox. `--writers` tasks take event
//! numbers from one counter and write event `i` at `start + i / rate` (open loop: a late writer
//! catches up, it never skips), so the achieved rate shows when the store cannot keep up.
//!
//! Latency is measured by a handler wrapped around the indexer: the instant just before the
//! write began is kept per event id, and the handler records `now - that instant` once the
//! indexer accepted the event (the event is durably indexed then). A redelivered event counts
//! once; events the relay finds in the outbox that this run did not write (a shared PostgreSQL)
//! are counted as foreign and not measured. On Kafka a second stopwatch wraps the relay's
//! publisher: the `acked` row is the time from the write to the broker's acknowledgement of
//! the event (what the relay waits for before marking it sent), so `e2e - acked` is the
//! consumer side (fetch, hand-over, index write). When the writing ends, the tool waits up to
//! `--drain-timeout` for every event to be handled, then reports how many were lost and exits
//! non-zero if any were.
//!
//! Lag, printed every second: written, handled, in flight (written and not yet handled), the
//! relay's pending outbox count and, on Kafka, the runner's own lag (high watermark minus its
//! position, refreshed each second) and the lag of the group's committed offsets (what a
//! restarted consumer would re-read; librdkafka commits every 5 s, so it saws up to 5 s of
//! events).
//!
//! ```text
//! iaas-load pipeline --bus in-process --rate 1000 --duration 20
//! iaas-load pipeline --bus kafka --brokers 127.0.0.1:9092 --rate 1000 --duration 20
//! ```
//!
//! On Kafka the clock starts after a warm-up (unless `--cold`): one event published straight to
//! the topic and handled, so the producer's start-up (producer id, topic metadata: about half a
//! second on tansu) and the consumer group's join are not charged to the first events of the
//! run, which measures the steady state of a platform that has been running for a while. The
//! warm-up's duration is printed, and its event shows up as the one `foreign` event.
//!
//! On Kafka every run uses a topic and a consumer group of its own
//! (`iaas-load-{uuid}`), deleted at the end (also after Ctrl-C or an error).
//!
//! `--rates 100,200,400,800` is a sweep: a run at each rate in turn (each with its own store,
//! index and topic), then a table of the runs: the rate written and handled, the most events
//! the outbox held unsent, the end-to-end p50 and p99, and how long the drain took. With
//! `--out` it draws outbox depth and latency against the rate: what happens when the writers
//! outpace the bus (say a broker slower than the producers).
//!
//! ```text
//! iaas-load pipeline --bus kafka --rates 100,200,400,800 --drain-timeout 120 --out docs/plots
//! ```

#![allow(clippy::print_stdout, reason = "a command-line tool reports on stdout")]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use iaas_cache::{CacheInvalidator, ClusterCache, ClusterCacheConfig, MemoryStore};
use iaas_core::{
    BatchOutcome, Clock, EventAction, EventHandler, EventId, EventPublisher, HandlerError,
    InfrastructureEvent, Instance, InstanceName, InstanceRepository, InstanceSpec, NginxSpec,
    Outbox, Resources, SystemClock, UserId,
};
use iaas_events::kafka::{ConsumerConfig, KafkaConfig, KafkaConsumerRunner, KafkaPublisher};
use iaas_events::monitoring::{MonitoringIndexer, SqliteIndexConfig, SqliteLogIndex};
use iaas_events::{InProcessBus, OutboxRelay, RelayConfig};
use iaas_provisioning::LiveStatus;
use iaas_store::{PostgresConfig, PostgresStore, SqliteConfig, SqliteStore};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::report::{self, Progress};

/// Owners the written instances are spread over.
const OWNERS: usize = 16;
/// How long one Kafka metadata, watermark or offset request of the lag probe may take.
const KAFKA_QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long creating or deleting the run's topic may take.
const TOPIC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing the Kafka consumer may take at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the warm-up event may take to come back through the broker.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the drain checks whether everything was handled.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Which bus carries the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BusKind {
    /// The embedded in-process bus (the platform's default).
    InProcess,
    /// Kafka (`--brokers`).
    Kafka,
}

/// Which store holds the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// A SQLite file in a temporary directory (the platform's default).
    Sqlite,
    /// PostgreSQL at `--database-url`.
    Postgres,
}

/// Arguments of `iaas-load pipeline`.
#[derive(Debug, Clone, clap::Args)]
pub struct PipelineArgs {
    /// The bus between the relay and the indexer.
    #[arg(long, value_enum, default_value_t = BusKind::InProcess)]
    pub bus: BusKind,
    /// Kafka bootstrap servers (with `--bus kafka`).
    #[arg(long, env = "IAAS_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Partitions of the run's topic (with `--bus kafka`).
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// The store holding instances and the outbox.
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    pub store: StoreKind,
    /// PostgreSQL URL (with `--store postgres`); use a throwaway database: every event leaves
    /// an instance row there.
    #[arg(long, env = "IAAS_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Target events per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of writing.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Concurrent writers sharing the rate (each write is one transaction).
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Seconds to wait after the writing for every event to be handled.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout: u64,
    /// Override of the relay's idle poll interval in ms (library default 100; a wake after
    /// each commit ends the pause anyway).
    #[arg(long)]
    pub relay_idle_ms: Option<u64>,
    /// Override of the relay's batch size (library default 100 events per round).
    #[arg(long)]
    pub relay_batch: Option<u32>,
    /// Override of the Kafka producer's `linger.ms` (library default 2).
    #[arg(long)]
    pub linger_ms: Option<u64>,
    /// The consumer's `fetch.wait.max.ms` (librdkafka default 500): how long the broker may
    /// hold a fetch open while it has nothing new.
    #[arg(long)]
    pub fetch_wait_ms: Option<u64>,
    /// On Kafka, start measuring at once instead of after the warm-up event (see the module
    /// docs): the first events then also pay the producer's and the consumer's start-up.
    #[arg(long)]
    pub cold: bool,
    /// A sweep: one run at each of these rates (events per second, rising) instead of
    /// `--rate`, each with a store, index and topic of its own; a table of the runs ends it.
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,
    /// Directory the sweep's plot is written to (`scale-outbox-depth.svg`).
    #[arg(long, requires = "rates")]
    pub out: Option<PathBuf>,
}

/// What one run came to (a row of a sweep).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The target rate, events per second.
    pub rate: f64,
    /// Events written per second while writing.
    pub written_per_s: f64,
    /// Events handled per second while writing.
    pub handled_per_s: f64,
    /// The most events the outbox held unsent at a progress line (the relay's count, refreshed
    /// between its rounds) or when the writing ended.
    pub max_pending: u64,
    /// Write began -> the broker acknowledged it (Kafka only, else zero), median and 99th
    /// percentile, milliseconds.
    pub acked_ms: (f64, f64),
    /// Write began -> indexed, median and 99th percentile, milliseconds.
    pub e2e_ms: (f64, f64),
    /// Seconds from the end of the writing until every event was handled.
    pub drained_secs: f64,
}

/// When event `index` (from 0) is due, counted from the start, at `rate` events per second.
pub fn due_offset(index: u64, rate: f64) -> Duration {
    if rate <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(index as f64 / rate)
}

/// How many events a run of `duration` at `rate` events per second writes.
pub fn events_for(rate: f64, duration: Duration) -> u64 {
    if rate <= 0.0 {
        return 0;
    }
    (rate * duration.as_secs_f64()).round() as u64
}

/// Lag of one partition from its committed offset: everything from the committed offset to the
/// high watermark, or the whole retained partition (`high - low`) when the group has committed
/// nothing there yet.
pub fn partition_lag(committed: Option<i64>, low: i64, high: i64) -> u64 {
    let from = committed.unwrap_or(low).max(low);
    u64::try_from(high - from).unwrap_or(0)
}

/// Events written and not handled yet.
pub fn in_flight(written: u64, handled: u64) -> u64 {
    written.saturating_sub(handled)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Where one written event is.
#[derive(Debug, Clone, Copy)]
struct Fate {
    /// The instant just before its write began.
    began: Instant,
    /// The bus acknowledged its publication (Kafka: the relay saw the broker's ack).
    acked: bool,
    /// Handled at least once.
    handled: bool,
}

/// What the writers, the publisher and the measuring handler share.
#[derive(Debug, Default)]
struct Tracker {
    fates: Mutex<HashMap<EventId, Fate>>,
    written: AtomicU64,
    write_errors: AtomicU64,
    handled: AtomicU64,
    duplicates: AtomicU64,
    foreign: AtomicU64,
    end_to_end: Mutex<Vec<Duration>>,
    acks: Mutex<Vec<Duration>>,
    /// Slowest acknowledgement since the last progress line, in microseconds.
    slowest_ack_us: AtomicU64,
    /// Slowest end-to-end latency since the last progress line, in microseconds.
    slowest_e2e_us: AtomicU64,
    commits: Mutex<Vec<Duration>>,
    first_error: Mutex<Option<String>>,
    /// The most events the outbox held unsent at a progress line.
    max_pending: AtomicU64,
    /// Events handled when the writing ended.
    handled_at_end_of_writing: AtomicU64,
}

impl Tracker {
    fn fates(&self) -> std::sync::MutexGuard<'_, HashMap<EventId, Fate>> {
        // Every update is a single insert, remove or field change: a panic elsewhere cannot
        // leave the map half-updated, so a poisoned lock is still consistent.
        self.fates.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that the write of `id` begins now.
    fn begin(&self, id: EventId) {
        self.fates().insert(id, Fate { began: Instant::now(), acked: false, handled: false });
    }

    /// The write of `id` committed after `took`.
    fn committed(&self, took: Duration) {
        self.written.fetch_add(1, Ordering::Relaxed);
        self.commits.lock().unwrap_or_else(PoisonError::into_inner).push(took);
    }

    /// The write of `id` failed: it will never be handled.
    fn failed(&self, id: EventId, error: String) {
        self.fates().remove(&id);
        self.write_errors.fetch_add(1, Ordering::Relaxed);
        self.first_error.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(error);
    }

    /// The bus acknowledged `id` now (a republished event counts once; an event this run did
    /// not write is ignored, the handler counts those).
    fn acked(&self, id: EventId) {
        let now = Instant::now();
        let took = match self.fates().get_mut(&id) {
            Some(fate) if !fate.acked => {
                fate.acked = true;
                now.saturating_duration_since(fate.began)
            }
            _ => return,
        };
        self.slowest_ack_us.fetch_max(micros(took), Ordering::Relaxed);
        self.acks.lock().unwrap_or_else(PoisonError::into_inner).push(took);
    }

    /// The handler finished `id` now.
    fn handled(&self, id: EventId) {
        let now = Instant::now();
        let first = self.fates().get_mut(&id).map(|fate| {
            let first = !fate.handled;
            fate.handled = true;
            (first, now.saturating_duration_since(fate.began))
        });
        match first {
            Some((true, took)) => {
                self.handled.fetch_add(1, Ordering::Relaxed);
                self.slowest_e2e_us.fetch_max(micros(took), Ordering::Relaxed);
                self.end_to_end.lock().unwrap_or_else(PoisonError::into_inner).push(took);
            }
            Some((false, _)) => {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.foreign.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Events written whose handling has not been seen.
    fn lost(&self) -> u64 {
        self.fates().values().filter(|fate| !fate.handled).count() as u64
    }
}

/// The relay's publisher with a stopwatch: records, per event, the time from the write to the
/// bus's acknowledgement, i.e. when the relay may mark it sent (commit + claim + publish).
/// Used on Kafka only: the in-process bus acknowledges after its handlers ran, so there the
/// figure would be the end-to-end latency again.
struct Acked {
    inner: Arc<dyn EventPublisher>,
    tracker: Arc<Tracker>,
}

#[async_trait]
impl EventPublisher for Acked {
    async fn publish(&self, event: &InfrastructureEvent) -> iaas_core::Result<()> {
        self.inner.publish(event).await?;
        self.tracker.acked(event.id);
        Ok(())
    }

    async fn publish_batch(&self, events: &[InfrastructureEvent]) -> BatchOutcome {
        let outcome = self.inner.publish_batch(events).await;
        for event in events.iter().take(outcome.published) {
            self.tracker.acked(event.id);
        }
        outcome
    }
}

/// The monitoring indexer with a stopwatch: records each event's end-to-end latency once the
/// indexer accepted it.
struct Measured {
    inner: Arc<dyn EventHandler>,
    tracker: Arc<Tracker>,
}

#[async_trait]
impl EventHandler for Measured {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn handle(&self, event: &InfrastructureEvent) -> Result<(), HandlerError> {
        self.inner.handle(event).await?;
        self.tracker.handled(event.id);
        Ok(())
    }

    /// Passes batches through whole, so the indexer's own batching is what gets measured.
    async fn handle_batch(&self, events: &[InfrastructureEvent]) -> Vec<Result<(), HandlerError>> {
        let results = self.inner.handle_batch(events).await;
        for (event, result) in events.iter().zip(&results) {
            if result.is_ok() {
                self.tracker.handled(event.id);
            }
        }
        results
    }
}

/// The store, seen through the two ports the pipeline uses.
struct Store {
    instances: Arc<dyn InstanceRepository>,
    outbox: Arc<dyn Outbox>,
}

impl Store {
    fn of<S: InstanceRepository + Outbox + 'static>(store: S) -> Self {
        let store = Arc::new(store);
        Self { instances: store.clone(), outbox: store }
    }
}

/// The run's Kafka coordinates, deleted at the end.
struct KafkaRun {
    config: KafkaConfig,
    group: String,
    runner: Arc<KafkaConsumerRunner>,
    probe: Arc<BaseConsumer>,
    /// The last lag measured by the lag task, for the progress line.
    lag: Arc<Mutex<String>>,
    /// The publisher itself (without the stopwatch), for the warm-up event.
    publisher: Arc<dyn EventPublisher>,
}

/// Everything to stop, in order, at the end of a run.
struct Pipeline {
    relay: Arc<OutboxRelay>,
    kafka: Option<KafkaRun>,
    cancel: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Pipeline {
    /// Stops the relay and the consumer after their work in flight.
    async fn stop(self) -> Option<KafkaRun> {
        self.cancel.cancel();
        for (name, task) in self.tasks {
            if let Err(error) = task.await {
                eprintln!("iaas-load: the {name} task ended abnormally: {error}");
            }
        }
        self.kafka
    }
}

/// Runs `iaas-load pipeline` (see the module docs).
///
/// # Errors
/// A bad argument, a store, index or broker that cannot be opened, or events lost.
pub async fn run(args: PipelineArgs) -> Result<(), String> {
    if !args.rate.is_finite() || args.rate <= 0.0 || args.writers == 0 || args.duration == 0 {
        return Err(format!(
            "--rate ({}), --writers ({}) and --duration ({}) must be above 0",
            args.rate, args.writers, args.duration
        ));
    }
    if args.rates.is_empty() {
        let dir = super::DataDir::new("pipeline")?;
        return run_in(&args, dir.path()).await.map(drop);
    }
    if args.rates.iter().any(|rate| !rate.is_finite() || *rate <= 0.0)
        || args.rates.windows(2).any(|pair| pair[0] >= pair[1])
    {
        return Err("--rates: a rising list of events per second, each above 0".to_owned());
    }
    let mut rows = Vec::new();
    let mut outcome = Ok(());
    for &rate in &args.rates {
        let dir = super::DataDir::new("pipeline")?;
        let run = PipelineArgs { rate, rates: Vec::new(), out: None, ..args.clone() };
        match run_in(&run, dir.path()).await {
            Ok(summary) => rows.push(summary),
            Err(error) => {
                outcome = Err(format!("at {rate} events/s: {error}"));
                break;
            }
        }
    }
    // The runs done are shown whatever ended the sweep.
    print_sweep(&rows);
    outcome?;
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        println!("wrote {}", draw_sweep(&rows, dir)?.display());
    }
    Ok(())
}

/// The table of a sweep's runs.
fn print_sweep(rows: &[Summary]) {
    println!(
        "\n| target/s | written/s | handled/s while writing | outbox depth (most) | acked p50 / p99 | e2e p50 | e2e p99 | drained after |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {:.0} | {:.0} | {:.0} | {} | {:.1} / {:.1} ms | {:.1} ms | {:.1} ms | {:.1} s |",
            row.rate,
            row.written_per_s,
            row.handled_per_s,
            row.max_pending,
            row.acked_ms.0,
            row.acked_ms.1,
            row.e2e_ms.0,
            row.e2e_ms.1,
            row.drained_secs,
        );
    }
}

/// Outbox depth and end-to-end latency against the target rate.
fn draw_sweep(rows: &[Summary], dir: &std::path::Path) -> Result<PathBuf, String> {
    use plotters::style::{BLACK, BLUE, RED};
    let path = dir.join("scale-outbox-depth.svg");
    super::plot::log_log(
        rows,
        |row| row.rate,
        super::plot::Chart {
            path: &path,
            title: "Outbox depth and end-to-end latency as the writers outpace the bus",
            x_desc: "events written per second (target)",
            unit: "events / milliseconds",
        },
        &[
            ("outbox depth, most", BLACK, |row| row.max_pending as f64),
            ("e2e p50, ms", BLUE, |row| row.e2e_ms.0),
            ("e2e p99, ms", RED, |row| row.e2e_ms.1),
        ],
    )?;
    Ok(path)
}

async fn open_store(args: &PipelineArgs, dir: &std::path::Path) -> Result<Store, String> {
    match args.store {
        StoreKind::Sqlite => {
            let path = dir.join("iaas.db");
            SqliteStore::open(&SqliteConfig::new(&path))
                .await
                .map(Store::of)
                .map_err(|e| format!("opening the SQLite store {}: {e}", path.display()))
        }
        StoreKind::Postgres => {
            let url = args
                .database_url
                .as_deref()
                .ok_or("--store postgres needs --database-url (or IAAS_DATABASE_URL)")?;
            PostgresStore::connect(&PostgresConfig::new(url))
                .await
                .map(Store::of)
                .map_err(|e| format!("connecting to PostgreSQL: {}", iaas_core::error_chain(&e)))
        }
    }
}

async fn run_in(args: &PipelineArgs, dir: &std::path::Path) -> Result<Summary, String> {
    let store = open_store(args, dir).await?;
    let index_path: PathBuf = dir.join("events.db");
    let index = SqliteLogIndex::open(&SqliteIndexConfig::new(&index_path))
        .await
        .map_err(|e| format!("opening the log index {}: {e}", index_path.display()))?;
    let tracker = Arc::new(Tracker::default());
    let indexer: Arc<dyn EventHandler> = Arc::new(Measured {
        inner: Arc::new(MonitoringIndexer::new(Arc::new(index))),
        tracker: tracker.clone(),
    });

    let pipeline = start_pipeline(args, store.outbox.clone(), indexer, &tracker).await?;
    let outcome = tokio::select! {
        outcome = drive(args, &store, &pipeline, &tracker) => outcome,
        interrupted = tokio::signal::ctrl_c() => match interrupted {
            Ok(()) => Err("interrupted (Ctrl-C)".to_owned()),
            Err(error) => Err(format!("listening for Ctrl-C: {error}")),
        },
    };
    if let Some(kafka) = pipeline.stop().await {
        let KafkaRun { config, runner, probe, publisher, lag: _, group: _ } = kafka;
        // Every client of the run this tool holds is gone before its topic is deleted: a
        // client that outlives the deletion can crash librdkafka 2.12 in its metadata cache
        // (`rd_kafka_metadata_update_op`, seen at exit). Closing a consumer blocks until it
        // left its group; with a broker that stopped answering that can take forever, so it
        // happens off the async threads and is abandoned after a bound.
        let closing = tokio::task::spawn_blocking(move || drop((runner, probe, publisher)));
        if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
            eprintln!("iaas-load: the Kafka consumer did not close within {CLOSE_TIMEOUT:?}");
        }
        delete_topics(&config).await;
    }
    outcome
}

/// Builds the bus, the consumer (on Kafka) and the relay, as the platform does.
async fn start_pipeline(
    args: &PipelineArgs,
    outbox: Arc<dyn Outbox>,
    indexer: Arc<dyn EventHandler>,
    tracker: &Arc<Tracker>,
) -> Result<Pipeline, String> {
    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut kafka_run = None;
    let publisher: Arc<dyn EventPublisher> = match args.bus {
        BusKind::InProcess => {
            // The platform's in-process wiring: the monitoring, cluster-cache and live-status
            // groups (the last two with nobody behind them, as on an idle dashboard).
            let bus = Arc::new(InProcessBus::new());
            let cache = ClusterCache::new(
                Arc::new(MemoryStore::default()),
                ClusterCacheConfig::with_prefix("iaas-load:"),
            );
            bus.subscribe("cluster-cache", Arc::new(CacheInvalidator::new(cache)));
            bus.subscribe("monitoring", indexer);
            bus.subscribe("live-status", Arc::new(LiveStatus::default()) as Arc<dyn EventHandler>);
            bus
        }
        BusKind::Kafka => {
            let run = format!("iaas-load-{}", EventId::new_v7());
            let mut config = KafkaConfig::new(args.brokers.clone());
            config.topic.clone_from(&run);
            if let Some(ms) = args.linger_ms {
                config.linger = Duration::from_millis(ms);
            }
            iaas_events::kafka::ensure_topic(&config, &run, args.partitions, 1, TOPIC_TIMEOUT)
                .await
                .map_err(|e| format!("creating topic {run} on {}: {e}", args.brokers))?;
            let built = kafka_parts(&config, &run, indexer, args.fetch_wait_ms);
            let (runner, probe, publisher) = match built {
                Ok(parts) => parts,
                Err(error) => {
                    delete_topics(&config).await;
                    return Err(error);
                }
            };
            let task_runner = runner.clone();
            let token = cancel.child_token();
            tasks.push((
                "consumer",
                tokio::spawn(async move {
                    task_runner.run(token).await;
                }),
            ));
            let lag = Arc::new(Mutex::new(String::new()));
            tasks.push((
                "lag probe",
                tokio::spawn(watch_lag(
                    runner.clone(),
                    probe.clone(),
                    run.clone(),
                    args.partitions,
                    lag.clone(),
                    cancel.child_token(),
                )),
            ));
            let measured = Arc::new(Acked { inner: publisher.clone(), tracker: tracker.clone() });
            kafka_run = Some(KafkaRun { config, group: run, runner, probe, lag, publisher });
            measured
        }
    };
    let mut relay_config = RelayConfig::new(format!("iaas-load-relay-{}", EventId::new_v7()));
    if let Some(batch) = args.relay_batch {
        relay_config.batch_size = batch;
    }
    if let Some(ms) = args.relay_idle_ms {
        relay_config.idle_interval = Duration::from_millis(ms);
    }
    let relay = Arc::new(OutboxRelay::new(outbox, publisher, Arc::new(SystemClock), relay_config));
    let task_relay = relay.clone();
    let token = cancel.child_token();
    tasks.push((
        "relay",
        tokio::spawn(async move {
            task_relay.run(token).await;
        }),
    ));
    Ok(Pipeline { relay, kafka: kafka_run, cancel, tasks })
}

type KafkaParts = (Arc<KafkaConsumerRunner>, Arc<BaseConsumer>, Arc<dyn EventPublisher>);

/// The consumer runner (its own group, lag measured every second), the committed-offset probe
/// of that group and the publisher.
fn kafka_parts(
    config: &KafkaConfig,
    group: &str,
    indexer: Arc<dyn EventHandler>,
    fetch_wait_ms: Option<u64>,
) -> Result<KafkaParts, String> {
    let mut consumer = ConsumerConfig::new(config.clone(), group);
    consumer.lag_interval = Duration::from_secs(1);
    if let Some(ms) = fetch_wait_ms {
        consumer.extra.insert("fetch.wait.max.ms".to_owned(), ms.to_string());
    }
    let runner = KafkaConsumerRunner::new(consumer, indexer)
        .map_err(|e| format!("starting the consumer on {}: {e}", config.brokers))?;
    // Never subscribes: it only reads the group's committed offsets and the watermarks.
    let probe: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("creating the lag probe on {}: {e}", config.brokers))?;
    let publisher = KafkaPublisher::new(config)
        .map_err(|e| format!("creating the publisher on {}: {e}", config.brokers))?;
    Ok((Arc::new(runner), Arc::new(probe), Arc::new(publisher)))
}

/// Deletes the run's topic and its dead-letter topic; failures are printed, not fatal.
async fn delete_topics(config: &KafkaConfig) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = match config.client_config().create() {
        Ok(admin) => admin,
        Err(error) => {
            eprintln!("iaas-load: cannot delete topic {}: admin client: {error}", config.topic);
            return;
        }
    };
    let dlq = format!("{}.dlq", config.topic);
    let options = AdminOptions::new()
        .operation_timeout(Some(TOPIC_TIMEOUT))
        .request_timeout(Some(TOPIC_TIMEOUT));
    match admin.delete_topics(&[config.topic.as_str(), dlq.as_str()], &options).await {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(topic) => println!("deleted topic {topic}"),
                    // The dead-letter topic exists only if something was dead-lettered.
                    Err((topic, rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition))
                        if topic == dlq => {}
                    Err((topic, code)) => {
                        eprintln!("iaas-load: deleting topic {topic}: {code}");
                    }
                }
            }
        }
        Err(error) => eprintln!("iaas-load: deleting topic {}: {error}", config.topic),
    }
}

/// Measures the Kafka lag once a second into `into` until `cancel` fires: the runner's own lag
/// and the lag of the group's committed offsets. The probe's calls block (a broker round trip
/// each, up to [`KAFKA_QUERY_TIMEOUT`] when the broker does not answer), so they run on the
/// blocking pool, and this task ends only between two measurements: the probe is never
/// dropped, nor the runtime shut down, under a call in flight.
async fn watch_lag(
    runner: Arc<KafkaConsumerRunner>,
    probe: Arc<BaseConsumer>,
    topic: String,
    partitions: i32,
    into: Arc<Mutex<String>>,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let (probe, topic) = (probe.clone(), topic.clone());
        let committed =
            tokio::task::spawn_blocking(move || committed_lag(&probe, &topic, partitions)).await;
        let committed = match committed {
            Ok(Ok(lag)) => lag.to_string(),
            Ok(Err(error)) => format!("? ({error})"),
            Err(error) => format!("? (the probe call ended abnormally: {error})"),
        };
        *into.lock().unwrap_or_else(PoisonError::into_inner) =
            format!("kafka lag {}  committed lag {committed}", runner.stats().lag);
    }
}

/// The committed-offset lag of `group` on `topic`, summed over `partitions`.
fn committed_lag(probe: &BaseConsumer, topic: &str, partitions: i32) -> Result<u64, String> {
    let mut wanted = TopicPartitionList::new();
    for partition in 0..partitions {
        wanted.add_partition(topic, partition);
    }
    let committed = probe
        .committed_offsets(wanted, KAFKA_QUERY_TIMEOUT)
        .map_err(|e| format!("committed offsets: {e}"))?;
    let mut total = 0;
    for element in committed.elements() {
        let (low, high) =
            probe
                .fetch_watermarks(topic, element.partition(), KAFKA_QUERY_TIMEOUT)
                .map_err(|e| format!("watermarks of {topic}/{}: {e}", element.partition()))?;
        let offset = match element.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        };
        total += partition_lag(offset, low, high);
    }
    Ok(total)
}

/// Writes the events, prints progress, drains, reports. Errs when events were lost.
async fn drive(
    args: &PipelineArgs,
    store: &Store,
    pipeline: &Pipeline,
    tracker: &Arc<Tracker>,
) -> Result<Summary, String> {
    let total = events_for(args.rate, Duration::from_secs(args.duration));
    let owners: Arc<Vec<UserId>> = Arc::new((0..OWNERS).map(|_| UserId::new_random()).collect());
    let next = Arc::new(AtomicU64::new(0));
    println!(
        "pipeline: {} bus, {} store, {} events/s for {} s ({total} events), {} writers{}",
        match args.bus {
            BusKind::InProcess => "in-process",
            BusKind::Kafka => "kafka",
        },
        match args.store {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        },
        args.rate,
        args.duration,
        args.writers,
        pipeline
            .kafka
            .as_ref()
            .map(|k| format!(", topic and group {} on {}", k.group, k.config.brokers))
            .unwrap_or_default(),
    );
    if let Some(kafka) = pipeline.kafka.as_ref().filter(|_| !args.cold) {
        let took = warm_up(kafka.publisher.as_ref(), tracker).await?;
        println!(
            "warm-up: one event published and handled in {took:.1?} (the producer's and the \
             consumer group's start-up; not measured, counted as foreign)"
        );
    }

    let started = Instant::now();
    let progress = start_progress(started, tracker.clone(), pipeline);
    let writers: Vec<_> = (0..args.writers)
        .map(|_| {
            tokio::spawn(write_events(
                store.instances.clone(),
                pipeline.relay.clone(),
                tracker.clone(),
                owners.clone(),
                next.clone(),
                total,
                args.rate,
                started,
            ))
        })
        .collect();
    for writer in writers {
        writer.await.map_err(|e| format!("a writer failed: {e}"))?;
    }
    let writing = started.elapsed();
    tracker
        .handled_at_end_of_writing
        .store(tracker.handled.load(Ordering::Relaxed), Ordering::Relaxed);
    // The backlog is deepest now; the progress lines sample it only once a second.
    match store.outbox.stats().await {
        Ok(stats) => {
            tracker.max_pending.fetch_max(stats.pending, Ordering::Relaxed);
        }
        Err(error) => println!("reading the outbox's depth at the end of the writing: {error}"),
    }

    let drain_deadline = Instant::now() + Duration::from_secs(args.drain_timeout);
    while tracker.lost() > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    let elapsed = started.elapsed();
    progress.stop();
    let summary = print_report(args, tracker, writing, elapsed);
    let lost = tracker.lost();
    if lost > 0 {
        return Err(format!(
            "{lost} of {} written events were not handled within {} s of the end of the \
             writing ({} still pending in the outbox at the last count)",
            tracker.written.load(Ordering::Relaxed),
            args.drain_timeout,
            pipeline.relay.stats().pending,
        ));
    }
    Ok(summary)
}

/// Publishes one event straight to the bus (not through the outbox, so the tracker does not
/// know it) and waits until the handler saw it: by then the producer has its id and the topic's
/// metadata and the consumer has joined its group and been assigned the partitions, as in a
/// platform that has been running for a while. Returns how long that took.
async fn warm_up(publisher: &dyn EventPublisher, tracker: &Tracker) -> Result<Duration, String> {
    let started = Instant::now();
    let event = InfrastructureEvent::new(
        iaas_core::InstanceId::new_random(),
        UserId::new_random(),
        iaas_core::InstanceKind::Nginx,
        EventAction::Created,
        SystemClock.now(),
    );
    publisher.publish(&event).await.map_err(|e| {
        format!("publishing the warm-up event {}: {}", event.id, iaas_core::error_chain(&e))
    })?;
    let deadline = started + WARM_UP_TIMEOUT;
    while tracker.foreign.load(Ordering::Relaxed) == 0 {
        if Instant::now() >= deadline {
            return Err(format!(
                "the warm-up event {} was not handled within {WARM_UP_TIMEOUT:?}",
                event.id
            ));
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    Ok(started.elapsed())
}

fn start_progress(started: Instant, tracker: Arc<Tracker>, pipeline: &Pipeline) -> Progress {
    let relay = pipeline.relay.clone();
    // Only the text the lag task wrote: the progress task holds no Kafka client, so stopping it
    // (an abort) never drops one.
    let lag = pipeline.kafka.as_ref().map(|k| k.lag.clone());
    let mut last = (0u64, 0u64);
    Progress::start(started, move |_| {
        let written = tracker.written.load(Ordering::Relaxed);
        let handled = tracker.handled.load(Ordering::Relaxed);
        let pending = relay.stats().pending;
        tracker.max_pending.fetch_max(pending, Ordering::Relaxed);
        let mut line = format!(
            "written {written} (+{}/s)  handled {handled} (+{}/s)  in flight {}  outbox pending {pending}",
            written - last.0,
            handled - last.1,
            in_flight(written, handled),
        );
        last = (written, handled);
        // The slowest events of the last second show when a tail happened, which the
        // percentiles at the end cannot.
        let slowest_ack = tracker.slowest_ack_us.swap(0, Ordering::Relaxed);
        if lag.is_some() {
            line.push_str(&format!("  slowest acked {:.1} ms", slowest_ack as f64 / 1000.0));
        }
        let slowest_e2e = tracker.slowest_e2e_us.swap(0, Ordering::Relaxed);
        line.push_str(&format!("  slowest e2e {:.1} ms", slowest_e2e as f64 / 1000.0));
        if let Some(lag) = &lag {
            line.push_str("  ");
            line.push_str(&lag.lock().unwrap_or_else(PoisonError::into_inner));
        }
        line
    })
}

/// One writer: takes event numbers until `total` and writes each at its due time.
#[allow(clippy::too_many_arguments, reason = "the writer's shared state, spelled out")]
async fn write_events(
    instances: Arc<dyn InstanceRepository>,
    relay: Arc<OutboxRelay>,
    tracker: Arc<Tracker>,
    owners: Arc<Vec<UserId>>,
    next: Arc<AtomicU64>,
    total: u64,
    rate: f64,
    started: Instant,
) {
    let clock = SystemClock;
    loop {
        let number = next.fetch_add(1, Ordering::Relaxed);
        if number >= total {
            return;
        }
        tokio::time::sleep_until((started + due_offset(number, rate)).into()).await;
        let owner = owners[usize::try_from(number).unwrap_or(0) % owners.len()];
        let name = match InstanceName::new(format!("load-{number}")) {
            Ok(name) => name,
            Err(error) => {
                tracker.failed(EventId::new_v7(), format!("instance name load-{number}: {error}"));
                continue;
            }
        };
        let now = clock.now();
        let instance = match Instance::new(
            owner,
            name,
            InstanceSpec::Nginx(NginxSpec::default()),
            Resources::default(),
            now,
        ) {
            Ok(instance) => instance,
            Err(error) => {
                tracker.failed(EventId::new_v7(), format!("instance load-{number}: {error}"));
                continue;
            }
        };
        let event = InfrastructureEvent::new(
            instance.id,
            owner,
            instance.kind(),
            EventAction::Created,
            now,
        );
        let began = Instant::now();
        tracker.begin(event.id);
        match instances.create_instance(&instance, &event).await {
            Ok(()) => {
                tracker.committed(began.elapsed());
                relay.wake();
            }
            Err(error) => tracker.failed(
                event.id,
                format!("writing instance load-{number}: {}", iaas_core::error_chain(&error)),
            ),
        }
    }
}

/// Prints the run's report; what it came to.
fn print_report(
    args: &PipelineArgs,
    tracker: &Tracker,
    writing: Duration,
    elapsed: Duration,
) -> Summary {
    let written = tracker.written.load(Ordering::Relaxed);
    let handled = tracker.handled.load(Ordering::Relaxed);
    println!(
        "\nwrote {written} events in {:.1} s ({:.0}/s, target {}/s); all handled after {:.1} s",
        writing.as_secs_f64(),
        report::rate(written, writing),
        args.rate,
        elapsed.as_secs_f64(),
    );
    report::print_header("latency");
    let mut commits =
        std::mem::take(&mut *tracker.commits.lock().unwrap_or_else(PoisonError::into_inner));
    report::print_row(
        "commit",
        &mut commits,
        tracker.write_errors.load(Ordering::Relaxed),
        writing,
    );
    let mut end_to_end =
        std::mem::take(&mut *tracker.end_to_end.lock().unwrap_or_else(PoisonError::into_inner));
    let mut acks =
        std::mem::take(&mut *tracker.acks.lock().unwrap_or_else(PoisonError::into_inner));
    if !acks.is_empty() {
        report::print_row("acked", &mut acks, 0, elapsed);
    }
    // `print_row` sorts in place; sorted here too, so the figures never depend on it.
    acks.sort_unstable();
    report::print_row("e2e", &mut end_to_end, 0, elapsed);
    end_to_end.sort_unstable();
    let ms = |p: f64| report::percentile(&end_to_end, p).as_secs_f64() * 1000.0;
    let acked_ms = |p: f64| report::percentile(&acks, p).as_secs_f64() * 1000.0;
    let summary = Summary {
        rate: args.rate,
        written_per_s: report::rate(written, writing),
        handled_per_s: report::rate(
            tracker.handled_at_end_of_writing.load(Ordering::Relaxed),
            writing,
        ),
        max_pending: tracker.max_pending.load(Ordering::Relaxed),
        acked_ms: (acked_ms(0.5), acked_ms(0.99)),
        e2e_ms: (ms(0.5), ms(0.99)),
        drained_secs: elapsed.saturating_sub(writing).as_secs_f64(),
    };
    println!(
        "written {written}  handled {handled}  lost {}  duplicates {}  foreign {}  write errors {}",
        tracker.lost(),
        tracker.duplicates.load(Ordering::Relaxed),
        tracker.foreign.load(Ordering::Relaxed),
        tracker.write_errors.load(Ordering::Relaxed),
    );
    if let Some(error) = tracker.first_error.lock().unwrap_or_else(PoisonError::into_inner).as_ref()
    {
        println!("first error: {error}");
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_due_evenly_over_the_run() {
        assert_eq!(due_offset(0, 1000.0), Duration::ZERO);
        assert_eq!(due_offset(1000, 1000.0), Duration::from_secs(1));
        assert_eq!(due_offset(250, 500.0), Duration::from_millis(500));
        assert_eq!(due_offset(7, 0.0), Duration::ZERO);
    }

    #[test]
    fn a_run_writes_rate_times_duration_events() {
        assert_eq!(events_for(1000.0, Duration::from_secs(20)), 20_000);
        assert_eq!(events_for(200.0, Duration::from_secs(2)), 400);
        assert_eq!(events_for(0.0, Duration::from_secs(2)), 0);
    }

    #[test]
    fn lag_counts_from_the_committed_offset_or_the_start_of_the_partition() {
        assert_eq!(partition_lag(Some(90), 0, 100), 10);
        assert_eq!(partition_lag(None, 20, 100), 80, "nothing committed: all retained");
        assert_eq!(partition_lag(Some(100), 0, 100), 0);
        assert_eq!(partition_lag(Some(5), 20, 100), 80, "committed below the low watermark");
        assert_eq!(partition_lag(Some(120), 0, 100), 0, "never negative");
        assert_eq!(in_flight(10, 4), 6);
        assert_eq!(in_flight(4, 10), 0);
    }

    #[test]
    fn an_event_handled_twice_counts_once_and_an_unknown_one_is_foreign() {
        let tracker = Tracker::default();
        let id = EventId::new_v7();
        tracker.begin(id);
        tracker.committed(Duration::from_millis(1));
        assert_eq!(tracker.lost(), 1);
        tracker.handled(id);
        tracker.handled(id);
        tracker.handled(EventId::new_v7());
        assert_eq!(tracker.lost(), 0);
        assert_eq!(tracker.handled.load(Ordering::Relaxed), 1);
        assert_eq!(tracker.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(tracker.foreign.load(Ordering::Relaxed), 1);
        assert_eq!(tracker.end_to_end.lock().map(|l| l.len()).unwrap_or(0), 1);
    }

    #[test]
    fn an_ack_is_timed_once_also_when_the_handler_was_faster() {
        let tracker = Tracker::default();
        let (first, second) = (EventId::new_v7(), EventId::new_v7());
        tracker.begin(first);
        tracker.begin(second);
        tracker.handled(first);
        tracker.acked(first);
        tracker.acked(first);
        tracker.acked(second);
        tracker.acked(EventId::new_v7());
        assert_eq!(tracker.acks.lock().map(|l| l.len()).unwrap_or(0), 2);
        assert_eq!(tracker.lost(), 1, "acknowledged is not handled");
    }

    /// A bus that takes the first `accepts` events of a batch and refuses the next.
    struct Partial {
        accepts: usize,
    }

    #[async_trait]
    impl EventPublisher for Partial {
        async fn publish(&self, _event: &InfrastructureEvent) -> iaas_core::Result<()> {
            Ok(())
        }

        async fn publish_batch(&self, events: &[InfrastructureEvent]) -> BatchOutcome {
            let published = self.accepts.min(events.len());
            let error = (published < events.len())
                .then(|| iaas_core::Error::unavailable("test bus", "publishing", "refused"));
            BatchOutcome { published, error }
        }
    }

    #[tokio::test]
    async fn only_the_acknowledged_prefix_of_a_batch_is_timed() {
        let tracker = Arc::new(Tracker::default());
        let events: Vec<InfrastructureEvent> = (0..3)
            .map(|_| {
                InfrastructureEvent::new(
                    iaas_core::InstanceId::new_random(),
                    UserId::new_random(),
                    iaas_core::InstanceKind::Nginx,
                    EventAction::Created,
                    SystemClock.now(),
                )
            })
            .collect();
        for event in &events {
            tracker.begin(event.id);
        }
        let publisher = Acked { inner: Arc::new(Partial { accepts: 2 }), tracker: tracker.clone() };
        let outcome = publisher.publish_batch(&events).await;
        assert_eq!(outcome.published, 2);
        assert!(outcome.error.is_some(), "the refusal is passed on");
        let acked: Vec<bool> = {
            let fates = tracker.fates();
            events.iter().map(|e| fates.get(&e.id).is_some_and(|fate| fate.acked)).collect()
        };
        assert_eq!(acked, [true, true, false]);
        assert_eq!(tracker.acks.lock().map(|l| l.len()).unwrap_or(0), 2);
    }

    #[test]
    fn a_failed_write_is_not_counted_as_lost() {
        let tracker = Tracker::default();
        let id = EventId::new_v7();
        tracker.begin(id);
        tracker.failed(id, "disk full".to_owned());
        assert_eq!(tracker.lost(), 0);
        assert_eq!(tracker.write_errors.load(Ordering::Relaxed), 1);
    }
}
