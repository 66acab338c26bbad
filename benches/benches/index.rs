//! The embedded monitoring log index (SQLite + FTS5).
//!
//! Ingest, on a fresh file in the temp dir: batches of 100 and 1,000 through `LogIndex::index`;
//! one entry per call (a consumer delivering events one by one); 8 overlapping callers
//! through `MonitoringIndexer` (its group commit); the consumer path as the runners drive it
//! now, `MonitoringIndexer::handle_batch` with the batches a runner forms under backlog (500,
//! the default `max_batch`) and when lightly loaded (50), beside the same events handed over
//! one `handle` call at a time (what the runners did before batches); and end to end, the
//! in-process bus delivering the outbox relay's rounds of 100 to the indexer. Baseline in the
//! same run: the same rows by a plain multi-row `INSERT` into a table without the secondary
//! indexes and the FTS5 table (`raw_insert_batch_1000`): what SQLite alone costs through sqlx
//! on this disk.
//!
//! Query, on a 1M-entry index built once into `CARGO_TARGET_TMPDIR` and reused across runs
//! (1,000 users, 10,000 instances, 100 entries each): one instance's latest page, a user's
//! latest page, and a text query. Criterion reports the mean; the latency distribution over
//! 2,000 instance queries on random instances is printed (p50 / p95 / p99). The 1M build goes
//! through the consumer path (`handle_batch`, batches of 500) and prints its rate per 100,000
//! entries; set `IAAS_BENCH_REBUILD_1M=1` to rebuild it (and so measure ingest at 1M).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a bench panics to report a failure")]
#![allow(clippy::print_stdout, reason = "a bench prints its latency distribution")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iaas_core::{
    EventAction, EventHandler, EventPublisher, InfrastructureEvent, InstanceId, InstanceKind,
    UserId,
};
use iaas_events::InProcessBus;
use iaas_events::monitoring::{
    LogEntry, LogIndex, LogQuery, MonitoringIndexer, SqliteIndexConfig, SqliteLogIndex,
};

const ACTIONS: [EventAction; 4] =
    [EventAction::Created, EventAction::Started, EventAction::Stopped, EventAction::Failed];
const BIG_ENTRIES: usize = 1_000_000;
const BIG_USERS: usize = 1_000;
const BIG_INSTANCES: usize = 10_000;
/// Bump when the schema or the generated data change, so a stale cached file is not reused.
const BIG_VERSION: u32 = 3;
/// The batch a consumer runner forms under backlog (its default `max_batch`).
const RUNNER_BATCH: usize = MonitoringIndexer::MAX_BATCH;
/// Events per round of the outbox relay (its default `batch_size`).
const RELAY_ROUND: usize = 100;

fn event(user: UserId, instance: InstanceId, i: usize) -> InfrastructureEvent {
    let at = DateTime::from_timestamp(1_750_000_000 + i64::try_from(i).unwrap(), 0)
        .unwrap_or_else(Utc::now);
    InfrastructureEvent::new(instance, user, InstanceKind::Postgres, ACTIONS[i % 4].clone(), at)
        .with_metadata("container", format!("pg-{}", i % 1000))
        .with_metadata("exit_code", (i % 3).to_string())
}

