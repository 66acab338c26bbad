//! A small in-process cache of what a refresh needs to know about a user (that the account
//! exists, and its scopes), so the hot refresh path does not read the user store every time.
//!
//! Why it exists: profiling refresh over HTTP showed about half of the platform's CPU per refresh
//! in the user read (SQLite through sqlx: waking and waiting on its worker thread), for an
//! answer that almost never changes between two refreshes of the same user.
//!
//! What it is allowed to do, and why that is safe enough:
//! - Only positive answers are kept: an unknown user is asked again every time, so an account
//!   created out of band is seen at once and a miss cannot be turned into a lasting "no".
//! - Entries live for [`UserCacheConfig::ttl`] measured on [`Clock`], then are read again. A
//!   user deleted or re-scoped out of band keeps refreshing with the old answer for at most that
//!   long; see the field's documentation for why that window is acceptable.
//! - Writes made through [`crate::AuthService`] (registration, password change) drop the id, and
//!   bump a generation so that a read that started before the write cannot put its older answer
//!   back afterwards.
//! - Login never uses it: a password check must see the stored hash as it is now.
//!
//! The map is bounded. When it is full, expired entries are swept (at most once per TTL, so a
//! full map of fresh entries does not pay a full scan on every insert), and if it is still full
//! one arbitrary entry is dropped: the cache only saves work, so a cheap, unfair eviction is
//! fine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};
use iaas_core::UserId;

/// Hits of the refresh path's user cache.
pub(crate) const HITS_METRIC: &str = "iaas_auth_user_cache_hits_total";
/// Misses of the refresh path's user cache (the user store was read).
pub(crate) const MISSES_METRIC: &str = "iaas_auth_user_cache_misses_total";

/// How the refresh path caches users by id.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserCacheConfig {
    /// How long a user read for a refresh is reused (default 5 seconds; zero turns the cache
    /// off and every refresh reads the user store).
    ///
    /// Security bound: the read exists so a new access token carries the user's current scopes
    /// and a deleted account cannot refresh. An access token already stays valid for its whole
    /// lifetime (default 15 minutes, [`crate::TokenConfig`]) after its user is deleted or
    /// re-scoped; the cache extends that window by at most this TTL (5 seconds against 15
    /// minutes). Deleting or re-scoping a user is not an operation of the SDK
    /// ([`iaas_core::UserRepository`] has neither), so only out-of-band edits of the store are
    /// concerned, and this window covers them. Password changes go through
    /// [`crate::AuthService`], invalidate the entry and revoke every session anyway.
    pub ttl: Duration,
    /// Most users held at once (default 10,000; a user entry is a few hundred bytes).
    pub max_entries: usize,
}

impl UserCacheConfig {
    /// Default time an entry is reused.
    pub const DEFAULT_TTL: Duration = Duration::seconds(5);
    /// Default bound on the number of entries.
    pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

    /// A configuration that turns the cache off.
    pub fn disabled() -> Self {
        Self { ttl: Duration::zero(), ..Self::default() }
    }

    /// The default bound with entries reused for `ttl` (a `std` duration, as configuration
    /// files give it; one beyond chrono's range saturates). Zero turns the cache off.
    pub fn with_ttl(ttl: std::time::Duration) -> Self {
        Self { ttl: Duration::from_std(ttl).unwrap_or(Duration::MAX), ..Self::default() }
    }

    /// Whether entries are kept at all.
    pub fn is_enabled(&self) -> bool {
        self.ttl > Duration::zero() && self.max_entries > 0
    }
}

impl Default for UserCacheConfig {
    fn default() -> Self {
        Self { ttl: Self::DEFAULT_TTL, max_entries: Self::DEFAULT_MAX_ENTRIES }
    }
}

/// What a cached refresh needs: the scopes of a user that existed when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CachedUser {
    pub(crate) scopes: Arc<[String]>,
}

/// The answer of [`UserCache::get`].
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A fresh entry.
    Hit(CachedUser),
    /// Read the store, then hand the result to [`UserCache::insert`] with this ticket.
    Miss(Ticket),
    /// The cache is off.
    Disabled,
}

/// Proof of when a miss began: an insert carrying a ticket older than the last invalidation is
/// dropped, so a slow read cannot undo a write that finished while it was in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

struct Entry {
    user: CachedUser,
    expires_at: DateTime<Utc>,
}

struct State {
    entries: HashMap<UserId, Entry>,
    /// Bumped by every invalidation.
    generation: u64,
    /// No sweep of expired entries before this instant.
    next_sweep: DateTime<Utc>,
}

/// The cache itself; cheap to share behind the service's `Arc`.
pub(crate) struct UserCache {
    config: UserCacheConfig,
    state: Mutex<State>,
}

impl UserCache {
    pub(crate) fn new(config: UserCacheConfig) -> Self {
        Self {
            state: Mutex::new(State {
                entries: HashMap::new(),
                generation: 0,
                next_sweep: DateTime::<Utc>::MIN_UTC,
            }),
            config,
        }
    }

    /// The user `id` if a fresh entry exists at `now`. Counts a hit or a miss.
    pub(crate) fn get(&self, id: UserId, now: DateTime<Utc>) -> Lookup {
        if !self.config.is_enabled() {
            return Lookup::Disabled;
        }
        let state = self.lock();
        match state.entries.get(&id) {
            Some(entry) if now < entry.expires_at => {
                let user = entry.user.clone();
                drop(state);
                metrics::counter!(HITS_METRIC).increment(1);
                Lookup::Hit(user)
            }
            _ => {
                let ticket = Ticket(state.generation);
                drop(state);
                metrics::counter!(MISSES_METRIC).increment(1);
                Lookup::Miss(ticket)
            }
        }
    }

