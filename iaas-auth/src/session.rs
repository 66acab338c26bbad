//! Refresh sessions: the [`SessionStore`] port and what it stores.
//!
//! A refresh token is 32 random bytes (base64url) handed to the client once; the store only
//! ever sees its SHA-256 ([`TokenHash`]), so a copy of the store cannot be replayed.
//!
//! **Families.** Login starts a family; every refresh *rotates* the token: the presented token
//! is marked as rotated and a successor joins the family. Presenting a rotated token again
//! means two parties hold it (one of them stole it), so the whole family is revoked
//! ([`Rotation::Reused`]). Each family has an absolute lifetime and each token an idle timeout.
//!
//! **Racing clients.** A client that sends two refreshes at once (two tabs, a retry after a
//! timeout) would trip reuse detection. Within a short grace window the store instead answers
//! the second request with the *same* successor ([`Rotation::Repeated`]). This works without
//! keeping any token in clear because the successor is derived deterministically from the
//! presented token: `T' = base64url(HMAC-SHA256(server secret, T))` (see
//! [`AuthService`](crate::AuthService)). Whoever presents `T` again can be given `T'` by
//! recomputing it; whoever does not hold `T` cannot compute it.
//!
//! **Revoke-all.** Logout-all and password change delete every session in the user's index
//! *and* set a per-user "not before" stamp: a family created at or before it is dead even if a
//! concurrent login wrote it after the deletion ran.
//!
//! The store also keeps the login-throttling counters, so they hold across instances when the
//! store is Redis.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use iaas_core::UserId;
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::Result;

pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

/// The SHA-256 of a refresh token, lowercase hex: what the store keys sessions by.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(String);

impl TokenHash {
    /// The hash of `token`.
    pub fn of(token: &str) -> Self {
        Self(hex::encode(Sha256::digest(token.as_bytes())))
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TokenHash {
    /// A prefix is enough to correlate logs and reveals nothing useful.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenHash({}…)", &self.0[..self.0.len().min(8)])
    }
}

/// One live refresh session (one member of a family).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    /// Whose session it is.
    pub user: UserId,
    /// The family (one login) it belongs to.
    pub family: Uuid,
    /// When this member was issued.
    pub created_at: DateTime<Utc>,
    /// When the family started (the login).
    pub family_created_at: DateTime<Utc>,
    /// The family's absolute end: no refresh succeeds after it.
    pub expires_at: DateTime<Utc>,
    /// The client address that logged in.
    pub client: String,
}

/// A rotation request.
#[derive(Debug, Clone)]
pub struct Rotate<'a> {
    /// The hash of the presented token.
    pub presented: &'a TokenHash,
    /// The hash of its (deterministic) successor.
    pub successor: &'a TokenHash,
    /// The current time.
    pub now: DateTime<Utc>,
    /// Idle timeout of the successor.
    pub idle_timeout: Duration,
    /// How long after a rotation the same token may be presented again and get the same
    /// successor (exclusive: zero disables the grace window).
    pub reuse_grace: Duration,
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was rotated; this is the successor's session.
    Rotated(Session),
    /// The token had just been rotated (within the grace window) to the same successor, which
    /// is still live: the caller may hand the successor out again.
    Repeated(Session),
    /// The token had already been rotated outside the grace window: its family is now revoked.
    Reused {
        /// Whose family.
        user: UserId,
        /// The revoked family.
        family: Uuid,
    },
    /// No live session has this token.
    Unknown,
    /// The family passed its absolute lifetime (and is now deleted).
    Expired,
    /// The user revoked every session after this family started (and it is now deleted).
    Revoked,
}

/// A failed-attempt counter in its current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    /// Failures counted in the window.
    pub count: u64,
    /// Time left in the window (zero when there is no window).
    pub retry_after: Duration,
}

