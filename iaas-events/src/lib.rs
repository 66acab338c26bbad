//! The iaas-rs event backbone.
//!
//! - [`OutboxRelay`]: drains the transactional outbox ([`iaas_core::Outbox`]) into any
//!   [`iaas_core::EventPublisher`], in per-instance order, waiting out bus outages with
//!   [`Backoff`] and losing nothing.
//! - [`InProcessBus`]: the embedded default; delivers each event to every consumer group
//!   (members of a group split the instances between them) before the relay marks it sent, so
//!   the outbox stays the only durable store needed.
//! - [`kafka::KafkaConsumerRunner`] (feature `kafka`): drives any [`iaas_core::EventHandler`]
//!   from a consumer group, at least once, with retries and a dead-letter topic.
//! - [`kafka::KafkaPublisher`] (feature `kafka`): publishes to the `infrastructure.events` topic,
//!   keyed by instance id, with the event name in a header; "published" means the broker
//!   acknowledged it. [`kafka::KafkaConfig::leader_acks`] gives faster, lossier settings.
//! - [`monitoring`]: the [`monitoring::LogIndex`] port with its embedded and Elasticsearch
//!   backends, and [`monitoring::MonitoringIndexer`], the handler that feeds it.
//!
//! ```no_run
//! # #[cfg(feature = "kafka")]
//! # async fn demo(outbox: std::sync::Arc<dyn iaas_core::Outbox>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use iaas_events::kafka::{KafkaConfig, KafkaPublisher};
//! use iaas_events::{OutboxRelay, RelayConfig};
//!
//! let publisher = Arc::new(KafkaPublisher::new(&KafkaConfig::new("127.0.0.1:9092"))?);
//! let relay = OutboxRelay::new(outbox, publisher, Arc::new(iaas_core::SystemClock), RelayConfig::new("relay-1"));
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let report = relay.run(cancel.child_token()).await;
//! println!("published {}", report.stats.published);
//! # Ok(()) }
//! ```
//!
//! # A whole program
//!
//! An in-process bus with a handler of your own, fed by the outbox relay and by direct
//! publishes, and the embedded log index searched through `monitoring_router` mounted in your
//! own axum app (`examples/in_process_app.rs`, `cargo run -p iaas-events --example in_process_app`):
#![cfg_attr(
    all(feature = "embedded-index", feature = "http"),
    doc = concat!("```no_run\n", include_str!("../examples/in_process_app.rs"), "\n```")
)]
//!
//! # Feature flags
//!
//! - `embedded-index` (default): [`monitoring::SqliteLogIndex`], the on-disk full-text log index.
//! - `http` (default): the monitoring search API (`monitoring_router`, axum).
//! - `kafka`: the Kafka publisher, consumer runner and topic administration. It builds
//!   librdkafka from source with the C compiler and make, so it is opt-in.
//! - `elasticsearch`: the Elasticsearch log index. The official client exists only in
//!   pre-release versions, pinned exactly, so it is opt-in; `elasticsearch-tls` adds HTTPS.
//!
// Built without `kafka`, the Kafka items named above do not exist: link to the feature flags.
#![cfg_attr(
    not(feature = "kafka"),
    doc = "\n[`kafka::KafkaConsumerRunner`]: #feature-flags\n[`kafka::KafkaPublisher`]: #feature-flags\n[`kafka::KafkaConfig::leader_acks`]: #feature-flags"
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod error;
mod in_process;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod monitoring;
mod relay;

pub use backoff::Backoff;
pub use error::EventsError;
pub use in_process::{DeadLetter, InProcessBus, Subscription};
pub use relay::{OutboxRelay, RelayConfig, RelayReport, RelayStats, Round};
