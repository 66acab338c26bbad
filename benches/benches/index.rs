//! The embedded monitoring log index (SQLite + FTS5 on a file in the temp dir): ingest in
//! consumer-sized batches and one entry at a time (the indexer's path, one transaction per
//! event), then queries on a 20 000-entry index: one instance's latest page, a user's latest
//! page, a page deep into the cursor, and a full-text query. Throughput is in entries.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a bench panics to report a failure")]

use chrono::{DateTime, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iaas_core::{EventAction, InfrastructureEvent, InstanceId, InstanceKind, UserId};
use iaas_events::monitoring::{LogEntry, LogIndex, LogQuery, SqliteIndexConfig, SqliteLogIndex};

const BATCH: usize = 100;
const PREFILL: i64 = 20_000;
const INSTANCES: usize = 100;
const ACTIONS: [EventAction; 4] =
    [EventAction::Created, EventAction::Started, EventAction::Stopped, EventAction::Failed];

fn entry(user: UserId, instance: InstanceId, i: i64) -> LogEntry {
    let at = DateTime::from_timestamp(1_750_000_000 + i, 0).unwrap_or_else(Utc::now);
    let action = ACTIONS[usize::try_from(i).unwrap() % ACTIONS.len()].clone();
    let event = InfrastructureEvent::new(instance, user, InstanceKind::Postgres, action, at)
        .with_metadata("container", format!("pg-{}", i % 1000))
        .with_metadata("exit_code", (i % 3).to_string());
    LogEntry::from_event(&event)
}

fn open(rt: &tokio::runtime::Runtime, name: &str) -> SqliteLogIndex {
    let dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name(name));
    std::fs::create_dir_all(&dir).unwrap();
    rt.block_on(SqliteLogIndex::open(&SqliteIndexConfig::new(dir.join("logs.db")))).unwrap()
}

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let index = open(&rt, "iaas-bench-index-ingest");
    let user = UserId::new_random();
    let instance = InstanceId::new_random();
    let mut group = c.benchmark_group("log_index_ingest");
    group.sample_size(20);

    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("sqlite_batch_100", |b| {
        b.to_async(&rt).iter(|| async {
            let batch: Vec<_> = (0..BATCH as i64).map(|i| entry(user, instance, i)).collect();
            index.index(&batch).await.unwrap();
        });
    });

    group.throughput(Throughput::Elements(1));
    group.bench_function("sqlite_one_per_transaction", |b| {
        b.to_async(&rt).iter(|| async {
            index.index(&[entry(user, instance, 7)]).await.unwrap();
        });
    });
    group.finish();
}

fn query(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let index = open(&rt, "iaas-bench-index-query");
    let user = UserId::new_random();
    let instances: Vec<_> = (0..INSTANCES).map(|_| InstanceId::new_random()).collect();
    // Other users' entries share the file, as in production.
    let others: Vec<_> = (0..4).map(|_| UserId::new_random()).collect();
    rt.block_on(async {
        for chunk in (0..PREFILL).collect::<Vec<_>>().chunks(500) {
            let batch: Vec<_> = chunk
                .iter()
                .map(|&i| {
                    let owner =
                        if i % 5 == 0 { user } else { others[usize::try_from(i).unwrap() % 4] };
                    entry(owner, instances[usize::try_from(i).unwrap() % INSTANCES], i)
                })
                .collect();
            index.index(&batch).await.unwrap();
        }
    });
    let target = instances[0];
    let mut group = c.benchmark_group("log_index_query");
    group.throughput(Throughput::Elements(1));

    group.bench_function("sqlite_by_instance_page_50", |b| {
        let query = LogQuery::for_user(user).instance(target);
        b.to_async(&rt)
            .iter(|| async { assert!(!index.search(&query).await.unwrap().entries.is_empty()) });
    });
    group.bench_function("sqlite_by_user_page_50", |b| {
        let query = LogQuery::for_user(user);
        b.to_async(&rt)
            .iter(|| async { assert_eq!(index.search(&query).await.unwrap().entries.len(), 50) });
    });
    let deep = rt.block_on(async {
        let mut cursor = None;
        for _ in 0..20 {
            cursor =
                index.search(&LogQuery::for_user(user).after(cursor)).await.unwrap().next_cursor;
        }
        cursor
    });
    group.bench_function("sqlite_by_user_page_21", |b| {
        let query = LogQuery::for_user(user).after(deep);
        b.to_async(&rt)
            .iter(|| async { assert_eq!(index.search(&query).await.unwrap().entries.len(), 50) });
    });
    group.bench_function("sqlite_text_page_50", |b| {
        let query = LogQuery::for_user(user).text("pg 5");
        b.to_async(&rt).iter(|| async { index.search(&query).await.unwrap() });
    });
    group.finish();
}

criterion_group!(benches, ingest, query);
criterion_main!(benches);
