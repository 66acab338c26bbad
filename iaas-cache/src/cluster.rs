//! [`ClusterCache`]: the cluster cache (get, set and invalidate the views of one instance),
//! typed, with cache-aside reads that survive a slow or dead backend.
//!
//! Keys are `{prefix}cluster:{kind}:{id}` for the three [`Kind`]s, plus
//! `{prefix}cluster:gen:{id}`, the cluster's *generation*: invalidation deletes the three keys
//! and bumps it in one atomic round trip. [`get_or_load`](ClusterCache::get_or_load) reads the
//! generation before it runs the loader and writes the result only if the generation did not
//! move (a memcache-style lease), so an invalidation that lands during a slow load wins: the
//! caller gets its freshly loaded value, the cache keeps nothing stale.
//!
//! Concurrent misses on one key share one load (single flight): the first caller runs its
//! loader, the others wait for its result. When the backend errors or times out, the read is
//! answered from the loader and the error is counted in
//! [`CacheStats::backend_errors`](crate::CacheStats::backend_errors), never returned.
//!
//! With [`ClusterCacheConfig::refresh_ahead`] set, a hit on a value that expires within that
//! window is reloaded by the one caller that claims the refresh (it gets the fresh value), while
//! every other caller keeps being served the cached one: hot keys never expire into a burst of
//! misses. Ages are read from the cache's [`Clock`], so this is tested without sleeping.
//!
//! On the in-process store ([`MemoryStore`]) a hit reads the entry in place and keeps the
//! decoded value beside its bytes (decoded once per write, not once per read), builds its key on
//! the stack and is not timed (the lookup histogram is for backend round trips). The value a
//! caller gets is a clone of the decoded one. Redis hits take the byte path: `GET`, then, when
//! the bytes are exactly those this cache last decoded for that key, a clone of the value they
//! gave (a bounded memo, see `memo.rs`; the `GET` is never skipped, so a value another process
//! wrote is seen on the next read), otherwise a decode.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iaas_core::{Clock, ClusterInfo, ClusterStats, InstanceId, ReplicationStatus, SystemClock};
use tokio::sync::OnceCell;

use crate::codec::{Codec, CodecConfig, Decoded};
use crate::error::{CacheError, Result, SharedError};
use crate::key::Keys;
use crate::kind::{CachedValue, Kind};
use crate::memo::DecodeMemo;
use crate::metrics::{CacheMetrics, CacheStats};
use crate::store::{CacheStore, MemoryStore};

/// The TTL of every cluster key.
const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);

/// Default bound of the decode memo: enough for the info, stats and replication of about 340
/// clusters read through one process, at a few hundred bytes each (about 1 MiB when full).
const DEFAULT_DECODED_MEMO_ENTRIES: usize = 1024;

/// Settings of a [`ClusterCache`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterCacheConfig {
    /// Put in front of every key (default empty; tests and shared servers use a unique one).
    pub key_prefix: String,
    /// TTL of `cluster:info:{id}` (default 5 min).
    pub info_ttl: Duration,
    /// TTL of `cluster:stats:{id}` (default 5 min).
    pub stats_ttl: Duration,
    /// TTL of `cluster:replication:{id}` (default 5 min).
    pub replication_ttl: Duration,
    /// How long a cluster's generation outlives its last invalidation (default 1 h). It must
    /// be longer than any load: a fill that started before the generation expired would
    /// otherwise see "no generation" twice and write.
    pub generation_ttl: Duration,
    /// Reload a value on a hit when it expires within this window (default `None`: never
    /// ahead of time). Must be shorter than the TTLs to have an effect.
    pub refresh_ahead: Option<Duration>,
    /// Value encoding.
    pub codec: CodecConfig,
    /// For stores that return bytes (Redis): at most this many keys keep the bytes they last
    /// returned and the value those decoded to, so a hit on unchanged bytes skips the decode
    /// (default 1,024; 0 turns it off). Every read still goes to the store and compares the
    /// bytes, so this never serves a value the store no longer holds. The in-process store keeps
    /// decoded values in its own entries and does not use this.
    pub decoded_memo_entries: usize,
}

impl Default for ClusterCacheConfig {
    fn default() -> Self {
        Self {
            key_prefix: String::new(),
            info_ttl: DEFAULT_TTL,
            stats_ttl: DEFAULT_TTL,
            replication_ttl: DEFAULT_TTL,
            generation_ttl: Duration::from_secs(60 * 60),
            refresh_ahead: None,
            codec: CodecConfig::default(),
            decoded_memo_entries: DEFAULT_DECODED_MEMO_ENTRIES,
        }
    }
}

