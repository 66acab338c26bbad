//! The event backbone inside your own tokio program and axum app, with no Kafka and no
//! Elasticsearch:
//!
//! - an `InProcessBus` with two consumer groups: `monitoring` (the crate's `MonitoringIndexer`,
//!   feeding the embedded SQLite log index) and `audit` (a handler of your own);
//! - events committed to the transactional outbox (here `iaas_core`'s in-memory repository) and
//!   moved to the bus by an `OutboxRelay` running in the background, plus one event published
//!   to the bus directly;
//! - `monitoring_router` mounted in your own axum app next to a route of yours, and queried.
//!
//! Run it with `cargo run -p iaas-events --example in_process_app`. It needs nothing else: the
//! log index is a SQLite file in a temporary directory, removed at the end. It uses the default
//! features `embedded-index` and `http`.

#![allow(clippy::print_stdout, reason = "an example shows what it did on stdout")]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::routing::get;
use chrono::Utc;
use http_body_util::BodyExt as _;
use iaas_core::memory::MemoryInstanceRepository;
use iaas_core::{
    EventAction, EventHandler, EventPublisher, HandlerError, InfrastructureEvent, Instance,
    InstanceName, InstanceRepository, InstanceSpec, InstanceStatus, PostgresSpec, Principal,
    Resources, StatusChange, SystemClock, UserId,
};
use iaas_events::monitoring::{
    MonitoringIndexer, SCOPE_EVENTS_READ, SqliteIndexConfig, SqliteLogIndex, monitoring_router,
};
use iaas_events::{InProcessBus, OutboxRelay, RelayConfig};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// A consumer of your own. The bus delivers at least once, so a real handler deduplicates on
/// `event.id`; `Err(HandlerError::Transient(..))` makes the bus retry, `Permanent` dead-letters.
#[derive(Default)]
struct AuditLog {
    seen: AtomicUsize,
}

#[async_trait]
impl EventHandler for AuditLog {
    fn name(&self) -> &str {
        "audit-log"
    }

    async fn handle(&self, event: &InfrastructureEvent) -> Result<(), HandlerError> {
        self.seen.fetch_add(1, Ordering::Relaxed);
        println!("audit: {} (instance {})", event.name(), event.instance_id);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("iaas-events-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let outcome = run(&dir).await;
    std::fs::remove_dir_all(&dir)?;
    outcome
}

async fn run(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    // The embedded log index and the bus, with one consumer group per concern.
    let index =
        Arc::new(SqliteLogIndex::open(&SqliteIndexConfig::new(dir.join("events.db"))).await?);
    let bus = Arc::new(InProcessBus::new());
    let monitoring = bus.subscribe("monitoring", Arc::new(MonitoringIndexer::new(index.clone())));
    let audit = Arc::new(AuditLog::default());
    let auditing = bus.subscribe("audit", audit.clone());

    // The relay drains the outbox into the bus until it is cancelled.
    let repo = Arc::new(MemoryInstanceRepository::new());
    let relay = Arc::new(OutboxRelay::new(
        repo.clone(),
        bus.clone(),
        Arc::new(SystemClock),
        RelayConfig::new("example-relay"),
    ));
    let cancel = CancellationToken::new();
    let relay_task = tokio::spawn({
        let (relay, cancel) = (relay.clone(), cancel.child_token());
        async move { relay.run(cancel).await }
    });

    // Your application's writes: each event is committed together with the change it records.
    let owner = UserId::new_random();
    let spec = InstanceSpec::Postgres(PostgresSpec::new("app", 0));
    let db = Instance::new(
        owner,
        InstanceName::new("orders-db")?,
        spec,
        Resources::default(),
        Utc::now(),
    )?;
    let created =
        InfrastructureEvent::new(db.id, owner, db.kind(), EventAction::Created, Utc::now());
    repo.create_instance(&db, &created).await?;
    let started =
        InfrastructureEvent::new(db.id, owner, db.kind(), EventAction::Started, Utc::now());
    repo.update_status(StatusChange {
        id: db.id,
        expected_version: Some(db.version),
        to: InstanceStatus::Running,
        event: started,
        at: Utc::now(),
    })
    .await?;
    relay.wake();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while relay.stats().published < 2 {
        if tokio::time::Instant::now() >= deadline {
            return Err("the relay did not publish the outbox events within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    let report = relay_task.await?;
    println!(
        "relay: {} events published through the outbox, claims released: {}",
        report.stats.published, report.released_claims
    );

    // An event with no state change to commit can go to the bus directly: `publish` returns
    // once every group has handled it.
    let failed = InfrastructureEvent::new(db.id, owner, db.kind(), EventAction::Failed, Utc::now())
        .with_metadata("reason", "disk full");
    bus.publish(&failed).await?;
    println!(
        "bus: audit saw {} events, {} dead letters",
        audit.seen.load(Ordering::Relaxed),
        bus.dead_letters().len()
    );

    // Your axum app: your routes plus the monitoring API. The API reads the caller from the
    // `Principal` in the request's extensions; this stand-in signs everyone in as `owner`. In a
    // real app that is your authentication layer, e.g. iaas-auth's `http::principal_layer`.
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(monitoring_router(index.clone()))
        .layer(middleware::from_fn(move |mut request: Request, next: Next| async move {
            request
                .extensions_mut()
                .insert(Principal::new(owner, vec![SCOPE_EVENTS_READ.to_owned()]));
            next.run(request).await
        }));
    for uri in ["/healthz", "/v1/events", "/v1/events?q=disk"] {
        let response = app.clone().oneshot(Request::get(uri).body(Body::empty())?).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        println!("GET {uri} -> {status}");
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(page) => {
                for entry in page["entries"].as_array().into_iter().flatten() {
                    let field = |name: &str| entry[name].as_str().unwrap_or_default().to_owned();
                    println!("  {} {:5} {}", field("timestamp"), field("level"), field("message"));
                }
            }
            Err(_) => println!("  {}", String::from_utf8_lossy(&body)),
        }
    }

    // Members leave once the slice they are handling is done.
    monitoring.leave().await;
    auditing.leave().await;
    Ok(())
}
