//! [`SessionStore`] in process memory: the embedded default for a single instance, and the
//! reference the Redis store is tested against. Expiry follows the `now` the caller passes.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use iaas_core::UserId;
use uuid::Uuid;

use super::{Attempts, Rotate, Rotation, Session, SessionStore, TokenHash};
use crate::error::Result;

#[derive(Debug)]
struct Entry {
    session: Session,
    idle_until: DateTime<Utc>,
    rotated: Option<(TokenHash, DateTime<Utc>)>,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<TokenHash, Entry>,
    families: HashMap<Uuid, HashSet<TokenHash>>,
    users: HashMap<UserId, HashSet<TokenHash>>,
    not_before: HashMap<UserId, DateTime<Utc>>,
    failures: HashMap<String, (u64, DateTime<Utc>)>,
}

impl State {
    fn kill_family(&mut self, family: Uuid, user: UserId) {
        for hash in self.families.remove(&family).unwrap_or_default() {
            self.sessions.remove(&hash);
            if let Some(index) = self.users.get_mut(&user) {
                index.remove(&hash);
            }
        }
    }

    fn is_revoked(&self, session: &Session) -> bool {
        self.not_before.get(&session.user).is_some_and(|nbf| session.family_created_at <= *nbf)
    }

    fn insert(&mut self, hash: TokenHash, session: Session, idle_until: DateTime<Utc>) {
        self.families.entry(session.family).or_default().insert(hash.clone());
        self.users.entry(session.user).or_default().insert(hash.clone());
        self.sessions.insert(hash, Entry { session, idle_until, rotated: None });
    }
}

/// [`SessionStore`] in a mutex-guarded map.
#[derive(Debug, Default)]
pub struct MemorySessionStore {
    state: Mutex<State>,
}

impl MemorySessionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
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
        self.lock().insert(hash.clone(), session.clone(), idle_until);
        Ok(())
    }

    async fn rotate<'a>(&self, request: Rotate<'a>) -> Result<Rotation> {
        let Rotate { presented, successor, now, idle_timeout, reuse_grace } = request;
        let mut state = self.lock();
        let Some(entry) = state.sessions.get(presented) else { return Ok(Rotation::Unknown) };
        let session = entry.session.clone();
        let rotated = entry.rotated.clone();
        let idle_until = entry.idle_until;
        if state.is_revoked(&session) {
            state.kill_family(session.family, session.user);
            return Ok(Rotation::Revoked);
        }
        if now >= session.expires_at {
            state.kill_family(session.family, session.user);
            return Ok(Rotation::Expired);
        }
        if now >= idle_until {
            state.sessions.remove(presented);
            if let Some(index) = state.users.get_mut(&session.user) {
                index.remove(presented);
            }
            return Ok(Rotation::Unknown);
        }
        if let Some((to, at)) = rotated {
            if to == *successor
                && now - at < reuse_grace
                && let Some(next) = state.sessions.get(successor)
            {
                return Ok(Rotation::Repeated(next.session.clone()));
            }
            state.kill_family(session.family, session.user);
            return Ok(Rotation::Reused { user: session.user, family: session.family });
        }
        let next = Session { created_at: now, ..session };
        let idle_until = (now + idle_timeout).min(next.expires_at);
        if let Some(entry) = state.sessions.get_mut(presented) {
            entry.rotated = Some((successor.clone(), now));
            // The rotated record stays as long as its successor could, to detect reuse.
            entry.idle_until = idle_until;
        }
        state.insert(successor.clone(), next.clone(), idle_until);
        Ok(Rotation::Rotated(next))
    }

    async fn revoke_family(&self, hash: &TokenHash) -> Result<Option<Session>> {
        let mut state = self.lock();
        let Some(entry) = state.sessions.get(hash) else { return Ok(None) };
        let session = entry.session.clone();
        state.kill_family(session.family, session.user);
        Ok(Some(session))
    }

    async fn revoke_all(
        &self,
        user: UserId,
        now: DateTime<Utc>,
        _keep_stamp_for: Duration,
    ) -> Result<u64> {
        let mut state = self.lock();
        let stamp = state.not_before.entry(user).or_insert(now);
        *stamp = (*stamp).max(now);
        let hashes = state.users.remove(&user).unwrap_or_default();
        let mut deleted = 0;
        for hash in hashes {
            if let Some(entry) = state.sessions.remove(&hash) {
                state.families.remove(&entry.session.family);
                deleted += 1;
            }
        }
        Ok(deleted)
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
        Ok(Attempts { count: slot.0, retry_after: slot.1 - now })
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
