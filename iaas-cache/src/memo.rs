//! The value each key last decoded to, kept beside the bytes it came from, for backends that
//! hand back bytes (Redis).
//!
//! A Redis hit is a `GET` and a decode, and the decode (postcard into a `ClusterInfo`: about ten
//! allocations and UTF-8 checks) was the largest part of what the cache adds to a raw
//! `GET` (`docs/benchmarks.md`). Cluster values are read far more often than they change, so
//! [`DecodeMemo`] keeps, per key, the bytes last decoded and the value they decoded to; when the
//! `GET` returns exactly those bytes again, the kept value is cloned instead (a compare of about
//! 200 bytes and a clone, instead of the decode).
//!
//! **Why it is never stale.** The decision is made on the bytes Redis returned for this very
//! read: the `GET` is never skipped, and decoding is a pure function of the bytes (the write
//! time is inside them) and of the cache's codec settings, which do not change. Equal bytes
//! therefore mean an equal value, and a value another process wrote is seen on the next read
//! exactly as without the memo. Writes and invalidations made through this cache drop their
//! keys' entries anyway, so memory goes with the values it belongs to.
//!
//! **Bounded.** At most [`ClusterCacheConfig::decoded_memo_entries`](crate::ClusterCacheConfig)
//! keys; a new key beyond that evicts an arbitrary one (the memo only saves work, so any victim
//! is correct; a hot key evicted is decoded once more on its next read). Entries are keyed by
//! kind and instance id rather than by the key string: the prefix is fixed per cache, and
//! hashing 17 bytes is cheaper than hashing the whole key on every hit.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use iaas_core::InstanceId;

use crate::codec::Decoded;
use crate::kind::{CachedValue, Kind};

/// One key's last decode: the bytes and the [`Decoded<T>`] of the key's kind they gave.
struct Kept {
    bytes: Box<[u8]>,
    decoded: Box<dyn Any + Send + Sync>,
}

/// The last decoded value per key (see the module docs).
pub(crate) struct DecodeMemo {
    capacity: usize,
    entries: Mutex<HashMap<(Kind, InstanceId), Arc<Kept>>>,
}

impl std::fmt::Debug for DecodeMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeMemo")
            .field("capacity", &self.capacity)
            .field("entries", &self.len())
            .finish()
    }
}

impl DecodeMemo {
    /// A memo of at most `capacity` keys; 0 keeps nothing.
    pub(crate) fn new(capacity: usize) -> Self {
        Self { capacity, entries: Mutex::default() }
    }

    /// The value `bytes` decoded to last time they were read under `(T::KIND, id)`, if they are
    /// exactly the bytes kept for that key.
    pub(crate) fn get<T: CachedValue>(&self, id: InstanceId, bytes: &[u8]) -> Option<Decoded<T>> {
        if self.capacity == 0 {
            return None;
        }
        // Only the reference count is taken under the lock; the compare and the clone run
        // outside it, so concurrent readers of one key do not queue behind each other's clones.
        let kept = Arc::clone(self.lock().get(&(T::KIND, id))?);
        if *kept.bytes != *bytes {
            return None;
        }
        kept.decoded.downcast_ref::<Decoded<T>>().cloned()
    }

    /// Keeps `decoded` as what `bytes` under `(T::KIND, id)` decode to, replacing that key's
    /// previous entry, evicting another key when the memo is full.
    pub(crate) fn keep<T: CachedValue>(
        &self,
        id: InstanceId,
        bytes: Vec<u8>,
        decoded: &Decoded<T>,
    ) {
        if self.capacity == 0 {
            return;
        }
        let kept =
            Arc::new(Kept { bytes: bytes.into_boxed_slice(), decoded: Box::new(decoded.clone()) });
        let mut entries = self.lock();
        let key = (T::KIND, id);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let victim = entries.keys().next().copied();
            if let Some(victim) = victim {
                entries.remove(&victim);
            }
        }
        entries.insert(key, kept);
    }

    /// Drops what is kept for `kind` of `id` (it was written or invalidated through this cache).
    pub(crate) fn forget(&self, kind: Kind, id: InstanceId) {
        if self.capacity == 0 {
            return;
        }
        self.lock().remove(&(kind, id));
    }

    /// How many keys have a kept value.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(Kind, InstanceId), Arc<Kept>>> {
        // Each critical section is one map operation: a poisoned map is still consistent.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use iaas_core::{ClusterInfo, ClusterStats};

    use super::*;
    use crate::codec::Codec;
    use crate::codec::tests::info;

    fn decoded(id: InstanceId) -> (Vec<u8>, Decoded<ClusterInfo>) {
        let codec = Codec::default();
        let bytes = codec.encode(&info(id), Utc::now()).unwrap();
        let decoded = codec.decode::<ClusterInfo>(&bytes).unwrap();
        (bytes, decoded)
    }

    #[test]
    fn only_the_exact_bytes_kept_give_the_kept_value() {
        let memo = DecodeMemo::new(8);
        let id = InstanceId::new_random();
        let (bytes, value) = decoded(id);
        assert!(memo.get::<ClusterInfo>(id, &bytes).is_none(), "nothing kept yet");
        memo.keep(id, bytes.clone(), &value);

        assert_eq!(memo.get::<ClusterInfo>(id, &bytes), Some(value));
        let mut changed = bytes.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert!(memo.get::<ClusterInfo>(id, &changed).is_none(), "one byte differs");
        assert!(memo.get::<ClusterInfo>(id, &bytes[..bytes.len() - 1]).is_none(), "shorter");
        assert!(memo.get::<ClusterInfo>(InstanceId::new_random(), &bytes).is_none(), "other id");
        assert!(memo.get::<ClusterStats>(id, &bytes).is_none(), "other kind, same id");
    }

    #[test]
    fn forgetting_a_key_drops_its_value() {
        let memo = DecodeMemo::new(8);
        let id = InstanceId::new_random();
        let (bytes, value) = decoded(id);
        memo.keep(id, bytes.clone(), &value);
        memo.forget(Kind::Stats, id);
        assert_eq!(memo.len(), 1, "another kind of the same id is another key");
        memo.forget(Kind::Info, id);
        assert_eq!(memo.len(), 0);
        assert!(memo.get::<ClusterInfo>(id, &bytes).is_none());
    }

    #[test]
    fn the_memo_never_holds_more_than_its_capacity() {
        let memo = DecodeMemo::new(3);
        let ids: Vec<InstanceId> = (0..10).map(|_| InstanceId::new_random()).collect();
        for &id in &ids {
            let (bytes, value) = decoded(id);
            memo.keep(id, bytes.clone(), &value);
            assert!(memo.len() <= 3, "{} entries", memo.len());
            assert_eq!(memo.get::<ClusterInfo>(id, &bytes), Some(value), "the newest is kept");
        }
        // Replacing a key that is kept does not evict another.
        let last = ids[9];
        let (bytes, value) = decoded(last);
        memo.keep(last, bytes, &value);
        assert_eq!(memo.len(), 3);
    }

    #[test]
    fn a_zero_capacity_memo_keeps_nothing() {
        let memo = DecodeMemo::new(0);
        let id = InstanceId::new_random();
        let (bytes, value) = decoded(id);
        memo.keep(id, bytes.clone(), &value);
        assert_eq!(memo.len(), 0);
        assert!(memo.get::<ClusterInfo>(id, &bytes).is_none());
    }
}