    /// Keeps `user` (just read from the store at `now`) unless an invalidation happened since
    /// `ticket` was handed out.
    pub(crate) fn insert(&self, id: UserId, user: CachedUser, ticket: Ticket, now: DateTime<Utc>) {
        if !self.config.is_enabled() {
            return;
        }
        let ttl = self.config.ttl;
        let mut state = self.lock();
        if state.generation != ticket.0 {
            return;
        }
        if state.entries.len() >= self.config.max_entries && !state.entries.contains_key(&id) {
            if now >= state.next_sweep {
                state.entries.retain(|_, entry| now < entry.expires_at);
                state.next_sweep = later(now, ttl);
            }
            if state.entries.len() >= self.config.max_entries
                && let Some(victim) = state.entries.keys().next().copied()
            {
                state.entries.remove(&victim);
            }
        }
        state.entries.insert(id, Entry { user, expires_at: later(now, ttl) });
    }

    /// Forgets `id` (its account was just written through the service).
    pub(crate) fn invalidate(&self, id: UserId) {
        if !self.config.is_enabled() {
            return;
        }
        let mut state = self.lock();
        state.generation = state.generation.wrapping_add(1);
        state.entries.remove(&id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    // No code panics while holding the lock (map operations and clones only), and every state
    // the map can be left in is valid, so a poisoned lock is safe to keep using.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `now + ttl`, saturating instead of panicking for an absurdly long TTL.
fn later(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    now.checked_add_signed(ttl).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl std::fmt::Debug for UserCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCache").field("config", &self.config).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iaas_core::{Clock, ManualClock};

    fn scopes(scope: &str) -> CachedUser {
        CachedUser { scopes: Arc::from(vec![scope.to_owned()]) }
    }

    fn cache(ttl_secs: i64, max_entries: usize) -> UserCache {
        UserCache::new(UserCacheConfig { ttl: Duration::seconds(ttl_secs), max_entries })
    }

    fn start() -> ManualClock {
        ManualClock::new(DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default())
    }

    fn fill(cache: &UserCache, id: UserId, user: CachedUser, now: DateTime<Utc>) {
        match cache.get(id, now) {
            Lookup::Miss(ticket) => cache.insert(id, user, ticket, now),
            other => panic!("expected a miss for {id}, got {other:?}"),
        }
    }

    #[test]
    fn a_user_is_served_from_the_cache_within_the_ttl_and_read_again_after() {
        let clock = start();
        let cache = cache(5, 10);
        let id = UserId::new_random();
        fill(&cache, id, scopes("instances:read"), clock.now());

        clock.advance(Duration::milliseconds(4_999));
        assert!(
            matches!(cache.get(id, clock.now()), Lookup::Hit(user) if user == scopes("instances:read"))
        );
        clock.advance(Duration::milliseconds(1));
        assert!(matches!(cache.get(id, clock.now()), Lookup::Miss(_)), "expired at the TTL");
    }

    #[test]
    fn a_zero_ttl_disables_the_cache() {
        let clock = start();
        let cache = UserCache::new(UserCacheConfig::disabled());
        let id = UserId::new_random();
        assert!(matches!(cache.get(id, clock.now()), Lookup::Disabled));
        cache.insert(id, scopes("a"), Ticket(0), clock.now());
        assert!(matches!(cache.get(id, clock.now()), Lookup::Disabled));
        assert_eq!(cache.len(), 0);
        assert!(!UserCacheConfig::disabled().is_enabled());
        assert!(UserCacheConfig::default().is_enabled());
        assert!(!UserCacheConfig::with_ttl(std::time::Duration::ZERO).is_enabled());
        assert_eq!(
            UserCacheConfig::with_ttl(std::time::Duration::from_secs(5)),
            UserCacheConfig::default()
        );
    }

    #[test]
    fn the_entry_count_never_exceeds_the_bound() {
        let clock = start();
        let cache = cache(60, 3);
        let ids: Vec<UserId> = (0..10).map(|_| UserId::new_random()).collect();
        for id in &ids {
            fill(&cache, *id, scopes("a"), clock.now());
            assert!(cache.len() <= 3, "{} entries", cache.len());
        }
        assert_eq!(cache.len(), 3);
        let last = ids.last().copied().unwrap_or_else(UserId::new_random);
        assert!(matches!(cache.get(last, clock.now()), Lookup::Hit(_)), "the newest is kept");
    }

    #[test]
    fn a_full_cache_drops_expired_entries_before_fresh_ones() {
        let clock = start();
        let cache = cache(5, 2);
        let old = UserId::new_random();
        fill(&cache, old, scopes("a"), clock.now());
        clock.advance(Duration::seconds(3));
        let fresh = UserId::new_random();
        fill(&cache, fresh, scopes("b"), clock.now());
        clock.advance(Duration::seconds(3));
        // `old` expired, `fresh` has 2 s left: the sweep makes room without touching `fresh`.
        fill(&cache, UserId::new_random(), scopes("c"), clock.now());
        assert!(matches!(cache.get(fresh, clock.now()), Lookup::Hit(_)));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn invalidation_forgets_the_user_and_refuses_an_older_read() {
        let clock = start();
        let cache = cache(5, 10);
        let id = UserId::new_random();
        fill(&cache, id, scopes("old"), clock.now());
        cache.invalidate(id);
        let Lookup::Miss(ticket) = cache.get(id, clock.now()) else {
            panic!("an invalidated user must be read again");
        };
        // A password change lands while that read is in flight: its answer must not stick.
        cache.invalidate(id);
        cache.insert(id, scopes("old"), ticket, clock.now());
        assert!(matches!(cache.get(id, clock.now()), Lookup::Miss(_)));
    }
}