impl ClusterCacheConfig {
    /// The defaults with `prefix` in front of every key.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self { key_prefix: prefix.into(), ..Self::default() }
    }

    /// The same settings with one TTL for all three kinds.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.info_ttl = ttl;
        self.stats_ttl = ttl;
        self.replication_ttl = ttl;
        self
    }

    /// The TTL of `kind`.
    pub fn ttl(&self, kind: Kind) -> Duration {
        match kind {
            Kind::Info => self.info_ttl,
            Kind::Stats => self.stats_ttl,
            Kind::Replication => self.replication_ttl,
        }
    }
}

/// One load in progress, shared by every caller that missed on the same key.
type Flight<T> = OnceCell<std::result::Result<T, SharedError>>;

/// Typed cluster cache over any [`CacheStore`]. Cheap to clone (shared state).
#[derive(Clone)]
pub struct ClusterCache {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn CacheStore>,
    codec: Codec,
    config: ClusterCacheConfig,
    metrics: CacheMetrics,
    /// The key heads for `config.key_prefix`, rendered once.
    keys: Keys,
    /// The last decode per key, for stores that return bytes.
    memo: DecodeMemo,
    clock: Arc<dyn Clock>,
    /// Keys being refreshed ahead of expiry (at most one refresh per key at a time).
    refreshing: Mutex<HashSet<String>>,
    /// Loads in progress by cache key; each value is an `Arc<Flight<T>>` for the key's kind.
    flights: Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>>,
}

