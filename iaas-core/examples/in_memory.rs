//! iaas-core on its own, in a small tokio program: the domain model, the ports and the
//! in-memory adapters that implement them, wired by hand instead of through iaas-platform.
//!
//! It provisions a PostgreSQL instance within a quota, moves it through its life cycle, relays
//! the events its writes left in the outbox to a bus, and consumes them the way a service on
//! the other side of the bus does: decoding the versioned JSON and dropping a redelivery.
//!
//! Run it with `cargo run -p iaas-core --example in_memory`. It needs nothing but this crate:
//! no database, broker or container engine. To persist, swap the repository for a store of
//! iaas-store; to reach other processes, swap the publisher for a bus of iaas-events.
#![allow(clippy::print_stdout, reason = "an example reports what it did")]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use iaas_core::memory::{MemoryInstanceRepository, MemoryPublisher, RecordingHandler};
use iaas_core::{
    EventAction, EventHandler, EventPublisher, InfrastructureEvent, Instance, InstanceName,
    InstanceRepository, InstanceSpec, InstanceStatus, NginxSpec, Outbox, PostgresSpec, Quota,
    Resources, StatusChange, UserId,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The program holds ports, not adapters: one in-memory repository is both the instance
    // store and its transactional outbox.
    let repo = Arc::new(MemoryInstanceRepository::new());
    let instances: Arc<dyn InstanceRepository> = repo.clone();
    let outbox: Arc<dyn Outbox> = repo;
    let bus = Arc::new(MemoryPublisher::new());
    let consumer = RecordingHandler::new();

    // Model: a validated instance, stored with its `created` event if it fits the quota.
    let owner = UserId::new_random();
    let quota = Quota::default();
    let spec = InstanceSpec::Postgres(PostgresSpec::new("orders", 1));
    let name = InstanceName::new("orders-db")?;
    let db = Instance::new(owner, name, spec, Resources::default(), Utc::now())?;
    let created =
        InfrastructureEvent::new(db.id, owner, db.kind(), EventAction::Created, Utc::now());
    instances.create_instance_within(&db, &created, &quota).await?;
    println!("created {} ({}): {}, version {}", db.name, db.kind(), db.status, db.version);

    // The quota is checked in the same write: this one asks for more CPU than one may.
    let greedy = Resources { millicpus: 8_000, ..Resources::default() };
    let web = InstanceSpec::Nginx(NginxSpec::default());
    let big = Instance::new(owner, InstanceName::new("big-web")?, web, greedy, Utc::now())?;
    let event =
        InfrastructureEvent::new(big.id, owner, big.kind(), EventAction::Created, Utc::now());
    match instances.create_instance_within(&big, &event, &quota).await {
        Err(refused) => println!("refused {}: {refused}", big.name),
        Ok(()) => return Err("the quota should have refused big-web".into()),
    }

    // Life cycle: a status change and its event are written together, against the version the
    // writer read, so a stale writer cannot overwrite a newer state.
    let started =
        InfrastructureEvent::new(db.id, owner, db.kind(), EventAction::Started, Utc::now())
            .with_metadata("container", "orders-db-0");
    let change = StatusChange {
        id: db.id,
        expected_version: Some(db.version),
        to: InstanceStatus::Running,
        event: started,
        at: Utc::now(),
    };
    let db = instances.update_status(change.clone()).await?;
    println!("{} is {} at version {}", db.name, db.status, db.version);
    match instances.update_status(change).await {
        Err(stale) => println!("stale write refused: {stale}"),
        Ok(_) => return Err("a write at an old version should conflict".into()),
    }

    // Relay: claim what the writes left in the outbox, publish it in order, mark it sent.
    let claimed = outbox.claim("relay-1", 100, Duration::from_secs(30)).await?;
    let events: Vec<InfrastructureEvent> =
        claimed.iter().map(|entry| entry.event.clone()).collect();
    let outcome = bus.publish_batch(&events).await;
    if let Some(error) = outcome.error {
        return Err(error.into());
    }
    let sent: Vec<u64> = claimed[..outcome.published].iter().map(|entry| entry.seq).collect();
    outbox.mark_sent("relay-1", &sent).await?;
    println!("relayed {} events, {} still pending", sent.len(), outbox.stats().await?.pending);

    // Consumer: events travel as versioned JSON and arrive at least once.
    for published in bus.published() {
        let wire = published.to_json();
        let event = InfrastructureEvent::from_json(&wire)?;
        consumer.handle(&event).await?;
        consumer.handle(&event).await?; // a redelivery, recognised by the event id
    }
    let names: Vec<String> = consumer.events().iter().map(InfrastructureEvent::name).collect();
    println!("consumer handled {names:?}, dropped {} duplicates", consumer.duplicates());

    // A producer from the future: the decoder refuses the version and names the field.
    let mut future: serde_json::Value = serde_json::from_slice(&events[0].to_json())?;
    future["version"] = 2.into();
    match InfrastructureEvent::from_json_value(future) {
        Err(refused) => println!("refused (field {:?}): {refused}", refused.field().unwrap_or("-")),
        Ok(_) => return Err("version 2 should not decode".into()),
    }
    Ok(())
}
