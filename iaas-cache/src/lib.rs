//! Cluster cache-aside for iaas-rs: the `cluster:info|stats|replication:{id}` cache,
//! typed and made robust.
//!
//! - [`ClusterCache`]: typed get / set / invalidate for [`ClusterInfo`](iaas_core::ClusterInfo),
//!   [`ClusterStats`](iaas_core::ClusterStats) and
//!   [`ReplicationStatus`](iaas_core::ReplicationStatus), a TTL per kind (default 5 min), and
//!   [`get_or_load`](ClusterCache::get_or_load): single-flight fills, degradation to the
//!   loader when the backend fails, and invalidation that wins over a slow fill (a per-cluster
//!   generation checked atomically when the fill writes).
//! - [`CacheStore`], the port, with [`MemoryStore`] (in-process, the embedded default) and
//!   [`RedisStore`] (feature `redis`).
//! - [`Codec`]: versioned postcard, LZ4 above a threshold; an undecodable value is a counted
//!   miss, never a panic or a wrong answer. A Redis hit whose bytes are the ones last decoded
//!   for that key reuses that value instead of decoding again (a bounded memo,
//!   [`ClusterCacheConfig::decoded_memo_entries`]); every read still goes to Redis.
//! - [`CachedClusterSource`]: any [`ClusterSource`](iaas_core::ClusterSource) (the Docker
//!   engine) behind the cache, so routers read through the cache without knowing it is there.
//! - [`CacheInvalidator`]: the [`EventHandler`](iaas_core::EventHandler) that invalidates a
//!   cluster on the events that change it.
//! - [`CacheStats`] and the `metrics` facade (`iaas_cache_hits_total`, ...), plus
//!   [`redis_health`] for the Redis operating targets.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use iaas_cache::{ClusterCache, ClusterCacheConfig, RedisStore, RedisStoreConfig};
//! use iaas_core::{ClusterStats, InstanceId};
//!
//! # async fn demo(id: InstanceId, fetch: impl AsyncFn(InstanceId) -> Result<ClusterStats, std::io::Error>)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! let store = RedisStore::connect(&RedisStoreConfig::new("redis://127.0.0.1:6379")).await?;
//! let cache = ClusterCache::new(Arc::new(store), ClusterCacheConfig::with_prefix("iaas:"));
//!
//! // Served from Redis when cached; otherwise `fetch` runs once, however many callers miss.
//! let stats = cache.get_or_load(id, || fetch(id)).await?;
//! println!("{:.1} % CPU, hit rate {:?}", stats.cpu_percent, cache.stats().hit_rate());
//!
//! // The instance restarted: its info, stats and replication keys go, in one round trip.
//! cache.invalidate(id).await?;
//! # Ok(()) }
//! ```
//!
//! # A whole program
//!
//! The cache wired by hand into a tokio program, with no other iaas-rs crate than iaas-core and
//! no server: cache-aside reads through the in-process [`MemoryStore`], ten concurrent misses
//! sharing one load, invalidation by a `restarted` event through [`CacheInvalidator`], and the
//! counters of [`CacheStats`]. This is `examples/cache_aside.rs`; run it with
//! `cargo run -p iaas-cache --example cache_aside`.
//!
#![doc = concat!("```no_run\n", include_str!("../examples/cache_aside.rs"), "\n```")]
//!
//! # Feature flags
//!
//! - `redis` (default): [`RedisStore`] and [`redis_health`].

#![cfg_attr(docsrs, feature(doc_cfg))]

mod cluster;
mod codec;
mod error;
#[cfg(feature = "redis")]
mod health;
mod invalidation;
mod key;
mod kind;
mod memo;
mod metrics;
mod source;
mod store;

pub use cluster::{ClusterCache, ClusterCacheConfig};
pub use codec::{Codec, CodecConfig, CorruptValue, Decoded, FORMAT_VERSION};
pub use error::{CacheError, Result, SharedError};
#[cfg(feature = "redis")]
pub use health::{RedisHealth, redis_health};
pub use invalidation::CacheInvalidator;
pub use kind::{CachedValue, Kind};
pub use metrics::{CacheStats, LATENCY_BUCKETS_MICROS, LatencySnapshot};
pub use source::CachedClusterSource;
pub use store::{CacheStore, MemoryStore, MemoryStoreConfig};
#[cfg(feature = "redis")]
pub use store::{RedisStore, RedisStoreConfig};