impl std::fmt::Debug for ClusterCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCache")
            .field("store", &self.inner.store)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl ClusterCache {
    /// A cache storing through `store`, on the system clock.
    pub fn new(store: Arc<dyn CacheStore>, config: ClusterCacheConfig) -> Self {
        Self::with_clock(store, config, Arc::new(SystemClock))
    }

    /// A cache storing through `store`, stamping and ageing values with `clock`.
    pub fn with_clock(
        store: Arc<dyn CacheStore>,
        config: ClusterCacheConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        // The in-process store keeps decoded values in its own entries.
        let memo_entries =
            if store.as_memory().is_some() { 0 } else { config.decoded_memo_entries };
        Self {
            inner: Arc::new(Inner {
                metrics: CacheMetrics::new(store.backend()),
                store,
                codec: Codec::new(config.codec.clone()),
                keys: Keys::new(&config.key_prefix),
                memo: DecodeMemo::new(memo_entries),
                config,
                clock,
                refreshing: Mutex::default(),
                flights: Mutex::default(),
            }),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &ClusterCacheConfig {
        &self.inner.config
    }

    /// The store it uses.
    pub fn store(&self) -> &Arc<dyn CacheStore> {
        &self.inner.store
    }

    /// The counters since it was built.
    pub fn stats(&self) -> CacheStats {
        self.inner.metrics.stats()
    }

    /// `{prefix}cluster:{kind}:{id}`.
    pub fn key(&self, kind: Kind, id: InstanceId) -> String {
        self.inner.keys.value(kind, id).to_string()
    }

    /// `{prefix}cluster:gen:{id}`, the cluster's invalidation generation.
    pub fn generation_key(&self, id: InstanceId) -> String {
        self.inner.keys.generation(id).to_string()
    }

    /// The cached value of kind `T` for `id`. Absent, expired and undecodable values are
    /// `None` (an undecodable one is also counted in
    /// [`CacheStats::corrupt_values`](crate::CacheStats::corrupt_values)); a backend failure
    /// is an error.
    pub async fn get<T: CachedValue>(&self, id: InstanceId) -> Result<Option<T>> {
        let key = self.inner.keys.value(T::KIND, id);
        let found = self.lookup::<T>(id, &key).await;
        if let Err(err) = &found {
            self.inner.metrics.backend_error();
            tracing::warn!(%key, error = %err, "cluster cache read failed");
        }
        found.map(|found| found.map(|decoded| decoded.value))
    }

    /// Stores `value` for `id` with its kind's TTL, unconditionally.
    pub async fn set<T: CachedValue>(&self, id: InstanceId, value: &T) -> Result<()> {
        let key = self.key(T::KIND, id);
        let bytes = self.encode(&key, value)?;
        let ttl = self.inner.config.ttl(T::KIND);
        self.inner.memo.forget(T::KIND, id);
        self.inner.store.set(&key, &bytes, ttl).await.inspect_err(|err| {
            self.inner.metrics.backend_error();
            tracing::warn!(%key, error = %err, "cluster cache write failed");
        })
    }

    /// Removes the three keys of `id` and bumps its generation, in one round trip, so no
    /// load that started earlier can write afterwards. An error means the invalidation may
    /// not have happened: retry it.
    pub async fn invalidate(&self, id: InstanceId) -> Result<()> {
        let keys: Vec<String> = Kind::ALL.iter().map(|&kind| self.key(kind, id)).collect();
        let generation_key = self.generation_key(id);
        let ttl = self.inner.config.generation_ttl;
        for kind in Kind::ALL {
            self.inner.memo.forget(kind, id);
        }
        self.inner.store.invalidate(&keys, &generation_key, ttl).await.inspect_err(|err| {
            self.inner.metrics.backend_error();
            tracing::warn!(instance_id = %id, error = %err, "cluster cache invalidation failed");
        })?;
        self.inner.metrics.invalidation();
        Ok(())
    }

    /// Cache-aside read: the cached value of kind `T` for `id`, or `loader`'s, which is then
    /// cached (unless an invalidation happened while it ran).
    ///
    /// - Concurrent misses on one key run one loader; the others wait for its result (or its
    ///   error, shared as [`CacheError::Load`]).
    /// - A backend error or timeout is counted and absorbed: the loader's value is returned.
    /// - The only error is the loader's.
    pub async fn get_or_load<T, F, Fut, E>(&self, id: InstanceId, loader: F) -> Result<T>
    where
        T: CachedValue,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        let key = self.inner.keys.value(T::KIND, id);
        match self.lookup::<T>(id, &key).await {
            Ok(Some(found)) => return Ok(self.refresh_if_due(id, &key, found, loader).await),
            Ok(None) => {}
            Err(err) => {
                self.inner.metrics.backend_error();
                tracing::warn!(%key, error = %err, "cluster cache read failed, loading from the source");
            }
        }
        let key = key.as_str();
        let flight = self.join_flight::<T>(key);
        let result = match &flight {
            Some(flight) => flight.get_or_init(|| self.fill(id, key, loader, true)).await.clone(),
            // Unreachable in practice (the key names the kind, so the flight's type always
            // matches); without a flight the load is merely not shared.
            None => self.fill(id, key, loader, true).await,
        };
        if let Some(flight) = flight {
            self.leave_flight(key, &flight);
        }
        result.map_err(|source| CacheError::Load { key: key.to_owned(), source })
    }

    /// [`get`](Self::get) for [`ClusterInfo`].
    pub async fn get_info(&self, id: InstanceId) -> Result<Option<ClusterInfo>> {
        self.get(id).await
    }

    /// [`set`](Self::set) for [`ClusterInfo`].
    pub async fn set_info(&self, id: InstanceId, info: &ClusterInfo) -> Result<()> {
        self.set(id, info).await
    }

    /// [`get`](Self::get) for [`ClusterStats`].
    pub async fn get_stats(&self, id: InstanceId) -> Result<Option<ClusterStats>> {
        self.get(id).await
    }

    /// [`set`](Self::set) for [`ClusterStats`].
    pub async fn set_stats(&self, id: InstanceId, stats: &ClusterStats) -> Result<()> {
        self.set(id, stats).await
    }

    /// [`get`](Self::get) for [`ReplicationStatus`].
    pub async fn get_replication(&self, id: InstanceId) -> Result<Option<ReplicationStatus>> {
        self.get(id).await
    }

    /// [`set`](Self::set) for [`ReplicationStatus`].
    pub async fn set_replication(&self, id: InstanceId, status: &ReplicationStatus) -> Result<()> {
        self.set(id, status).await
    }

    /// Serves `found`, or, when it expires within the refresh window and no other caller is
    /// refreshing it, reloads it (keeping `found` if the reload fails).
    async fn refresh_if_due<T, F, Fut, E>(
        &self,
        id: InstanceId,
        key: &str,
        found: Decoded<T>,
        loader: F,
    ) -> T
    where
        T: CachedValue,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        let Some(ahead) = self.inner.config.refresh_ahead else { return found.value };
        let ttl = self.inner.config.ttl(T::KIND);
        let age = (self.inner.clock.now() - found.written_at).to_std().unwrap_or(Duration::ZERO);
        if age < ttl.saturating_sub(ahead) {
            return found.value;
        }
        let Some(_claim) = RefreshClaim::take(&self.inner.refreshing, key) else {
            return found.value;
        };
        self.inner.metrics.refresh();
        match self.fill(id, key, loader, false).await {
            Ok(fresh) => fresh,
            Err(err) => {
                tracing::warn!(%key, error = %err, "early refresh failed; serving the cached value");
                found.value
            }
        }
    }

    /// Reads and decodes one key (`key` is `T`'s key of `id`), counting hit, miss and
    /// corruption.
    async fn lookup<T: CachedValue>(
        &self,
        id: InstanceId,
        key: &str,
    ) -> Result<Option<Decoded<T>>> {
        let value = match self.inner.store.as_memory() {
            Some(memory) => self.read_in_place::<T>(memory, key),
            None => {
                let started = Instant::now();
                let found = self.inner.store.get(key).await;
                self.inner.metrics.lookup(started.elapsed());
                found?.and_then(|bytes| self.decode_remembered::<T>(id, key, bytes))
            }
        };
        match value {
            Some(_) => self.inner.metrics.hit(T::KIND),
            None => self.inner.metrics.miss(T::KIND),
        }
        Ok(value)
    }

    /// The in-process read: the entry is borrowed, not copied, and decoded at most once per
    /// write (the decoded form is kept in the entry, see `store::memory::Stored`).
    fn read_in_place<T: CachedValue>(&self, memory: &MemoryStore, key: &str) -> Option<Decoded<T>> {
        let stored = memory.get_stored(key)?;
        let slot = stored.decoded();
        if let Some(decoded) = slot.get().and_then(|memo| memo.downcast_ref::<Decoded<T>>()) {
            return Some(decoded.clone());
        }
        let decoded = self.decode::<T>(key, stored.bytes())?;
        // A reader that decoded the same entry concurrently may have filled the slot first;
        // both decoded the same bytes, so whichever copy stays is the same value.
        let _ = slot.set(Box::new(decoded.clone()));
        Some(decoded)
    }

    /// Decodes bytes a byte store returned for `T`'s key of `id`, or clones the value they gave
    /// last time when they are the very bytes this cache last decoded for that key.
    fn decode_remembered<T: CachedValue>(
        &self,
        id: InstanceId,
        key: &str,
        bytes: Vec<u8>,
    ) -> Option<Decoded<T>> {
        if let Some(kept) = self.inner.memo.get::<T>(id, &bytes) {
            self.inner.metrics.reused_decode();
            return Some(kept);
        }
        let decoded = self.decode::<T>(key, &bytes)?;
        self.inner.memo.keep(id, bytes, &decoded);
        Some(decoded)
    }

    fn decode<T: CachedValue>(&self, key: &str, bytes: &[u8]) -> Option<Decoded<T>> {
        match self.inner.codec.decode::<T>(bytes) {
            Ok(value) => Some(value),
            Err(err) => {
                self.inner.metrics.corrupt(T::KIND);
                tracing::warn!(%key, error = %err, "undecodable cache value treated as a miss");
                None
            }
        }
    }

    fn encode<T: CachedValue>(&self, key: &str, value: &T) -> Result<Vec<u8>> {
        self.inner
            .codec
            .encode(value, self.inner.clock.now())
            .map_err(|reason| CacheError::Encode { key: key.to_owned(), reason })
    }

    /// The load of one single flight: read the generation (and, with `reuse_existing`,
    /// re-check the value, in case an earlier flight filled it since this caller missed), run
    /// the loader, write the value if the generation did not move.
    async fn fill<T, F, Fut, E>(
        &self,
        id: InstanceId,
        key: &str,
        loader: F,
        reuse_existing: bool,
    ) -> std::result::Result<T, SharedError>
    where
        T: CachedValue,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        let generation_key = self.inner.keys.generation(id);
        let lease = match self.inner.store.get_with_generation(key, &generation_key).await {
            Ok((existing, generation)) => {
                if reuse_existing
                    && let Some(found) =
                        existing.and_then(|bytes| self.decode_remembered::<T>(id, key, bytes))
                {
                    return Ok(found.value);
                }
                Some(generation)
            }
            Err(err) => {
                // Without the generation a write could be stale: load, serve, do not write.
                self.inner.metrics.backend_error();
                tracing::warn!(%key, error = %err, "cluster cache unavailable, serving from the source");
                None
            }
        };

        let started = Instant::now();
        let loaded = loader().await;
        self.inner.metrics.load(T::KIND, started.elapsed(), loaded.is_ok());
        let value = loaded.map_err(|err| -> SharedError { Arc::from(err.into()) })?;

        if let Some(generation) = lease {
            self.write_if_current(id, key, &generation_key, generation, &value).await;
        }
        Ok(value)
    }

    async fn write_if_current<T: CachedValue>(
        &self,
        id: InstanceId,
        key: &str,
        generation_key: &str,
        generation: Option<u64>,
        value: &T,
    ) {
        let bytes = match self.encode(key, value) {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::warn!(%key, error = %err, "loaded value not cached");
                return;
            }
        };
        let ttl = self.inner.config.ttl(T::KIND);
        let store = &self.inner.store;
        self.inner.memo.forget(T::KIND, id);
        match store.set_if_generation(key, &bytes, ttl, generation_key, generation).await {
            Ok(true) => {}
            Ok(false) => {
                self.inner.metrics.stale_fill(T::KIND);
                tracing::debug!(%key, "invalidated during the load; value not cached");
            }
            Err(err) => {
                self.inner.metrics.backend_error();
                tracing::warn!(%key, error = %err, "loaded value not cached");
            }
        }
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<dyn Any + Send + Sync>>> {
        // Each critical section is one map operation: a poisoned map is still consistent.
        self.inner.flights.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn join_flight<T: CachedValue>(&self, key: &str) -> Option<Arc<Flight<T>>> {
        let shared = Arc::clone(
            self.flights()
                .entry(key.to_owned())
                .or_insert_with(|| Arc::new(Flight::<T>::new()) as Arc<dyn Any + Send + Sync>),
        );
        shared.downcast::<Flight<T>>().ok()
    }

    /// Forgets the flight once it has a result, so the next miss (after an expiry or an
    /// invalidation) loads again. Only the flight this caller joined is removed.
    fn leave_flight<T: CachedValue>(&self, key: &str, flight: &Arc<Flight<T>>) {
        let mut flights = self.flights();
        let same = flights
            .get(key)
            .is_some_and(|current| std::ptr::addr_eq(Arc::as_ptr(current), Arc::as_ptr(flight)));
        if same && flight.initialized() {
            flights.remove(key);
        }
    }
}

