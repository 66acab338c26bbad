//! The port the cluster cache stores bytes through, and its backends.
//!
//! [`CacheStore`] is what [`ClusterCache`](crate::ClusterCache) needs from a key-value store,
//! no more: get one or many, set with a TTL, delete many, and the two halves of the
//! invalidation lease (a *generation* counter per cluster):
//!
//! - [`invalidate`](CacheStore::invalidate) deletes keys and bumps the generation in one atomic
//!   step (one round trip on Redis);
//! - [`set_if_generation`](CacheStore::set_if_generation) writes a filled value only if the
//!   generation is still the one read before the load started.
//!
//! So a slow load that began before an invalidation can never write its stale value after it,
//! the problem memcache leases solve. Backends:
//!
//! - [`MemoryStore`]: in-process, TTLs read from a [`Clock`](iaas_core::Clock), the embedded
//!   default. It also lends its entries in place ([`CacheStore::as_memory`]), so in-process
//!   hits skip the copy and the decode.
//! - [`RedisStore`] (feature `redis`): one multiplexed auto-reconnecting connection, a per-call
//!   timeout, pipelined batches, a Lua script for the conditional fill.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;

#[cfg(feature = "redis")]
mod deadline;
mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use memory::{MemoryStore, MemoryStoreConfig};
#[cfg(feature = "redis")]
pub use redis::{RedisStore, RedisStoreConfig};

/// A byte store with TTLs and per-key generations.
#[async_trait]
pub trait CacheStore: Send + Sync + Debug {
    /// A short name for errors and metrics (`"redis"`, `"memory"`).
    fn backend(&self) -> &'static str;

    /// This store as the in-process [`MemoryStore`], if it is one. The
    /// [`ClusterCache`](crate::ClusterCache) then reads entries in place and keeps each value
    /// decoded beside its bytes, instead of copying and decoding the bytes on every hit.
    /// Default `None`: the byte path, for Redis and for wrappers that do not forward this.
    fn as_memory(&self) -> Option<&MemoryStore> {
        None
    }

    /// The value under `key`, if any and not expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// The values under `keys`, in order (batched, one round trip).
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>>;

    /// Stores `value` under `key` for `ttl`, unconditionally.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()>;

    /// The value under `key` and the generation under `generation_key` (`None` when never
    /// bumped or expired), read together in one round trip: what a fill reads before loading.
    async fn get_with_generation(
        &self,
        key: &str,
        generation_key: &str,
    ) -> Result<(Option<Vec<u8>>, Option<u64>)>;

    /// Stores `value` under `key` for `ttl` only if the generation under `generation_key` is
    /// still `expected`; atomic. Returns whether it wrote.
    async fn set_if_generation(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        generation_key: &str,
        expected: Option<u64>,
    ) -> Result<bool>;

    /// Deletes `keys`; returns how many existed.
    async fn delete_many(&self, keys: &[String]) -> Result<u64>;

    /// Deletes `keys` and increments the generation under `generation_key` (which then lives
    /// for `generation_ttl`), atomically and in one round trip.
    async fn invalidate(
        &self,
        keys: &[String],
        generation_key: &str,
        generation_ttl: Duration,
    ) -> Result<()>;
}