fn entry(user: UserId, instance: InstanceId, i: usize) -> LogEntry {
    LogEntry::from_event(&event(user, instance, i))
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Opens with the defaults, or with the untuned settings (16 MiB cache, no
/// memory map, SQLite's checkpoint every 1,000 pages) when `IAAS_BENCH_INDEX_SETTINGS=legacy`,
/// to compare the two on the same machine.
fn open(rt: &tokio::runtime::Runtime, path: PathBuf) -> SqliteLogIndex {
    let mut config = SqliteIndexConfig::new(path);
    if std::env::var("IAAS_BENCH_INDEX_SETTINGS").is_ok_and(|s| s == "legacy") {
        println!("index settings: legacy (16 MiB cache, no mmap, checkpoint every 1,000 pages)");
        config.cache_kib = 16 * 1024;
        config.mmap_bytes = 0;
        config.wal_autocheckpoint_pages = 1_000;
    }
    rt.block_on(SqliteLogIndex::open(&config)).unwrap()
}

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = fresh_dir("iaas-bench-index-ingest");
    let index = open(&rt, dir.join("logs.db"));
    let user = UserId::new_random();
    let instance = InstanceId::new_random();
    let mut group = c.benchmark_group("log_index_ingest");
    group.sample_size(20);

    let index_ref = &index;
    for batch in [100, 1_000] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("sqlite_batch_{batch}"), |b| {
            b.to_async(&rt).iter_batched(
                || (0..batch).map(|i| entry(user, instance, i)).collect::<Vec<_>>(),
                |entries| async move { index_ref.index(&entries).await.unwrap() },
                criterion::BatchSize::SmallInput,
            );
        });
    }

    // Baseline: the same rows, no secondary indexes, no FTS5, one multi-row INSERT.
    let raw = rt.block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.join("raw.db"))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE raw (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL, instance_id TEXT,
             user_id TEXT, kind TEXT, action TEXT, level TEXT, message TEXT, metadata TEXT,
             ts_us INTEGER)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool
    });
    let raw = &raw;
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("raw_insert_batch_1000", |b| {
        b.to_async(&rt).iter_batched(
            || (0..1_000).map(|i| entry(user, instance, i)).collect::<Vec<_>>(),
            |entries| async move {
                for chunk in entries.chunks(500) {
                    let mut sql = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                        "INSERT INTO raw (event_id, instance_id, user_id, kind, action, level, \
                         message, metadata, ts_us) ",
                    );
                    sql.push_values(chunk, |mut row, e| {
                        row.push_bind(e.event_id.to_string())
                            .push_bind(e.instance_id.to_string())
                            .push_bind(e.user_id.to_string())
                            .push_bind(e.kind.as_str())
                            .push_bind(e.action.as_str())
                            .push_bind(e.level.as_str())
                            .push_bind(e.message.clone())
                            .push_bind(serde_json::to_string(&e.metadata).unwrap())
                            .push_bind(e.timestamp.timestamp_micros());
                    });
                    sql.build().execute(raw).await.unwrap();
                }
            },
            criterion::BatchSize::SmallInput,
        );
    });

    group.throughput(Throughput::Elements(1));
    group.bench_function("sqlite_one_per_call", |b| {
        b.to_async(&rt).iter(|| async {
            index.index(&[entry(user, instance, 7)]).await.unwrap();
        });
    });

    // The consumer path: 8 overlapping `handle` calls share the indexer's group commit.
    let indexer = MonitoringIndexer::new(Arc::new(index.clone()));
    group.throughput(Throughput::Elements(8));
    group.bench_function("indexer_8_overlapping_calls", |b| {
        b.to_async(&rt).iter_batched(
            || (0..8).map(|i| event(user, instance, i)).collect::<Vec<_>>(),
            |events| {
                let indexer = indexer.clone();
                async move {
                    let calls = events.into_iter().map(|event| {
                        let indexer = indexer.clone();
                        tokio::spawn(async move { indexer.handle(&event).await })
                    });
                    for call in calls.collect::<Vec<_>>() {
                        call.await.unwrap().unwrap();
                    }
                }
            },
            criterion::BatchSize::SmallInput,
        );
    });

    // The consumer path with batches: one `handle_batch` call per batch the runner formed,
    // beside the same events handed over one `handle` call at a time.
    let instances: Vec<InstanceId> = (0..100).map(|_| InstanceId::new_random()).collect();
    let instances = &instances;
    let events = move |n: usize| -> Vec<InfrastructureEvent> {
        (0..n).map(|i| event(user, instances[i % instances.len()], i)).collect()
    };
    for batch in [RUNNER_BATCH, 50] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("indexer_handle_batch_{batch}"), |b| {
            b.to_async(&rt).iter_batched(
                || events(batch),
                |events| {
                    let indexer = indexer.clone();
                    async move {
                        let results = indexer.handle_batch(&events).await;
                        assert!(results.len() == events.len() && results.iter().all(Result::is_ok));
                    }
                },
                criterion::BatchSize::SmallInput,
            );
        });
    }
    group.throughput(Throughput::Elements(50));
    group.bench_function("indexer_handle_one_by_one_50", |b| {
        b.to_async(&rt).iter_batched(
            || events(50),
            |events| {
                let indexer = indexer.clone();
                async move {
                    for event in &events {
                        indexer.handle(event).await.unwrap();
                    }
                }
            },
            criterion::BatchSize::SmallInput,
        );
    });

    // End to end, embedded: the relay's rounds published on the in-process bus, delivered to
    // the indexer subscribed as the monitoring group.
    let bus = InProcessBus::new();
    let _member = bus.subscribe("monitoring", Arc::new(indexer.clone()));
    let bus = &bus;
    group.throughput(Throughput::Elements(10 * RELAY_ROUND as u64));
    group.bench_function("in_process_bus_to_indexer_1000", |b| {
        b.to_async(&rt).iter_batched(
            || events(10 * RELAY_ROUND),
            |events| async move {
                for round in events.chunks(RELAY_ROUND) {
                    let outcome = bus.publish_batch(round).await;
                    assert!(outcome.error.is_none() && outcome.published == round.len());
                }
            },
            criterion::BatchSize::SmallInput,
        );
    });
    group.finish();
    drop(index);
    std::fs::remove_dir_all(&dir).ok();
}

