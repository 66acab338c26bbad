//! Provisioning for an iaas-rs platform, over the container runtime port.
//!
//! Everything here speaks to an engine only through `iaas_core::runtime`
//! ([`ContainerRuntime`](iaas_core::ContainerRuntime) to act,
//! [`RuntimeWatch`](iaas_core::RuntimeWatch) to follow), so it runs the same on any runtime:
//! `iaas-docker` is the Docker one.
//!
//! - [`ProvisioningApi`] and [`provisioning_router`] (feature `http`, default): the HTTP API
//!   (create, list, read, start, stop, restart, delete instances; cluster info, stats and
//!   replication; quotas), with [`outbox_admin_router`] for parked outbox entries and
//!   [`openapi`] for the document.
//! - [`outcome`]: the lifecycle rule, who caused a status change and what is recorded for it,
//!   shared by the API's actions, the watcher and the reconciler ([`Seen`] says who looked).
//! - [`Watcher`]: follows the engine's events for managed containers and keeps instance
//!   statuses (and their outbox events) true to them, resuming after disconnections and
//!   reconciling drift.
//! - [`LiveStatus`]: fans committed status events out to live UIs; [`live_router`] (feature
//!   `http`) serves them over WebSocket at `GET /v1/ws`, each user seeing only their own
//!   instances.
//!
//! ```no_run
//! # async fn demo(
//! #     runtime: std::sync::Arc<dyn iaas_core::RuntimeWatch>,
//! #     repo: std::sync::Arc<dyn iaas_core::InstanceRepository>,
//! # ) {
//! use std::sync::Arc;
//!
//! use iaas_core::SystemClock;
//! use iaas_provisioning::{Watcher, WatcherConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! // `runtime` is the engine's view for the watcher: `iaas_docker::DockerWatch` on Docker.
//! let watcher = Watcher::new(runtime, repo, Arc::new(SystemClock), WatcherConfig::default());
//! let cancel = CancellationToken::new();
//! watcher.run(cancel).await;
//! # }
//! ```
//!
//! # Feature flags
//!
//! - `http` (default): the provisioning API, the outbox administration API and the
//!   live-status WebSocket endpoint, on axum. Without it, the lifecycle rule, the watcher and
//!   [`LiveStatus`] remain.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "http")]
mod api;
mod backup_schedule;
#[cfg(feature = "http")]
mod cluster_api;
#[cfg(feature = "http")]
mod http;
mod leadership;
mod lifecycle;
mod live;
#[cfg(feature = "http")]
mod live_guard;
#[cfg(feature = "http")]
mod live_sessions;
#[cfg(feature = "http")]
pub mod openapi;
#[cfg(feature = "http")]
mod outbox_api;
#[cfg(feature = "http")]
mod password_api;
#[cfg(feature = "http")]
mod quota_api;
mod sealed;
mod supervisor;
mod watcher;
#[cfg(feature = "http")]
mod worker;

#[cfg(feature = "http")]
pub use api::{
    ApiError, MAX_BODY_BYTES, ProvisioningApi, RETRY_AFTER_SECS, SCOPE_READ, SCOPE_WRITE,
    provisioning_router,
};
#[cfg(feature = "http")]
pub use http::{
    CLOSE_POLICY, CLOSE_RESTARTING, CLOSE_SESSION_ENDED, CLOSE_TOKEN_EXPIRED, LiveOptions,
    live_router, live_router_with,
};
pub use leadership::{Leadership, LeaseConfig};
pub use lifecycle::{Seen, outcome};
pub use live::{LiveStatus, LiveUpdate, StatusUpdate};
#[cfg(feature = "http")]
pub use live_guard::LiveLimits;
#[cfg(feature = "http")]
pub use outbox_api::outbox_admin_router;
pub use sealed::{SealError, SecretSealer};
pub use supervisor::{Supervisor, SupervisorConfig, SupervisorStats};
pub use watcher::{Watcher, WatcherConfig, WatcherStats};
#[cfg(feature = "http")]
pub use worker::{JobConfig, Jobs, run_jobs};
