//! Event codec: encode and decode of a typical event, beside a plain `serde_json` derive of the
//! same shape (the raw baseline), so the cost of field-naming errors and version checks is
//! visible as a ratio.

use std::collections::BTreeMap;
use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iaas_core::{EventAction, InfrastructureEvent, InstanceId, InstanceKind, UserId};

/// The same fields decoded by a derived `Deserialize`: no per-field error naming, no version
/// check.
#[derive(serde::Deserialize)]
#[allow(dead_code, reason = "fields are decoded to be measured, never read")]
struct PlainEvent {
    id: uuid_like::Id,
    instance_id: uuid_like::Id,
    user_id: uuid_like::Id,
    kind: String,
    action: String,
    occurred_at: DateTime<Utc>,
    metadata: BTreeMap<String, String>,
    version: u32,
}

mod uuid_like {
    /// UUIDs are decoded through the same id types as the real codec.
    pub(crate) type Id = iaas_core::EventId;
}

fn typical_event() -> InfrastructureEvent {
    InfrastructureEvent::new(
        InstanceId::new_random(),
        UserId::new_random(),
        InstanceKind::Postgres,
        EventAction::Started,
        Utc::now(),
    )
    .with_metadata(
        "container_id",
        "4f7c0e1b9d2a8f3c6e5d4b3a2918f7e6d5c4b3a291807f6e5d4c3b2a1908f7e6",
    )
    .with_metadata("container_name", "iaas-orders-db-primary")
    .with_metadata("status", "running")
}

fn codec(c: &mut Criterion) {
    let event = typical_event();
    let bytes = event.to_json();
    let mut group = c.benchmark_group("event_codec");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("encode", |b| b.iter(|| black_box(&event).to_json()));
    group
        .bench_function("decode", |b| b.iter(|| InfrastructureEvent::from_json(black_box(&bytes))));
    group.bench_function("decode_baseline_serde_derive", |b| {
        b.iter(|| serde_json::from_slice::<PlainEvent>(black_box(&bytes)))
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