/// Where refresh sessions and login-throttling counters live.
///
/// Every method is atomic: a crash or a concurrent call never sees a half-rotated or
/// half-revoked family.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new family's first session under `hash`, expiring after `idle_timeout`
    /// without use.
    async fn create(
        &self,
        hash: &TokenHash,
        session: &Session,
        idle_timeout: Duration,
    ) -> Result<()>;

    /// Rotates the presented token (see [`Rotation`]).
    async fn rotate<'a>(&self, request: Rotate<'a>) -> Result<Rotation>;

    /// Revokes the whole family of `hash` (logout); the revoked session, if there was one.
    async fn revoke_family(&self, hash: &TokenHash) -> Result<Option<Session>>;

    /// Revokes the family `family` if it is `user`'s (ending one login the user no longer
    /// trusts); whether there was such a family. Another user's family is left alone and
    /// answered like a missing one.
    async fn revoke_session(&self, user: UserId, family: Uuid) -> Result<bool>;

    /// Revokes every session of `user` and stamps "not before" = `now`, so sessions of
    /// families started at or before `now` are dead even if written later. `keep_stamp_for`
    /// is how long the stamp must outlive (the absolute family lifetime). Returns how many
    /// sessions were deleted.
    async fn revoke_all(
        &self,
        user: UserId,
        now: DateTime<Utc>,
        keep_stamp_for: Duration,
    ) -> Result<u64>;

    /// Whether `user`'s family `family` still has a live member at `now` and was not revoked
    /// (logout, logout-all, password change, reuse, expiry).
    async fn is_family_live(&self, user: UserId, family: Uuid, now: DateTime<Utc>) -> Result<bool>;

    /// The logins this store ends from now on, told as it ends them (a logout, a revoked
    /// session, a reused token's family, a revoke-all, a family a refresh finds past its
    /// lifetime), where the store can tell them; `None` by default. A login that idles out or
    /// passes its lifetime with nobody refreshing it is not told: asking finds it.
    fn login_news(&self) -> Option<iaas_core::LoginNewsFeed> {
        None
    }

    /// The live, current (not yet rotated) sessions of `user`.
    async fn list(&self, user: UserId, now: DateTime<Utc>) -> Result<Vec<Session>>;

    /// Counts one failure under `key` in a fixed window of `window`.
    async fn record_failure(
        &self,
        key: &str,
        window: Duration,
        now: DateTime<Utc>,
    ) -> Result<Attempts>;

    /// The failures counted under `key` in its current window.
    async fn failures(&self, key: &str, now: DateTime<Utc>) -> Result<Attempts>;

    /// Forgets the failures under `key` (after a successful login).
    async fn clear_failures(&self, key: &str) -> Result<()>;
}

/// [`iaas_core::SessionLiveness`] read straight from a [`SessionStore`]: what the auth service
/// answers, and what a service sharing its Redis (but holding none of its secrets) asks.
#[derive(Clone)]
pub struct StoreLiveness {
    store: std::sync::Arc<dyn SessionStore>,
    clock: std::sync::Arc<dyn iaas_core::Clock>,
}

impl std::fmt::Debug for StoreLiveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreLiveness").finish_non_exhaustive()
    }
}

impl StoreLiveness {
    /// Answers from `store` at `clock`'s time.
    pub fn new(
        store: std::sync::Arc<dyn SessionStore>,
        clock: std::sync::Arc<dyn iaas_core::Clock>,
    ) -> Self {
        Self { store, clock }
    }
}

#[async_trait]
impl iaas_core::SessionLiveness for StoreLiveness {
    async fn is_live(&self, user: UserId, session: Uuid) -> iaas_core::Result<bool> {
        self.store.is_family_live(user, session, self.clock.now()).await.map_err(|err| match err {
            crate::AuthError::Unavailable { backend, operation, source } => {
                iaas_core::Error::unavailable(backend, operation, source)
            }
            other => iaas_core::Error::Internal {
                operation: "checking a session".to_owned(),
                source: Box::new(other),
            },
        })
    }

    fn login_news(&self) -> Option<iaas_core::LoginNewsFeed> {
        self.store.login_news()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hashes_are_sha256_hex_and_debug_hides_most_of_it() {
        let hash = TokenHash::of("abc");
        assert_eq!(
            hash.as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(format!("{hash:?}"), "TokenHash(ba7816bf…)");
    }
}