/// The right to refresh one key ahead of expiry, released when dropped (also when the
/// refreshing caller is cancelled).
struct RefreshClaim<'a> {
    set: &'a Mutex<HashSet<String>>,
    key: String,
}

impl<'a> RefreshClaim<'a> {
    fn take(set: &'a Mutex<HashSet<String>>, key: &str) -> Option<Self> {
        let mut keys = set.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.insert(key.to_owned()).then(|| Self { set, key: key.to_owned() })
    }
}

impl Drop for RefreshClaim<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::info;

    #[tokio::test]
    async fn an_in_process_hit_is_served_from_the_decoded_value_kept_in_the_entry() {
        let store = Arc::new(MemoryStore::default());
        let cache = ClusterCache::new(store.clone(), ClusterCacheConfig::default());
        let id = InstanceId::new_random();
        cache.set_info(id, &info(id)).await.unwrap();
        let key = cache.key(Kind::Info, id);
        assert!(store.get_stored(&key).unwrap().decoded().get().is_none(), "nothing decoded yet");

        assert_eq!(cache.get_info(id).await.unwrap(), Some(info(id)));
        let stored = store.get_stored(&key).unwrap();
        let kept =
            stored.decoded().get().and_then(|memo| memo.downcast_ref::<Decoded<ClusterInfo>>());
        assert_eq!(
            kept.map(|kept| &kept.value),
            Some(&info(id)),
            "the first read keeps its decode"
        );

        // A planted decoded form (different from the bytes) is what the next read returns: the
        // bytes are not decoded again.
        let other = InstanceId::new_random();
        cache.set_info(other, &info(other)).await.unwrap();
        let mut planted = info(other);
        planted.nodes.clear();
        let written_at = chrono::Utc::now();
        store
            .get_stored(&cache.key(Kind::Info, other))
            .unwrap()
            .decoded()
            .set(Box::new(Decoded { value: planted.clone(), written_at }))
            .unwrap();
        assert_eq!(cache.get_info(other).await.unwrap(), Some(planted));

        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (2, 0));
        assert_eq!(stats.lookup_latency.count(), 0, "in-process reads are not timed");
    }

    #[tokio::test]
    async fn a_kept_value_of_another_kind_is_never_served() {
        let store = Arc::new(MemoryStore::default());
        let cache = ClusterCache::new(store.clone(), ClusterCacheConfig::default());
        let id = InstanceId::new_random();
        cache.set_info(id, &info(id)).await.unwrap();
        let key = cache.key(Kind::Info, id);
        // A decoded form of the wrong type in the slot falls back to the bytes.
        store.get_stored(&key).unwrap().decoded().set(Box::new(42u64)).unwrap();
        assert_eq!(cache.get_info(id).await.unwrap(), Some(info(id)));
        assert_eq!(cache.stats().corrupt_values, 0);
    }
}
