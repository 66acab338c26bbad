//! The domain of iaas-rs: what every other crate of the workspace agrees on.
//!
//! - **Model**: [`Instance`] (with its [`InstanceSpec`], [`Resources`] and life cycle
//!   [`InstanceStatus`]), [`User`], and what the platform reports about a running instance
//!   ([`ClusterInfo`], [`ClusterStats`], [`ReplicationStatus`]).
//! - **Events**: [`InfrastructureEvent`], named `{kind}.{action}` (`postgres.started`), encoded as
//!   versioned JSON that tolerates unknown fields and names the field at fault when it cannot be
//!   decoded.
//! - **Ports**: the traits that cross crate boundaries: [`EventPublisher`], [`EventHandler`],
//!   [`InstanceRepository`] with its [`Outbox`] and [`JobQueue`], [`UserRepository`] and [`Clock`], and the
//!   container runtime ([`runtime`]: [`ContainerRuntime`], [`RuntimeWatch`], [`RuntimeError`]).
//!   Sibling crates implement them (Kafka, Redis, SQL, Docker) and depend on nothing but this
//!   crate.
//! - **In-memory adapters** for every port in [`memory`], used as embedded defaults and in unit
//!   tests.
//! - **Errors**: one [`Error`] enum whose variants map one-to-one to HTTP statuses in the routers.
//!
//! # Example
//!
//! Provision an instance, move it through its life cycle and read the events a consumer would
//! see:
//!
//! ```
//! use chrono::Utc;
//! use iaas_core::memory::MemoryInstanceRepository;
//! use iaas_core::{
//!     EventAction, InfrastructureEvent, Instance, InstanceName, InstanceRepository,
//!     InstanceSpec, InstanceStatus, PostgresSpec, Resources, StatusChange, UserId,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let repo = MemoryInstanceRepository::new();
//! let owner = UserId::new_random();
//! let spec = InstanceSpec::Postgres(PostgresSpec::new("app", 0));
//! let db = Instance::new(owner, InstanceName::new("orders-db")?, spec, Resources::default(), Utc::now())?;
//!
//! // The instance and its `created` event are written together.
//! let created = InfrastructureEvent::new(db.id, owner, db.kind(), EventAction::Created, Utc::now());
//! repo.create_instance(&db, &created).await?;
//!
//! // The Docker watcher saw the container start.
//! let started = InfrastructureEvent::new(db.id, owner, db.kind(), EventAction::Started, Utc::now());
//! let db = repo
//!     .update_status(StatusChange {
//!         id: db.id,
//!         expected_version: Some(db.version),
//!         to: InstanceStatus::Running,
//!         event: started,
//!         at: Utc::now(),
//!     })
//!     .await?;
//! assert_eq!(db.status, InstanceStatus::Running);
//!
//! // A deleted instance can never run again: the life cycle is enforced everywhere.
//! assert!(InstanceStatus::Deleted.transition_to(InstanceStatus::Running).is_err());
//!
//! // What the relay publishes, encoded as consumers receive it.
//! let names: Vec<String> = repo.outbox().iter().map(|e| e.name()).collect();
//! assert_eq!(names, ["postgres.created", "postgres.started"]);
//! let wire = repo.outbox()[1].to_json();
//! assert_eq!(InfrastructureEvent::from_json(&wire)?.action, EventAction::Started);
//! # Ok(())
//! # }
//! ```
//!
//! # A whole program
//!
//! The crate wired by hand into a tokio program, with no other iaas-rs crate: an instance
//! admitted against a quota, its life cycle under optimistic concurrency, the outbox relayed to
//! a bus, and a consumer that decodes the events and drops a redelivery. This is
//! `examples/in_memory.rs`; run it with `cargo run -p iaas-core --example in_memory`.
//!
#![doc = concat!("```no_run\n", include_str!("../examples/in_memory.rs"), "\n```")]
//!
//! # Feature flags
//!
//! - `http`: [`http`], the HTTP contract every router shares (error body and response, JSON
//!   body extractor, OpenAPI document serving), on axum. Off by default: the domain model
//!   and the ports need no web framework.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod bus;
mod clock;
mod cluster;
mod error;
mod event;
mod host_ports;
#[cfg(feature = "http")]
pub mod http;
mod id;
mod instance;
mod jobs;
mod leases;
mod login_news;
pub mod memory;
mod outbox;
pub mod patroni;
pub mod pgbackrest;
mod quota;
mod redact;
mod repository;
pub mod runtime;
mod status;
mod timestamp;
mod user;

pub use bus::{BatchOutcome, EventHandler, EventPublisher, HandlerError};
pub use clock::{Clock, ManualClock, SystemClock};
pub use cluster::{
    ClusterInfo, ClusterSource, ClusterStats, Endpoint, NodeInfo, NodeRole, ReplicaState,
    ReplicationStatus, observed_now,
};
pub use error::{BoxError, Error, Result, error_chain};
pub use event::{
    DecodeError, EVENT_FORMAT_VERSION, EventAction, InfrastructureEvent, InvalidAction,
};
pub use host_ports::HostPortPolicy;
pub use id::{EventId, InstanceId, InvalidId, UserId};
pub use instance::{
    BackupSchedule, DockerSpec, Instance, InstanceKind, InstanceName, InstanceSpec, NginxSpec,
    PortMapping, PostgresSpec, Resources, RestoreSpec,
};
pub use jobs::{
    Job, JobAction, JobQueue, JobStats, PURGE_METADATA, RELEASED_UNFINISHED, forgets_secrets,
};
pub use leases::{LeaseHolder, Leases};
pub use login_news::{LoginNews, LoginNewsFeed, LoginNewsHub};
pub use outbox::{Outbox, OutboxEntry, OutboxStats, ParkedEntry};
pub use quota::{Quota, QuotaExceeded, QuotaLimit, QuotaOverride, Usage};
pub use redact::{redact_url, redact_urls_in};
pub use repository::{
    InstanceRepository, QuotaRepository, SpecChange, StatusChange, UserRepository,
};
pub use runtime::{
    ContainerRef, ContainerRuntime, ManagedContainer, PrimaryState, Retired, RuntimeError,
    RuntimeEvent, RuntimeWatch, Secrets,
};
pub use status::{InstanceStatus, InvalidTransition, Transition, UnknownStatus};
pub use user::{BodyLimit, Principal, SCOPE_ADMIN, SessionLiveness, User};
