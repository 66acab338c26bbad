//! Outbox throughput on SQLite and PostgreSQL: write a batch of instances (each row with its
//! event, one transaction per instance), then claim the batch and mark it sent, as the relay
//! does. Throughput is in events.
//!
//! PostgreSQL comes from `IAAS_TEST_POSTGRES_URL` (a fresh database is created on it); without
//! it the PostgreSQL case is skipped with a printed reason.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a bench panics to report a failure")]

use std::time::Duration;

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iaas_core::{
    EventAction, InfrastructureEvent, Instance, InstanceName, InstanceRepository, InstanceSpec,
    NginxSpec, Outbox, Resources, UserId,
};
use iaas_store::{PostgresConfig, PostgresStore, SqliteConfig, SqliteStore};

const BATCH: u32 = 100;
const LEASE: Duration = Duration::from_secs(60);

async fn write_claim_mark<S: InstanceRepository + Outbox>(store: &S) {
    for _ in 0..BATCH {
        let instance = Instance::new(
            UserId::new_random(),
            InstanceName::new("web").unwrap(),
            InstanceSpec::Nginx(NginxSpec::default()),
            Resources::default(),
            Utc::now(),
        )
        .unwrap();
        let event = InfrastructureEvent::new(
            instance.id,
            instance.owner,
            instance.kind(),
            EventAction::Created,
            Utc::now(),
        );
        store.create_instance(&instance, &event).await.unwrap();
    }
    let claimed = store.claim("bench", BATCH, LEASE).await.unwrap();
    assert_eq!(claimed.len(), BATCH as usize);
    let seqs: Vec<u64> = claimed.iter().map(|e| e.seq).collect();
    store.mark_sent("bench", &seqs).await.unwrap();
}

fn outbox(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("outbox_write_claim_mark");
    group.throughput(Throughput::Elements(u64::from(BATCH)));
    group.sample_size(20);

    let dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name("iaas-bench"));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = rt.block_on(SqliteStore::open(&SqliteConfig::new(dir.join("bench.db")))).unwrap();
    group.bench_function("sqlite", |b| b.to_async(&rt).iter(|| write_claim_mark(&sqlite)));

    match std::env::var("IAAS_TEST_POSTGRES_URL") {
        Ok(_) => {
            let (store, db) = rt.block_on(async {
                let server = iaas_testkit::postgres().await.unwrap();
                let db = iaas_testkit::TestDatabase::create(&server, "bench_outbox").await.unwrap();
                let store = PostgresStore::connect(&PostgresConfig::new(db.url())).await.unwrap();
                (store, db)
            });
            group.bench_function("postgres", |b| b.to_async(&rt).iter(|| write_claim_mark(&store)));
            rt.block_on(async {
                store.pool().close().await;
                db.drop_database().await.unwrap();
            });
        }
        Err(_) => eprintln!(
            "skipping outbox_write_claim_mark/postgres: IAAS_TEST_POSTGRES_URL is not set"
        ),
    }
    group.finish();
    std::fs::remove_dir_all(dir).unwrap();
}

criterion_group!(benches, outbox);
criterion_main!(benches);
