//! [`SessionStore`] in process memory: the embedded default for a single instance, and the
//! reference the Redis store is tested against. Expiry follows the `now` the caller passes.
//!
//! Memory stays bounded where clients add entries: every [`SWEEP_EVERY`] writes (and whenever
//! the counters pass their bound) expired sessions, rotated records whose successor could no
//! longer be refreshed, ended throttle windows and "not before" stamps nobody needs any more
//! are dropped. Throttle counters are also held to [`MemorySessionStore::with_max_counters`]
//! (default [`DEFAULT_MAX_COUNTERS`]): past it, the tenth that would expire soonest goes.
//! Gauges: `iaas_auth_session_store_entries{kind="sessions"|"counters"}`.
//!
//! Every login it ends (a revoked family, a revoke-all) is told at once to the listeners of
//! [`SessionStore::login_news`]; one that expires with nobody refreshing it is not.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use iaas_core::{LoginNews, LoginNewsFeed, LoginNewsHub, UserId};
use uuid::Uuid;

use super::{Attempts, Rotate, Rotation, Session, SessionStore, TokenHash};
use crate::error::Result;

#[derive(Debug)]
struct Entry {
    session: Session,
    idle_until: DateTime<Utc>,
    rotated: Option<(TokenHash, DateTime<Utc>)>,
}

/// Writes between two sweeps of expired entries.
pub const SWEEP_EVERY: u64 = 1024;

/// Throttle counters kept at most, unless configured otherwise.
pub const DEFAULT_MAX_COUNTERS: usize = 100_000;

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<TokenHash, Entry>,
    families: HashMap<Uuid, HashSet<TokenHash>>,
    users: HashMap<UserId, HashSet<TokenHash>>,
    /// The stamp, and until when it must be kept.
    not_before: HashMap<UserId, (DateTime<Utc>, DateTime<Utc>)>,
    failures: HashMap<String, (u64, DateTime<Utc>)>,
    writes: u64,
    /// Where the ended logins are told.
    news: LoginNewsHub,
}

impl State {
    fn kill_family(&mut self, family: Uuid, user: UserId) {
        for hash in self.families.remove(&family).unwrap_or_default() {
            self.sessions.remove(&hash);
            if let Some(index) = self.users.get_mut(&user) {
                index.remove(&hash);
            }
        }
        self.news.tell(LoginNews::Ended { user, session: family });
    }

    fn is_revoked(&self, session: &Session) -> bool {
        self.not_before.get(&session.user).is_some_and(|(nbf, _)| session.family_created_at <= *nbf)
    }

    /// Counts a write; sweeps every [`SWEEP_EVERY`] writes and whenever the counters are over
    /// `max_counters`, then trims them to it.
    fn wrote(&mut self, now: DateTime<Utc>, max_counters: usize) {
        self.writes = self.writes.wrapping_add(1);
        if self.writes.is_multiple_of(SWEEP_EVERY) || self.failures.len() > max_counters {
            self.sweep(now);
            self.trim_counters(max_counters);
            metrics::gauge!("iaas_auth_session_store_entries", "kind" => "sessions")
                .set(self.sessions.len() as f64);
            metrics::gauge!("iaas_auth_session_store_entries", "kind" => "counters")
                .set(self.failures.len() as f64);
        }
    }

    /// Drops everything that can no longer change an answer.
    fn sweep(&mut self, now: DateTime<Utc>) {
        let dead: Vec<TokenHash> = self
            .sessions
            .iter()
            .filter(|(_, e)| now >= e.idle_until || now >= e.session.expires_at)
            .map(|(hash, _)| hash.clone())
            .collect();
        for hash in dead {
            if let Some(entry) = self.sessions.remove(&hash) {
                let (family, user) = (entry.session.family, entry.session.user);
                if let Some(members) = self.families.get_mut(&family) {
                    members.remove(&hash);
                    if members.is_empty() {
                        self.families.remove(&family);
                    }
                }
                if let Some(index) = self.users.get_mut(&user) {
                    index.remove(&hash);
                    if index.is_empty() {
                        self.users.remove(&user);
                    }
                }
            }
        }
        self.failures.retain(|_, (_, until)| now < *until);
        self.not_before.retain(|_, (_, keep_until)| now < *keep_until);
    }