/// The owner of instance `n` and the instance ids, derived from fixed seeds so the cached file
/// and this run agree on them.
fn big_ids() -> (Vec<UserId>, Vec<InstanceId>) {
    let id = |prefix: u128, n: usize| uuid_from(prefix << 64 | n as u128);
    let users = (0..BIG_USERS).map(|n| UserId::from(id(1, n))).collect();
    let instances = (0..BIG_INSTANCES).map(|n| InstanceId::from(id(2, n))).collect();
    (users, instances)
}

fn uuid_from(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(n)
}

/// Opens the cached 1M-entry index, building it first when missing or incomplete.
fn big_index(rt: &tokio::runtime::Runtime) -> SqliteLogIndex {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("log-index-1m-v{BIG_VERSION}"));
    let done = dir.join("complete");
    if !done.exists() || std::env::var_os("IAAS_BENCH_REBUILD_1M").is_some() {
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        let index = open(rt, dir.join("logs.db"));
        let (users, instances) = big_ids();
        // Through the consumer path, in the batches a runner forms under backlog.
        let indexer = MonitoringIndexer::new(Arc::new(index.clone()));
        let started = Instant::now();
        let mut rates = Vec::new();
        rt.block_on(async {
            let mut batch = Vec::with_capacity(RUNNER_BATCH);
            let mut segment = Instant::now();
            for i in 0..BIG_ENTRIES {
                let n = i % BIG_INSTANCES;
                batch.push(event(users[n % BIG_USERS], instances[n], i));
                if batch.len() == RUNNER_BATCH || i + 1 == BIG_ENTRIES {
                    let results = indexer.handle_batch(&batch).await;
                    assert!(results.iter().all(Result::is_ok));
                    batch.clear();
                }
                if (i + 1) % 100_000 == 0 {
                    rates.push((100_000.0 / segment.elapsed().as_secs_f64()) as u64);
                    segment = Instant::now();
                }
            }
        });
        let took = started.elapsed();
        println!(
            "built the 1M-entry index through MonitoringIndexer::handle_batch (batches of \
             {RUNNER_BATCH}) in {took:.1?}: {:.0} entries/s; per 100,000 entries: {rates:?}",
            BIG_ENTRIES as f64 / took.as_secs_f64()
        );
        std::fs::write(&done, b"").unwrap();
        return index;
    }
    open(rt, dir.join("logs.db"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn query(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let index = big_index(&rt);
    let (users, instances) = big_ids();
    let owner = |n: usize| users[n % BIG_USERS];

    // Latency distribution over random instances (cold and warm pages alike).
    let mut latencies = rt.block_on(async {
        let mut latencies = Vec::with_capacity(2_000);
        let mut n: usize = 12_345;
        for _ in 0..2_000 {
            n = (n.wrapping_mul(1_103_515_245).wrapping_add(12_345)) % BIG_INSTANCES;
            let query = LogQuery::for_user(owner(n)).instance(instances[n]);
            let started = Instant::now();
            let page = index.search(&query).await.unwrap();
            latencies.push(started.elapsed());
            assert_eq!(page.entries.len(), 50);
        }
        latencies
    });
    latencies.sort();
    println!(
        "query by instance on 1M entries, 2,000 random instances: p50 {:?} p95 {:?} p99 {:?} max {:?}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );

    let mut group = c.benchmark_group("log_index_query_1m");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sqlite_by_instance_page_50", |b| {
        let query = LogQuery::for_user(owner(42)).instance(instances[42]);
        b.to_async(&rt)
            .iter(|| async { assert_eq!(index.search(&query).await.unwrap().entries.len(), 50) });
    });
    group.bench_function("sqlite_by_user_page_50", |b| {
        let query = LogQuery::for_user(owner(42));
        b.to_async(&rt)
            .iter(|| async { assert_eq!(index.search(&query).await.unwrap().entries.len(), 50) });
    });
    group.bench_function("sqlite_text_page_50", |b| {
        let query = LogQuery::for_user(owner(42)).text("pg 42");
        b.to_async(&rt).iter(|| async { index.search(&query).await.unwrap() });
    });
    group.finish();
}

criterion_group!(benches, ingest, query);
criterion_main!(benches);
