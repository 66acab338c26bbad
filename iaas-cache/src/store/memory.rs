//! The in-process backend: a map under a mutex, with expiry read from a [`Clock`].
//!
//! Critical sections are a hash lookup and a copy, so a `std` mutex is the right lock (no
//! `.await` is held across it). Expired entries are dropped when read and swept when the map
//! reaches its capacity; when it is still full, the entries closest to expiry go first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
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

#[derive(Debug, Default)]
struct Maps {
    values: HashMap<String, Entry<Arc<[u8]>>>,
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
        maps.values.insert(
            key.to_owned(),
            Entry { value: Arc::from(value), expires_at: self.expiry(ttl) },
        );
    }

    fn current_generation(&self, maps: &Maps, generation_key: &str) -> Option<u64> {
        let now = self.clock.now();
        maps.generations
            .get(generation_key)
            .filter(|entry| entry.expires_at > now)
            .map(|entry| entry.value)
    }

    fn read(&self, maps: &mut Maps, key: &str, now: DateTime<Utc>) -> Option<Vec<u8>> {
        match maps.values.get(key) {
            Some(entry) if entry.expires_at > now => Some(entry.value.to_vec()),
            Some(_) => {
                maps.values.remove(key);
                None
            }
            None => None,
        }
    }
}

#[async_trait]
impl CacheStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
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
}
