//! The Docker engine behind the container runtime port of `iaas_core::runtime`.
//!
//! - [`DockerRuntime`]: [`ContainerRuntime`](iaas_core::ContainerRuntime) through bollard.
//!   PostgreSQL (a single node, or a primary with streaming replicas initialised by
//!   `pg_basebackup`), Nginx (with a user site) and generic Docker services; every container
//!   labelled `iaas.managed`, `iaas.instance`, `iaas.owner`; CPU and memory limits; a named
//!   volume for data; a bridge network per user (tenants never share one); ports published on
//!   127.0.0.1 by default; a failed provisioning is rolled back. Images come from an
//!   [`ImageCatalog`], so official images on a laptop and locally built ones elsewhere run the
//!   same code. It is also the engine's [`ClusterSource`](iaas_core::ClusterSource): cluster
//!   info (nodes, endpoints), stats (CPU %, memory, PostgreSQL's own connection count) and
//!   replication (roles, lag read on the primary).
//! - [`DockerWatch`]: [`RuntimeWatch`](iaas_core::RuntimeWatch), the engine's events for
//!   managed containers in the platform's terms ([`status_for_event`] is the mapping,
//!   [`status_for_state`] the same for an inspected container), which provisioning's watcher
//!   follows.
//! - [`EngineConnection`]: a client connected on first use, so a runtime can be built before
//!   the engine runs.
//!
//! The HTTP API, the lifecycle rule, the watcher and the live status are engine-neutral and
//! live in `iaas-provisioning`.
//!
//! ```no_run
//! # async fn demo(instance: iaas_core::Instance) -> Result<(), Box<dyn std::error::Error>> {
//! use iaas_core::{ClusterSource, ContainerRuntime, Secrets};
//! use iaas_docker::{DockerRuntime, DockerRuntimeConfig};
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

mod catalog;
mod cluster;
mod config;
pub mod confinement;
mod connection;
mod engine;
mod error;
mod exec;
pub mod firewall;
mod mapping;
pub mod network;
mod password;
mod plan;
mod plan_ha;
mod postgres_ha;
mod watch;

pub use catalog::ImageCatalog;
pub use config::{DockerRuntimeConfig, S3Repository};
pub use connection::EngineConnection;
pub use engine::DockerRuntime;
pub use mapping::{status_for_event, status_for_state};
pub use plan_ha::{READ_ONLY_PORT, READ_WRITE_PORT};
pub use watch::DockerWatch;
