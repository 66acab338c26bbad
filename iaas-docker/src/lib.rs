//! Provisioning through the Docker engine.
//!
//! - [`ContainerRuntime`]: the port provisioning needs (provision, start, stop, restart,
//!   remove, list managed containers), idempotent by instance id.
//! - [`DockerRuntime`]: its bollard implementation. PostgreSQL (a single node, or a primary
//!   with streaming replicas initialised by `pg_basebackup`), Nginx (with a user site) and
//!   generic Docker services; every container labelled `iaas.managed`, `iaas.instance`,
//!   `iaas.owner`; CPU and memory limits; a named volume for data; a bridge network per user
//!   (tenants never share one); ports published on 127.0.0.1 by default; a failed
//!   provisioning is rolled back. Images come from an [`ImageCatalog`], so official images on a laptop and locally
//!   built ones elsewhere run the same code. It is also the engine's
//!   [`ClusterSource`](iaas_core::ClusterSource): cluster info (nodes, endpoints), stats
//!   (CPU %, memory, PostgreSQL's own connection count) and replication (roles, lag read on
//!   the primary).
//! - [`DockerWatcher`]: follows the engine's events for managed containers and keeps instance
//!   statuses (and their outbox events) true to them, resuming after disconnections and
//!   reconciling drift; [`status_for_event`] is its mapping, and in a cluster of several
//!   containers the primary decides ([`role_decides_status`]).
//! - [`LiveStatus`]: fans committed status events out to live UIs; `live_router` (feature
//!   `http`, default) serves them over WebSocket at `GET /v1/ws`, each user seeing only their
//!   own instances.
//!
//! ```no_run
//! # async fn demo(instance: iaas_core::Instance) -> Result<(), Box<dyn std::error::Error>> {
//! use iaas_core::ClusterSource;
//! use iaas_docker::{ContainerRuntime, DockerRuntime, DockerRuntimeConfig, Secrets};
//!
//! let docker = bollard::Docker::connect_with_defaults()?.negotiate_version().await?;
//! let runtime = DockerRuntime::new(docker, DockerRuntimeConfig::default());
//! runtime.provision(&instance, &Secrets::new().with("POSTGRES_PASSWORD", "s3cret")).await?;
//! let info = runtime.cluster_info(instance.id).await?;
//! println!("endpoints: {:?}", info.endpoints);
//! let stats = runtime.cluster_stats(instance.id).await?;
//! println!("{:.1}% CPU, {} connections", stats.cpu_percent, stats.connections.unwrap_or(0));
//! # Ok(()) }
//! ```
//!
//! # A whole program
//!
//! A whole run against a real engine, cleaning up after itself on every path: provision a
//! small container, list the managed containers, read the cluster info, remove with purge
//! (`examples/provision_container.rs`, `cargo run -p iaas-docker --example provision_container`):
#![doc = concat!("```no_run\n", include_str!("../examples/provision_container.rs"), "\n```")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "http")]
mod api;
mod catalog;
mod cluster;
pub mod confinement;
mod connection;
mod engine;
mod error;
mod exec;
pub mod firewall;
#[cfg(feature = "http")]
mod http;
mod lifecycle;
mod live;
#[cfg(feature = "http")]
mod live_guard;
mod mapping;
pub mod network;
pub mod openapi;
#[cfg(feature = "http")]
mod outbox_api;
pub mod patroni;
mod quota_api;
mod runtime;
mod watcher;

#[cfg(feature = "http")]
pub use api::{
    ApiError, MAX_BODY_BYTES, ProvisioningApi, RETRY_AFTER_SECS, SCOPE_READ, SCOPE_WRITE,
    provisioning_router,
};
pub use catalog::ImageCatalog;
pub use connection::EngineConnection;
pub use engine::{DockerRuntime, DockerRuntimeConfig};
pub use error::DockerError;
#[cfg(feature = "http")]
pub use http::{
    CLOSE_POLICY, CLOSE_SESSION_ENDED, CLOSE_TOKEN_EXPIRED, LiveOptions, live_router,
    live_router_with,
};
pub use lifecycle::{PrimaryState, Seen, outcome};
pub use live::{LiveStatus, LiveUpdate, StatusUpdate};
#[cfg(feature = "http")]
pub use live_guard::LiveLimits;
pub use mapping::{role_decides_status, status_for_event, status_for_state};
#[cfg(feature = "http")]
pub use outbox_api::outbox_admin_router;
pub use runtime::{
    ContainerRef, ContainerRuntime, LABEL_INSTANCE, LABEL_KIND, LABEL_MANAGED, LABEL_OWNER,
    LABEL_ROLE, ManagedContainer, Secrets,
};
pub use watcher::{DockerWatcher, WatcherConfig, WatcherStats};