    /// Past `max`, drops the tenth of the counters that would end soonest.
    fn trim_counters(&mut self, max: usize) {
        if self.failures.len() <= max {
            return;
        }
        let target = max - max / 10;
        let mut ends: Vec<(DateTime<Utc>, String)> =
            self.failures.iter().map(|(key, (_, until))| (*until, key.clone())).collect();
        ends.sort_unstable();
        let excess = self.failures.len().saturating_sub(target);
        for (_, key) in ends.into_iter().take(excess) {
            self.failures.remove(&key);
        }
    }

    fn insert(&mut self, hash: TokenHash, session: Session, idle_until: DateTime<Utc>) {
        self.families.entry(session.family).or_default().insert(hash.clone());
        self.users.entry(session.user).or_default().insert(hash.clone());
        self.sessions.insert(hash, Entry { session, idle_until, rotated: None });
    }
}

/// [`SessionStore`] in a mutex-guarded map.
#[derive(Debug)]
pub struct MemorySessionStore {
    state: Mutex<State>,
    max_counters: usize,
}

impl Default for MemorySessionStore {
    fn default() -> Self {
        Self { state: Mutex::default(), max_counters: DEFAULT_MAX_COUNTERS }
    }
}

impl MemorySessionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps at most `max` throttle counters (at least 10).
    #[must_use]
    pub fn with_max_counters(mut self, max: usize) -> Self {
        self.max_counters = max.max(10);
        self
    }

    /// Sessions and rotated records held, and throttle counters held: for tests and metrics.
    pub fn len(&self) -> (usize, usize) {
        let state = self.lock();
        (state.sessions.len(), state.failures.len())
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every method leaves the state consistent before it can panic, so a poisoned lock
        // still guards consistent data.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn create(
        &self,
        hash: &TokenHash,
        session: &Session,
        idle_timeout: Duration,
    ) -> Result<()> {
        let idle_until = (session.created_at + idle_timeout).min(session.expires_at);
        let mut state = self.lock();
        state.insert(hash.clone(), session.clone(), idle_until);
        state.wrote(session.created_at, self.max_counters);
        Ok(())
    }

    async fn rotate<'a>(&self, request: Rotate<'a>) -> Result<Rotation> {
        let now = request.now;
        let mut state = self.lock();
        let rotation = rotate_locked(&mut state, request);
        // After the rotation: a sweep first could answer `Unknown` where the family `Expired`.
        state.wrote(now, self.max_counters);
        Ok(rotation)
    }

    async fn revoke_family(&self, hash: &TokenHash) -> Result<Option<Session>> {
        let mut state = self.lock();
        let Some(entry) = state.sessions.get(hash) else { return Ok(None) };
        let session = entry.session.clone();
        state.kill_family(session.family, session.user);
        Ok(Some(session))
    }

    async fn revoke_session(&self, user: UserId, family: Uuid) -> Result<bool> {
        let mut state = self.lock();
        let owned = state.families.get(&family).is_some_and(|members| {
            members
                .iter()
                .any(|hash| state.sessions.get(hash).is_some_and(|e| e.session.user == user))
        });
        if owned {
            state.kill_family(family, user);
        }
        Ok(owned)
    }

    async fn revoke_all(
        &self,
        user: UserId,
        now: DateTime<Utc>,
        keep_stamp_for: Duration,
    ) -> Result<u64> {
        let mut state = self.lock();
        let stamp = state.not_before.entry(user).or_insert((now, now + keep_stamp_for));
        *stamp = (stamp.0.max(now), stamp.1.max(now + keep_stamp_for));
        let hashes = state.users.remove(&user).unwrap_or_default();
        let mut deleted = 0;
        for hash in hashes {
            if let Some(entry) = state.sessions.remove(&hash) {
                state.families.remove(&entry.session.family);
                deleted += 1;
            }
        }
        state.news.tell(LoginNews::AllEnded { user });
        Ok(deleted)
    }

    fn login_news(&self) -> Option<LoginNewsFeed> {
        Some(self.lock().news.listen())
    }

    async fn is_family_live(&self, user: UserId, family: Uuid, now: DateTime<Utc>) -> Result<bool> {
        let state = self.lock();
        let Some(members) = state.families.get(&family) else { return Ok(false) };
        Ok(members.iter().filter_map(|hash| state.sessions.get(hash)).any(|e| {
            e.session.user == user
                && now < e.idle_until
                && now < e.session.expires_at
                && !state.is_revoked(&e.session)
        }))
    }

    async fn list(&self, user: UserId, now: DateTime<Utc>) -> Result<Vec<Session>> {
        let state = self.lock();
        let Some(index) = state.users.get(&user) else { return Ok(Vec::new()) };
        let mut sessions: Vec<Session> = index
            .iter()
            .filter_map(|hash| state.sessions.get(hash))
            .filter(|e| e.rotated.is_none() && now < e.idle_until && now < e.session.expires_at)
            .filter(|e| !state.is_revoked(&e.session))
            .map(|e| e.session.clone())
            .collect();
        sessions.sort_by_key(|s| s.family_created_at);
        Ok(sessions)
    }

    async fn record_failure(
        &self,
        key: &str,
        window: Duration,
        now: DateTime<Utc>,
    ) -> Result<Attempts> {
        let mut state = self.lock();
        let slot = state.failures.entry(key.to_owned()).or_insert((0, now + window));
        if now >= slot.1 {
            *slot = (0, now + window);
        }
        slot.0 += 1;
        let attempts = Attempts { count: slot.0, retry_after: slot.1 - now };
        state.wrote(now, self.max_counters);
        Ok(attempts)
    }

    async fn failures(&self, key: &str, now: DateTime<Utc>) -> Result<Attempts> {
        let state = self.lock();
        Ok(match state.failures.get(key) {
            Some((count, until)) if now < *until => {
                Attempts { count: *count, retry_after: *until - now }
            }
            _ => Attempts { count: 0, retry_after: Duration::zero() },
        })
    }

    async fn clear_failures(&self, key: &str) -> Result<()> {
        self.lock().failures.remove(key);
        Ok(())
    }
}

