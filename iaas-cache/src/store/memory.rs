//! The in-process backend: a map under a mutex, with expiry read from a [`Clock`].
//!
//! Critical sections are a hash lookup and a reference-count bump, so a `std` mutex is the
//! right lock (no `.await` is held across it). Expired entries are dropped when read and swept
//! when the map reaches its capacity; when it is still full, the entries closest to expiry go
//! first.
//!
//! Each value is a [`Stored`]: its bytes, plus a slot where the cluster cache keeps the value
//! decoded, so an in-process hit does not decode the same bytes again (postcard decoding was
//! 55 % of a hit's instructions). The slot belongs to the bytes: every write stores a new
//! `Stored`, and removal or expiry drops both, so the decoded form obeys the byte store's TTL,
//! invalidation and generation guard without a second copy of those rules.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use iaas_core::{Clock, SystemClock};

use super::CacheStore;
use crate::error::Result;

/// Settings of a [`MemoryStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryStoreConfig {
    /// Most values held at once (default 100,000).
    pub max_entries: usize,
}

impl Default for MemoryStoreConfig {
    fn default() -> Self {
        Self { max_entries: 100_000 }
    }
}

#[derive(Debug)]
struct Entry<T> {
    value: T,
    expires_at: DateTime<Utc>,
}

/// A decoded form kept beside the bytes it was decoded from (any type: the store does not
/// know the cache's value types).
pub(crate) type Memo = Box<dyn Any + Send + Sync>;

/// One value as the in-process store holds it: its bytes and the slot for its decoded form.
#[derive(Debug)]
pub(crate) struct Stored {
    bytes: Box<[u8]>,
    decoded: OnceLock<Memo>,
}

impl Stored {
    /// The bytes, as written.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where a reader keeps the decoded form of [`bytes`](Self::bytes); empty until the first
    /// reader fills it, and it never changes afterwards (a new write is a new `Stored`).
    pub(crate) fn decoded(&self) -> &OnceLock<Memo> {
        &self.decoded
    }
}

#[derive(Debug, Default)]
struct Maps {
    values: HashMap<String, Entry<Arc<Stored>>>,
    generations: HashMap<String, Entry<u64>>,
}

/// In-process [`CacheStore`].
#[derive(Debug, Clone)]
pub struct MemoryStore {
    maps: Arc<Mutex<Maps>>,
    clock: Arc<dyn Clock>,
    config: MemoryStoreConfig,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(MemoryStoreConfig::default())
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new(config: MemoryStoreConfig) -> Self {
        Self { maps: Arc::default(), clock: Arc::new(SystemClock), config }
    }

    /// The same store reading time from `clock` (tests move a `ManualClock`).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How many values are held (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.lock().values.len()
    }

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The live entry under `key`, shared rather than copied: the cluster cache's in-process
    /// read path (see the module docs).
    pub(crate) fn get_stored(&self, key: &str) -> Option<Arc<Stored>> {
        let now = self.clock.now();
        self.live(&mut self.lock(), key, now)
    }

    fn lock(&self) -> MutexGuard<'_, Maps> {
        // A panic while holding the lock cannot leave the maps half-updated (each operation is
        // one insert or remove), so a poisoned lock is still usable.
        self.maps.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn expiry(&self, ttl: Duration) -> DateTime<Utc> {
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        self.clock.now().checked_add_signed(ttl).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    fn insert(&self, maps: &mut Maps, key: &str, value: &[u8], ttl: Duration) {
        let now = self.clock.now();
        if maps.values.len() >= self.config.max_entries && !maps.values.contains_key(key) {
            maps.values.retain(|_, entry| entry.expires_at > now);
            if maps.values.len() >= self.config.max_entries {
                let soonest = maps
                    .values
                    .iter()
                    .min_by_key(|(_, entry)| entry.expires_at)
                    .map(|(key, _)| key.clone());
                if let Some(soonest) = soonest {
                    maps.values.remove(&soonest);
                }
            }
        }
        let stored = Stored { bytes: Box::from(value), decoded: OnceLock::new() };
        maps.values.insert(
            key.to_owned(),
            Entry { value: Arc::new(stored), expires_at: self.expiry(ttl) },
        );
    }

    fn current_generation(&self, maps: &Maps, generation_key: &str) -> Option<u64> {
        let now = self.clock.now();
        maps.generations
            .get(generation_key)
            .filter(|entry| entry.expires_at > now)
            .map(|entry| entry.value)
    }

    fn live(&self, maps: &mut Maps, key: &str, now: DateTime<Utc>) -> Option<Arc<Stored>> {
        match maps.values.get(key) {
            Some(entry) if entry.expires_at > now => Some(Arc::clone(&entry.value)),
            Some(_) => {
                maps.values.remove(key);
                None
            }
            None => None,
        }
    }

    fn read(&self, maps: &mut Maps, key: &str, now: DateTime<Utc>) -> Option<Vec<u8>> {
        self.live(maps, key, now).map(|stored| stored.bytes.to_vec())
    }
}

