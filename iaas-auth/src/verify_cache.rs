//! A bounded memo of access tokens that passed verification, so a service checks the signature
//! of each distinct token once instead of on every request.
//!
//! Why it exists: an Ed25519 signature check is curve arithmetic, far dearer than a map lookup
//! (`docs/benchmarks.md` has the figures), and a client sends the *same* access token with
//! every request for the token's whole lifetime (15 minutes by default). Remembering the
//! outcome turns every request after the first into a map lookup.
//!
//! What it may and may not change, and how that is kept:
//! - **Which tokens are accepted: nothing.** An entry is keyed by the *entire* token string and
//!   found only by an exact, full comparison (a `HashMap` with std's `RandomState`: SipHash keyed
//!   per process, so nobody can force collisions), never by a hash or a prefix alone. A token
//!   that differs in one byte is a miss and gets the full verification.
//! - Only tokens that passed every check are kept (no negative entries: an attacker could fill
//!   the memo with garbage otherwise, and a rejected token must be rejected again for its
//!   reason).
//! - The checks that depend on time run again on every hit, exactly as a cold verification runs
//!   them: `exp`, `nbf` and `iat` against the issuer's [`iaas_core::Clock`] with the same leeway,
//!   and the retirement time of the previous key that verified it (see
//!   [`crate::TokenIssuer::rotate`]). What a hit skips is what cannot change for a given string
//!   while the key set is unchanged: parsing, the `alg`/`kid` pinning, the signature, `iss` and
//!   `aud`.
//! - Changing the key set clears the memo ([`crate::TokenIssuer`] does it under the key set's
//!   write lock, and inserts under its read lock, so a verification that began before a rotation
//!   cannot put its result back after it).
//!
//! Bounded and cheap: at most [`crate::TokenConfig::verify_cache_capacity`] entries, split over
//! a few shards (each its own `RwLock`, so hits from many threads take read locks on different
//! cache lines). A full shard first drops the entries that are expired, then arbitrary ones
//! until it is half full: each eviction pass costs O(entries) and frees half the shard, so
//! inserts stay O(1) amortized. A full memo only costs time (more cold verifications), never
//! correctness.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Verifications answered from the memo (signature not checked again).
pub(crate) const HITS_METRIC: &str = "iaas_auth_token_cache_hits_total";
/// Verifications that found no entry and ran in full (none counted while the memo is off).
pub(crate) const MISSES_METRIC: &str = "iaas_auth_token_cache_misses_total";

/// Most shards; more buy nothing on the machines this runs on and cost empty maps.
const MAX_SHARDS: usize = 16;
/// Fewest entries a shard is given, so small capacities stay one exact map.
const MIN_ENTRIES_PER_SHARD: usize = 256;
/// Bytes at the end of a token that choose its shard (inside the signature).
const SHARD_KEY_BYTES: usize = 8;

/// The memo; one per [`crate::TokenIssuer`], shared by its clones.
pub(crate) struct VerifiedTokens<V> {
    shards: Box<[Shard<V>]>,
    /// Chooses a shard from the signature's last bytes. Keyed per process like the maps, so
    /// which tokens share a shard cannot be predicted.
    shard_hasher: RandomState,
}

/// One lock and its map, alone on its cache lines so two threads reading different shards do
/// not write to the same line.
#[repr(align(128))]
struct Shard<V> {
    capacity: usize,
    map: RwLock<HashMap<Box<str>, V>>,
}

impl<V: Clone> VerifiedTokens<V> {
    /// A memo of at most `capacity` tokens; zero turns it off.
    pub(crate) fn new(capacity: usize) -> Self {
        let shard_count =
            if capacity == 0 { 0 } else { (capacity / MIN_ENTRIES_PER_SHARD).clamp(1, MAX_SHARDS) };
        let shards = (0..shard_count)
            .map(|index| {
                // Spread the remainder so the shard capacities add up to exactly `capacity`.
                let extra = usize::from(index < capacity % shard_count);
                Shard { capacity: capacity / shard_count + extra, map: RwLock::new(HashMap::new()) }
            })
            .collect();
        Self { shards, shard_hasher: RandomState::new() }
    }

    /// Whether entries are kept at all.
    pub(crate) fn is_enabled(&self) -> bool {
        !self.shards.is_empty()
    }

    /// The remembered outcome for exactly `token`, if any. Counts a hit or a miss.
    pub(crate) fn get(&self, token: &str) -> Option<V> {
        let shard = self.shard(token)?;
        let found = read(&shard.map).get(token).cloned();
        let metric = if found.is_some() { HITS_METRIC } else { MISSES_METRIC };
        metrics::counter!(metric).increment(1);
        found
    }

    /// Remembers that `token` verified to `value`. When the token's shard is full, entries for
    /// which `is_live` is false go first, then arbitrary ones until the shard is half full.
    pub(crate) fn insert(&self, token: &str, value: V, is_live: impl Fn(&V) -> bool) {
        let Some(shard) = self.shard(token) else { return };
        let mut map = write(&shard.map);
        if map.len() >= shard.capacity && !map.contains_key(token) {
            map.retain(|_, entry| is_live(entry));
            let keep = shard.capacity / 2;
            let mut excess = map.len().saturating_sub(keep);
            if excess > 0 {
                // Arbitrary victims: the map's order comes from its per-process hash keys.
                map.retain(|_, _| {
                    if excess == 0 {
                        return true;
                    }
                    excess -= 1;
                    false
                });
            }
        }
        map.insert(Box::from(token), value);
    }