/// One rotation under the lock (see [`SessionStore::rotate`]).
fn rotate_locked(state: &mut State, request: Rotate<'_>) -> Rotation {
    let Rotate { presented, successor, now, idle_timeout, reuse_grace } = request;
    let Some(entry) = state.sessions.get(presented) else { return Rotation::Unknown };
    let session = entry.session.clone();
    let rotated = entry.rotated.clone();
    let idle_until = entry.idle_until;
    if state.is_revoked(&session) {
        state.kill_family(session.family, session.user);
        return Rotation::Revoked;
    }
    if now >= session.expires_at {
        state.kill_family(session.family, session.user);
        return Rotation::Expired;
    }
    if now >= idle_until {
        state.sessions.remove(presented);
        if let Some(index) = state.users.get_mut(&session.user) {
            index.remove(presented);
        }
        return Rotation::Unknown;
    }
    if let Some((to, at)) = rotated {
        if to == *successor
            && now - at < reuse_grace
            && let Some(next) = state.sessions.get(successor)
        {
            return Rotation::Repeated(next.session.clone());
        }
        state.kill_family(session.family, session.user);
        return Rotation::Reused { user: session.user, family: session.family };
    }
    let next = Session { created_at: now, ..session };
    let idle_until = (now + idle_timeout).min(next.expires_at);
    if let Some(entry) = state.sessions.get_mut(presented) {
        entry.rotated = Some((successor.clone(), now));
        // The rotated record stays as long as its successor could, to detect reuse.
        entry.idle_until = idle_until;
    }
    state.insert(successor.clone(), next.clone(), idle_until);
    Rotation::Rotated(next)
}