#[async_trait]
impl CacheStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn as_memory(&self) -> Option<&MemoryStore> {
        Some(self)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let now = self.clock.now();
        Ok(self.read(&mut self.lock(), key, now))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let now = self.clock.now();
        let mut maps = self.lock();
        Ok(keys.iter().map(|key| self.read(&mut maps, key, now)).collect())
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        let mut maps = self.lock();
        self.insert(&mut maps, key, value, ttl);
        Ok(())
    }

    async fn get_with_generation(
        &self,
        key: &str,
        generation_key: &str,
    ) -> Result<(Option<Vec<u8>>, Option<u64>)> {
        let now = self.clock.now();
        let mut maps = self.lock();
        let value = self.read(&mut maps, key, now);
        Ok((value, self.current_generation(&maps, generation_key)))
    }

    async fn set_if_generation(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        generation_key: &str,
        expected: Option<u64>,
    ) -> Result<bool> {
        let mut maps = self.lock();
        if self.current_generation(&maps, generation_key) != expected {
            return Ok(false);
        }
        self.insert(&mut maps, key, value, ttl);
        Ok(true)
    }

    async fn delete_many(&self, keys: &[String]) -> Result<u64> {
        let now = self.clock.now();
        let mut maps = self.lock();
        let mut deleted = 0;
        for key in keys {
            if maps.values.remove(key).is_some_and(|entry| entry.expires_at > now) {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    async fn invalidate(
        &self,
        keys: &[String],
        generation_key: &str,
        generation_ttl: Duration,
    ) -> Result<()> {
        let mut maps = self.lock();
        for key in keys {
            maps.values.remove(key);
        }
        let next = self.current_generation(&maps, generation_key).map_or(1, |g| g.wrapping_add(1));
        let expires_at = self.expiry(generation_ttl);
        maps.generations.insert(generation_key.to_owned(), Entry { value: next, expires_at });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iaas_core::ManualClock;

    #[tokio::test]
    async fn a_full_store_drops_the_entry_closest_to_expiry() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let store = MemoryStore::new(MemoryStoreConfig { max_entries: 2 }).with_clock(clock);
        store.set("short", b"1", Duration::from_secs(1)).await.unwrap();
        store.set("long", b"2", Duration::from_secs(60)).await.unwrap();
        store.set("new", b"3", Duration::from_secs(60)).await.unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(store.get("short").await.unwrap(), None);
        assert_eq!(store.get("long").await.unwrap(), Some(b"2".to_vec()));
        assert_eq!(store.get("new").await.unwrap(), Some(b"3".to_vec()));
    }

    #[tokio::test]
    async fn a_write_starts_with_an_empty_decoded_slot() {
        let store = MemoryStore::default();
        store.set("k", b"1", Duration::from_secs(60)).await.unwrap();
        let first = store.get_stored("k").unwrap();
        first.decoded().set(Box::new(1u32)).unwrap();
        assert!(store.get_stored("k").unwrap().decoded().get().is_some(), "shared, not copied");

        store.set("k", b"2", Duration::from_secs(60)).await.unwrap();
        let second = store.get_stored("k").unwrap();
        assert_eq!(second.bytes(), b"2");
        assert!(second.decoded().get().is_none(), "the old decoded form went with the old bytes");
        assert_eq!(first.bytes(), b"1", "a reader holding the old entry still sees it whole");
    }

    #[tokio::test]
    async fn an_expired_entry_is_not_handed_out() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let store = MemoryStore::default().with_clock(clock.clone());
        store.set("k", b"1", Duration::from_secs(1)).await.unwrap();
        assert!(store.get_stored("k").is_some());
        clock.advance(chrono::Duration::seconds(2));
        assert!(store.get_stored("k").is_none());
        assert!(store.is_empty(), "dropped when read");
    }
}