    /// Forgets every token (the key set changed).
    pub(crate) fn clear(&self) {
        for shard in &*self.shards {
            write(&shard.map).clear();
        }
    }

    /// Entries held now, over all shards.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| read(&shard.map).len()).sum()
    }

    fn shard(&self, token: &str) -> Option<&Shard<V>> {
        match self.shards.len() {
            0 => None,
            1 => self.shards.first(),
            count => {
                let bytes = token.as_bytes();
                let tail = &bytes[bytes.len().saturating_sub(SHARD_KEY_BYTES)..];
                // The remainder is below `count`, a `usize`, so the cast back cannot truncate.
                let index = (self.shard_hasher.hash_one(tail) % count as u64) as usize;
                self.shards.get(index)
            }
        }
    }
}

// No code panics while holding a shard's lock (map operations, clones and the caller's
// `is_live`, which only compares numbers), and every state a map can be left in is valid, so a
// poisoned lock is safe to keep using.
fn read<V>(map: &RwLock<HashMap<Box<str>, V>>) -> RwLockReadGuard<'_, HashMap<Box<str>, V>> {
    map.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<V>(map: &RwLock<HashMap<Box<str>, V>>) -> RwLockWriteGuard<'_, HashMap<Box<str>, V>> {
    map.write().unwrap_or_else(PoisonError::into_inner)
}

impl<V> std::fmt::Debug for VerifiedTokens<V> {
    /// Tokens are credentials: only the shape is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let capacity: usize = self.shards.iter().map(|shard| shard.capacity).sum();
        f.debug_struct("VerifiedTokens")
            .field("capacity", &capacity)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(i: usize) -> String {
        format!("header.payload.signature-{i:08}")
    }

    #[test]
    fn shard_capacities_add_up_to_the_capacity() {
        for capacity in [1, 2, 255, 256, 511, 512, 10_000, 10_007, 1_000_000] {
            let memo = VerifiedTokens::<u8>::new(capacity);
            let total: usize = memo.shards.iter().map(|shard| shard.capacity).sum();
            assert_eq!(total, capacity, "capacity {capacity}");
            assert!(memo.shards.iter().all(|shard| shard.capacity > 0), "capacity {capacity}");
            assert!(memo.shards.len() <= MAX_SHARDS);
        }
        assert_eq!(VerifiedTokens::<u8>::new(10_000).shards.len(), MAX_SHARDS);
        assert!(!VerifiedTokens::<u8>::new(0).is_enabled());
    }

    #[test]
    fn the_bound_holds_over_every_shard_and_the_newest_entry_is_kept() {
        let capacity = 1_000;
        let memo = VerifiedTokens::new(capacity);
        for i in 0..10 * capacity {
            memo.insert(&token(i), i, |_| true);
            assert!(memo.len() <= capacity, "{} entries after {i}", memo.len());
            assert_eq!(memo.get(&token(i)), Some(i), "the entry just inserted");
        }
    }

    #[test]
    fn a_full_shard_drops_dead_entries_before_live_ones() {
        let memo = VerifiedTokens::new(4);
        // Odd values play expired entries.
        for i in 0..4 {
            memo.insert(&token(i), i, |_| true);
        }
        memo.insert(&token(4), 4, |value| value % 2 == 0);
        assert_eq!(memo.len(), 3, "the two dead entries went, no live one");
        for live in [0, 2, 4] {
            assert_eq!(memo.get(&token(live)), Some(live));
        }
    }

    #[test]
    fn only_the_exact_string_is_found() {
        let memo = VerifiedTokens::new(16);
        memo.insert("aaa.bbb.ccc", 1, |_| true);
        assert_eq!(memo.get("aaa.bbb.ccc"), Some(1));
        for other in ["aaa.bbb.cc", "aaa.bbb.ccd", "aaa.bbb.ccc ", "Aaa.bbb.ccc", ""] {
            assert_eq!(memo.get(other), None, "{other:?}");
        }
        memo.clear();
        assert_eq!(memo.get("aaa.bbb.ccc"), None, "cleared");
    }

    #[test]
    fn a_zero_capacity_keeps_nothing() {
        let memo = VerifiedTokens::new(0);
        memo.insert("aaa.bbb.ccc", 1, |_| true);
        assert_eq!(memo.get("aaa.bbb.ccc"), None);
        assert_eq!(memo.len(), 0);
    }

    #[test]
    fn debug_output_shows_no_token() {
        let memo = VerifiedTokens::new(16);
        memo.insert("secret-token", 1, |_| true);
        let shown = format!("{memo:?}");
        assert!(!shown.contains("secret-token"), "{shown}");
        assert!(shown.contains("capacity: 16"), "{shown}");
    }
}
