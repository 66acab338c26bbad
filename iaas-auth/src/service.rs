//! The account and session flows: register, login, refresh, logout, logout-all, password
//! change and session listing, over the ports ([`UserRepository`], [`SessionStore`],
//! [`Clock`]).
//!
//! Refresh tokens are 32 random bytes (base64url) at login. Each refresh rotates to a successor
//! derived as `base64url(HMAC-SHA256(refresh_secret, presented))`, so two racing refreshes of
//! the same token compute the same successor and the store can hand it out twice within the
//! grace window without ever storing a token in clear (see [`crate::session`]).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use iaas_core::{Clock, User, UserId, UserRepository};
use serde::Serialize;
use sha2::Sha256;
use uuid::Uuid;

use crate::error::{AuthError, RefreshRejection, Result};
use crate::hashing::{HashingLimits, HashingSlots};
use crate::password::Scratch;
use crate::password::{PasswordConfig, PasswordHasher, fill_random};
use crate::session::{Rotate, Rotation, Session, SessionStore, TokenHash};
use crate::throttle::{self, ThrottleConfig};
use crate::token::{KeySet, TokenConfig, TokenIssuer};
use crate::user_cache::{CachedUser, Lookup, UserCache, UserCacheConfig};
use crate::username::Username;

/// Random bytes in a refresh token.
const REFRESH_TOKEN_BYTES: usize = 32;
/// Length of a refresh token in base64url without padding.
const REFRESH_TOKEN_CHARS: usize = 43;
/// Shortest accepted refresh-derivation secret.
pub const MIN_REFRESH_SECRET_BYTES: usize = 32;

/// Lifetimes of refresh sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionConfig {
    /// A refresh token unused this long dies (default 7 days).
    pub idle_timeout: Duration,
    /// A family (one login) dies this long after the login, however active (default 30 days).
    pub absolute_lifetime: Duration,
    /// How long after a rotation the same token may be presented again and get the same
    /// successor instead of revoking the family (default 5 seconds).
    pub reuse_grace: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::days(7),
            absolute_lifetime: Duration::days(30),
            reuse_grace: Duration::seconds(5),
        }
    }
}

/// Everything configurable in the auth flows.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct AuthConfig {
    /// Access tokens.
    pub tokens: TokenConfig,
    /// Hashing cost and password policy.
    pub passwords: PasswordConfig,
    /// Refresh sessions.
    pub sessions: SessionConfig,
    /// Throttling of password checks and registrations.
    pub throttle: ThrottleConfig,
    /// Reverse proxies whose `X-Forwarded-For` is believed for the client address (default
    /// none: behind a proxy every client would otherwise share the proxy's address).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Scopes given to newly registered users.
    pub default_scopes: Vec<String>,
    /// The refresh path's cache of users by id (see [`UserCacheConfig::ttl`] for the security
    /// bound it implies).
    pub user_cache: UserCacheConfig,
}

/// What login and refresh return to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenPair {
    /// The access token (JWT).
    pub access_token: String,
    /// Always `"Bearer"`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// The refresh token; keep it secret, use it once.
    pub refresh_token: String,
    /// When the refresh session ends at the latest.
    pub refresh_expires_at: DateTime<Utc>,
}

/// The auth flows. Cloning is one reference-count increment (axum clones the state for every
/// request).
#[derive(Clone)]
pub struct AuthService {
    inner: Arc<Inner>,
}

struct Inner {
    users: Arc<dyn UserRepository>,
    sessions: Arc<dyn SessionStore>,
    issuer: TokenIssuer,
    hasher: Arc<PasswordHasher>,
    /// Bounds how many hashes run at once and wait.
    hashing: HashingSlots,
    clock: Arc<dyn Clock>,
    config: AuthConfig,
    /// HMAC-SHA256 keyed with the refresh secret once; cloned per derivation.
    refresh_mac: Hmac<Sha256>,
    /// Users by id for refresh only (login and password change read the store).
    user_cache: UserCache,
}

impl std::fmt::Debug for AuthService {
    /// Secrets and backends are left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl AuthService {
    /// Assembles the service. `refresh_secret` (at least 32 bytes, kept like a signing key)
    /// derives successor refresh tokens; every instance must share it.
    pub fn new(
        users: Arc<dyn UserRepository>,
        sessions: Arc<dyn SessionStore>,
        keys: KeySet,
        refresh_secret: &[u8],
        clock: Arc<dyn Clock>,
        config: AuthConfig,
    ) -> Result<Self> {
        if refresh_secret.len() < MIN_REFRESH_SECRET_BYTES {
            return Err(AuthError::Config {
                reason: format!(
                    "refresh secret has {} bytes, at least {MIN_REFRESH_SECRET_BYTES} required",
                    refresh_secret.len()
                ),
            });
        }
        let hasher = Arc::new(PasswordHasher::new(config.passwords.clone())?);
        let hashing = HashingSlots::new(HashingLimits::sized_for(
            config.passwords.memory_kib,
            config.passwords.max_concurrent_hashes,
        ))?;
        let issuer = TokenIssuer::new(keys, config.tokens.clone(), clock.clone());
        let refresh_mac = Hmac::<Sha256>::new_from_slice(refresh_secret)
            .map_err(|err| AuthError::Config { reason: format!("refresh secret: {err}") })?;
        let user_cache = UserCache::new(config.user_cache.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                users,
                sessions,
                issuer,
                hasher,
                hashing,
                clock,
                config,
                refresh_mac,
                user_cache,
            }),
        })
    }

    /// The token issuer (to verify access tokens, rotate keys or publish the JWKS).
    pub fn issuer(&self) -> &TokenIssuer {
        &self.inner.issuer
    }

    /// The configuration in use.
    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    /// Whether logins are still live, from this service's session store (for live
    /// connections that must end with their login).
    pub fn liveness(&self) -> crate::session::StoreLiveness {
        crate::session::StoreLiveness::new(self.inner.sessions.clone(), self.inner.clock.clone())
    }

    /// How many password hashes run at once and wait (sized at start).
    pub fn hashing_limits(&self) -> HashingLimits {
        self.inner.hashing.limits()
    }

    /// Creates an account with the default scopes, for the platform itself (a first-run
    /// account, a script): not throttled. Requests from clients go through
    /// [`AuthService::register_from`].
    pub async fn register(&self, username: &str, password: &str) -> Result<User> {
        let username = Username::parse(username)?;
        self.inner.hasher.check_policy(password, username.as_str())?;
        let hash = self.hash_blocking(password).await?;
        let now = self.inner.clock.now();
        let user = User {
            id: UserId::new_random(),
            username: username.as_str().to_owned(),
            password_hash: hash,
            scopes: self.inner.config.default_scopes.clone(),
            created_at: now,
            password_changed_at: now,
        };
        self.inner
            .users
            .create_user(&user)
            .await
            .map_err(|err| AuthError::from_port(&format!("registering {username}"), err))?;
        self.inner.user_cache.invalidate(user.id);
        tracing::info!(user_id = %user.id, %username, "account registered");
        Ok(user)
    }

    /// Creates an account for a request from `client` (its address): refused with
    /// [`AuthError::Throttled`] past the registrations one address may make in a window.
    pub async fn register_from(
        &self,
        username: &str,
        password: &str,
        client: &str,
    ) -> Result<User> {
        let now = self.inner.clock.now();
        let store = self.inner.sessions.as_ref();
        if let Err(err) =
            throttle::count_registration(store, &self.inner.config.throttle, client, now).await
        {
            metrics::counter!("iaas_auth_registrations_total", "outcome" => "throttled")
                .increment(1);
            return Err(err);
        }
        let registered = self.register(username, password).await;
        let outcome = if registered.is_ok() { "success" } else { "failure" };
        metrics::counter!("iaas_auth_registrations_total", "outcome" => outcome).increment(1);
        registered
    }

    /// Checks the password and starts a session family. `client` is the caller's address, for
    /// throttling and the session list.
    pub async fn login(&self, username: &str, password: &str, client: &str) -> Result<TokenPair> {
        let username = Username::parse(username)?;
        let store = self.inner.sessions.as_ref();
        let throttle = &self.inner.config.throttle;
        let now = self.inner.clock.now();
        if let Err(err) = throttle::check(store, throttle, username.as_str(), client, now).await {
            metrics::counter!("iaas_auth_logins_total", "outcome" => "throttled").increment(1);
            return Err(err);
        }
        let user = self
            .inner
            .users
            .find_user_by_username(username.as_str())
            .await
            .map_err(|err| AuthError::from_port(&format!("looking up {username}"), err))?;
        let verified = match &user {
            Some(user) => self.verify_blocking(password, &user.password_hash).await?,
            None => {
                self.verify_dummy_blocking(password).await?;
                false
            }
        };
        let Some(user) = user.filter(|_| verified) else {
            throttle::record_failure(store, throttle, username.as_str(), client, now).await?;
            metrics::counter!("iaas_auth_logins_total", "outcome" => "failure").increment(1);
            return Err(AuthError::InvalidCredentials);
        };
        throttle::clear(store, username.as_str(), client).await?;

        let refresh_token = random_refresh_token()?;
        let now = self.inner.clock.now();
        let session = Session {
            user: user.id,
            family: Uuid::new_v4(),
            created_at: now,
            family_created_at: now,
            expires_at: now + self.inner.config.sessions.absolute_lifetime,
            client: client.to_owned(),
        };
        store
            .create(
                &TokenHash::of(&refresh_token),
                &session,
                self.inner.config.sessions.idle_timeout,
            )
            .await?;
        metrics::counter!("iaas_auth_logins_total", "outcome" => "success").increment(1);
        tracing::info!(user_id = %user.id, family = %session.family, "login");
        self.pair(&user.id, &user.scopes, session.family, refresh_token, session.expires_at)
    }

    /// Rotates `refresh_token` and returns a new pair.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair> {
        if !looks_like_refresh_token(refresh_token) {
            return Err(AuthError::InvalidRefresh(RefreshRejection::Unknown));
        }
        let successor = self.successor_of(refresh_token)?;
        let presented_hash = TokenHash::of(refresh_token);
        let successor_hash = TokenHash::of(&successor);
        let rotation = self
            .inner
            .sessions
            .rotate(Rotate {
                presented: &presented_hash,
                successor: &successor_hash,
                now: self.inner.clock.now(),
                idle_timeout: self.inner.config.sessions.idle_timeout,
                reuse_grace: self.inner.config.sessions.reuse_grace,
            })
            .await?;
        let outcome = match &rotation {
            Rotation::Rotated(_) => "rotated",
            Rotation::Repeated(_) => "repeated",
            Rotation::Reused { .. } => "reused",
            Rotation::Unknown => "unknown",
            Rotation::Expired => "expired",
            Rotation::Revoked => "revoked",
        };
        metrics::counter!("iaas_auth_refreshes_total", "outcome" => outcome).increment(1);
        let session = match rotation {
            Rotation::Rotated(session) | Rotation::Repeated(session) => session,
            Rotation::Reused { user, family } => {
                metrics::counter!("iaas_auth_refresh_reuse_total").increment(1);
                tracing::warn!(
                    user_id = %user, %family, security_event = "refresh_token_reuse",
                    "a rotated refresh token was presented again: its family is revoked"
                );
                return Err(AuthError::InvalidRefresh(RefreshRejection::Reused));
            }
            Rotation::Unknown => return Err(AuthError::InvalidRefresh(RefreshRejection::Unknown)),
            Rotation::Expired => return Err(AuthError::InvalidRefresh(RefreshRejection::Expired)),
            Rotation::Revoked => return Err(AuthError::InvalidRefresh(RefreshRejection::Revoked)),
        };
        let Some(user) = self.user_for_refresh(session.user).await? else {
            // The account is gone: its sessions must not outlive it.
            self.inner.sessions.revoke_family(&successor_hash).await?;
            return Err(AuthError::InvalidRefresh(RefreshRejection::Revoked));
        };
        self.pair(&session.user, &user.scopes, session.family, successor, session.expires_at)
    }

    /// The scopes of `id` for a refresh, through the user cache; `None` when the account is
    /// gone (never cached, so it is asked again next time).
    async fn user_for_refresh(&self, id: UserId) -> Result<Option<CachedUser>> {
        let ticket = match self.inner.user_cache.get(id, self.inner.clock.now()) {
            Lookup::Hit(user) => return Ok(Some(user)),
            Lookup::Miss(ticket) => Some(ticket),
            Lookup::Disabled => None,
        };
        let user = self
            .inner
            .users
            .get_user(id)
            .await
            .map_err(|err| AuthError::from_port(&format!("reading user {id}"), err))?;
        let Some(user) = user else { return Ok(None) };
        let cached = CachedUser { scopes: Arc::from(user.scopes) };
        if let Some(ticket) = ticket {
            self.inner.user_cache.insert(id, cached.clone(), ticket, self.inner.clock.now());
        }
        Ok(Some(cached))
    }

    /// Ends the session family of `refresh_token`. Unknown tokens are ignored (logout is
    /// idempotent).
    pub async fn logout(&self, refresh_token: &str) -> Result<()> {
        if !looks_like_refresh_token(refresh_token) {
            return Ok(());
        }
        if let Some(session) =
            self.inner.sessions.revoke_family(&TokenHash::of(refresh_token)).await?
        {
            tracing::info!(user_id = %session.user, family = %session.family, "logout");
        }
        Ok(())
    }

    /// Ends every session of `user`.
    pub async fn logout_all(&self, user: UserId) -> Result<u64> {
        let deleted = self
            .inner
            .sessions
            .revoke_all(user, self.inner.clock.now(), self.inner.config.sessions.absolute_lifetime)
            .await?;
        tracing::info!(user_id = %user, deleted, "every session revoked");
        Ok(deleted)
    }

    /// Changes the password after checking the current one, then ends every session of the
    /// user (sessions must not survive a password change). The check shares the login
    /// throttle: `client` is the caller's address, and a stolen access token is no way to
    /// guess the password faster than a login would.
    pub async fn change_password(
        &self,
        user: UserId,
        current: &str,
        new: &str,
        client: &str,
    ) -> Result<()> {
        let stored = self
            .inner
            .users
            .get_user(user)
            .await
            .map_err(|err| AuthError::from_port(&format!("reading user {user}"), err))?
            .ok_or(AuthError::InvalidCredentials)?;
        let store = self.inner.sessions.as_ref();
        let throttle = &self.inner.config.throttle;
        let now = self.inner.clock.now();
        throttle::check(store, throttle, &stored.username, client, now).await?;
        if !self.verify_blocking(current, &stored.password_hash).await? {
            throttle::record_failure(store, throttle, &stored.username, client, now).await?;
            return Err(AuthError::InvalidCredentials);
        }
        throttle::clear(store, &stored.username, client).await?;
        self.inner.hasher.check_policy(new, &stored.username)?;
        let hash = self.hash_blocking(new).await?;
        self.inner
            .users
            .set_password_hash(user, &hash, self.inner.clock.now())
            .await
            .map_err(|err| AuthError::from_port(&format!("storing the password of {user}"), err))?;
        self.inner.user_cache.invalidate(user);
        self.logout_all(user).await?;
        tracing::info!(user_id = %user, "password changed");
        Ok(())
    }

    /// Ends the one session family `family` of `user` (a login the user no longer trusts);
    /// [`AuthError::SessionNotFound`] when `user` has no such family, whoever else may.
    pub async fn revoke_session(&self, user: UserId, family: Uuid) -> Result<()> {
        if !self.inner.sessions.revoke_session(user, family).await? {
            return Err(AuthError::SessionNotFound);
        }
        tracing::info!(user_id = %user, %family, "session revoked");
        Ok(())
    }

    /// The live sessions of `user`, oldest login first.
    pub async fn list_sessions(&self, user: UserId) -> Result<Vec<Session>> {
        self.inner.sessions.list(user, self.inner.clock.now()).await
    }

    /// Derives the successor of a refresh token.
    fn successor_of(&self, token: &str) -> Result<String> {
        let mut mac = self.inner.refresh_mac.clone();
        mac.update(token.as_bytes());
        Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    fn pair(
        &self,
        user: &UserId,
        scopes: &[String],
        family: Uuid,
        refresh_token: String,
        refresh_expires_at: DateTime<Utc>,
    ) -> Result<TokenPair> {
        let access = self.inner.issuer.issue_for(*user, scopes, Some(family))?;
        Ok(TokenPair {
            expires_in: (access.expires_at - self.inner.clock.now()).num_seconds(),
            access_token: access.token,
            token_type: "Bearer",
            refresh_token,
            refresh_expires_at,
        })
    }

    // argon2 takes tens of milliseconds of CPU and its memory cost: it runs on the blocking
    // pool, in one of a bounded number of slots (see `hashing`).
    async fn hash_blocking(&self, password: &str) -> Result<String> {
        let (hasher, password) = (self.inner.hasher.clone(), password.to_owned());
        let hash = move |scratch: &mut Scratch| hasher.hash_with(&password, scratch);
        self.inner.hashing.run("hashing a password", hash).await
    }

    async fn verify_blocking(&self, password: &str, phc: &str) -> Result<bool> {
        let (hasher, password, phc) =
            (self.inner.hasher.clone(), password.to_owned(), phc.to_owned());
        let verify = move |scratch: &mut Scratch| hasher.verify_with(&password, &phc, scratch);
        self.inner.hashing.run("verifying a password", verify).await
    }

    async fn verify_dummy_blocking(&self, password: &str) -> Result<()> {
        let (hasher, password) = (self.inner.hasher.clone(), password.to_owned());
        self.inner
            .hashing
            .run("verifying a password", move |scratch: &mut Scratch| {
                hasher.verify_dummy_with(&password, scratch);
                Ok(())
            })
            .await
    }
}

fn random_refresh_token() -> Result<String> {
    let mut bytes = [0u8; REFRESH_TOKEN_BYTES];
    fill_random(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Cheap shape check so garbage never reaches the store.
fn looks_like_refresh_token(token: &str) -> bool {
    token.len() == REFRESH_TOKEN_CHARS
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Attempts, MockSessionStore};
    use crate::token::SigningKey;
    use async_trait::async_trait;
    use iaas_core::ManualClock;
    use mockall::predicate::eq;

    mockall::mock! {
        Users {}
        #[async_trait]
        impl UserRepository for Users {
            async fn create_user(&self, user: &User) -> iaas_core::Result<()>;
            async fn get_user(&self, id: UserId) -> iaas_core::Result<Option<User>>;
            async fn find_user_by_username(&self, username: &str) -> iaas_core::Result<Option<User>>;
            async fn set_password_hash(
                &self,
                id: UserId,
                password_hash: &str,
                at: DateTime<Utc>,
            ) -> iaas_core::Result<()>;
            async fn set_scopes(&self, id: UserId, scopes: &[String]) -> iaas_core::Result<()>;
        }
    }

    const PASSWORD: &str = "correct horse battery";

    fn config() -> AuthConfig {
        AuthConfig { passwords: PasswordConfig::insecure_fast_for_tests(), ..AuthConfig::default() }
    }

    fn service(users: MockUsers, sessions: MockSessionStore) -> AuthService {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        AuthService::new(
            Arc::new(users),
            Arc::new(sessions),
            KeySet::new(SigningKey::ed25519_from_seed("k1", &[3; 32]).unwrap()),
            &[9; 32],
            clock,
            config(),
        )
        .unwrap()
    }

    fn ada() -> User {
        let hasher = PasswordHasher::new(PasswordConfig::insecure_fast_for_tests()).unwrap();
        User {
            id: UserId::new_random(),
            username: "ada".into(),
            password_hash: hasher.hash(PASSWORD).unwrap(),
            scopes: vec!["instances:read".into()],
            created_at: Utc::now(),
            password_changed_at: Utc::now(),
        }
    }

    fn no_failures(sessions: &mut MockSessionStore) {
        sessions
            .expect_failures()
            .returning(|_, _| Ok(Attempts { count: 0, retry_after: Duration::zero() }));
    }

    #[tokio::test]
    async fn a_throttled_login_never_looks_at_the_account() {
        let mut users = MockUsers::new();
        users.expect_find_user_by_username().never();
        let mut sessions = MockSessionStore::new();
        sessions
            .expect_failures()
            .with(eq("login:hold:ada:10.0.0.1"), mockall::predicate::always())
            .returning(|_, _| Ok(Attempts { count: 1, retry_after: Duration::seconds(90) }));
        let err = service(users, sessions).login("ada", PASSWORD, "10.0.0.1").await.unwrap_err();
        assert!(
            matches!(
                err,
                AuthError::Throttled { subject: "username and client", retry_after_secs: 90 }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_unknown_user_is_invalid_credentials_and_counts_a_failure_for_pair_and_client() {
        let mut users = MockUsers::new();
        users.expect_find_user_by_username().returning(|_| Ok(None));
        let mut sessions = MockSessionStore::new();
        no_failures(&mut sessions);
        sessions
            .expect_record_failure()
            .times(2)
            .returning(|_, _, _| Ok(Attempts { count: 1, retry_after: Duration::minutes(15) }));
        sessions.expect_create().never();
        let err = service(users, sessions).login("nobody", PASSWORD, "10.0.0.1").await.unwrap_err();
        assert!(matches!(err, AuthError::InvalidCredentials), "{err}");
    }

    #[tokio::test]
    async fn a_good_login_clears_the_pairs_counters_and_stores_only_a_hash() {
        let user = ada();
        let mut users = MockUsers::new();
        let found = user.clone();
        users.expect_find_user_by_username().returning(move |_| Ok(Some(found.clone())));
        let mut sessions = MockSessionStore::new();
        no_failures(&mut sessions);
        for key in ["login:pair:ada:10.0.0.1", "login:hold:ada:10.0.0.1"] {
            sessions.expect_clear_failures().with(eq(key)).times(1).returning(|_| Ok(()));
        }
        let stored = Arc::new(std::sync::Mutex::new(None));
        let seen = stored.clone();
        sessions.expect_create().times(1).returning(move |hash, session, idle| {
            assert_eq!(idle, Duration::days(7));
            *seen.lock().unwrap() = Some((hash.clone(), session.clone()));
            Ok(())
        });
        let auth = service(users, sessions);
        let pair = auth.login("Ada", PASSWORD, "10.0.0.1").await.unwrap();
        let (hash, session) = stored.lock().unwrap().clone().unwrap();
        assert_eq!(hash, TokenHash::of(&pair.refresh_token));
        assert_eq!((session.user, session.client.as_str()), (user.id, "10.0.0.1"));
        assert_eq!(auth.issuer().verify(&pair.access_token).unwrap().user, user.id);
        assert_eq!(pair.expires_in, 900);
    }

    #[tokio::test]
    async fn reuse_reported_by_the_store_is_refused_as_reuse() {
        let mut users = MockUsers::new();
        users.expect_get_user().never();
        let mut sessions = MockSessionStore::new();
        sessions.expect_rotate().times(1).returning(|_| {
            Ok(Rotation::Reused { user: UserId::new_random(), family: Uuid::new_v4() })
        });
        let err = service(users, sessions).refresh(&"A".repeat(43)).await.unwrap_err();
        assert_eq!(err.code(), "refresh_token_reused");
    }

    #[tokio::test]
    async fn the_successor_is_derived_from_the_presented_token() {
        let mut sessions = MockSessionStore::new();
        let presented = "B".repeat(43);
        let expected = TokenHash::of(&presented);
        sessions.expect_rotate().times(2).returning(move |request| {
            assert_eq!(request.presented, &expected);
            Ok(Rotation::Unknown)
        });
        let auth = service(MockUsers::new(), sessions);
        assert!(auth.refresh(&presented).await.is_err());
        let first = auth.successor_of(&presented).unwrap();
        assert_eq!(first, auth.successor_of(&presented).unwrap(), "deterministic");
        assert_ne!(first, auth.successor_of(&"C".repeat(43)).unwrap());
        assert_eq!(first.len(), 43);
        assert!(auth.refresh(&presented).await.is_err());
    }

    #[tokio::test]
    async fn a_malformed_refresh_token_never_reaches_the_store() {
        let mut sessions = MockSessionStore::new();
        sessions.expect_rotate().never();
        sessions.expect_revoke_family().never();
        let auth = service(MockUsers::new(), sessions);
        for bad in ["", "short", &"A".repeat(44), &format!("{}!", "A".repeat(42))] {
            let err = auth.refresh(bad).await.unwrap_err();
            assert_eq!(err.code(), "refresh_token_invalid", "{bad:?}");
            auth.logout(bad).await.unwrap();
        }
    }

    #[tokio::test]
    async fn an_unavailable_store_is_reported_as_unavailable() {
        let mut sessions = MockSessionStore::new();
        sessions.expect_rotate().returning(|_| {
            Err(AuthError::unavailable("redis", "rotating a refresh token", "connection refused"))
        });
        let err = service(MockUsers::new(), sessions).refresh(&"A".repeat(43)).await.unwrap_err();
        assert_eq!(err.code(), "unavailable");
    }

    #[tokio::test]
    async fn a_password_change_stores_the_new_hash_then_revokes_every_session() {
        let user = ada();
        let id = user.id;
        let mut users = MockUsers::new();
        users.expect_get_user().with(eq(id)).returning(move |_| Ok(Some(user.clone())));
        users.expect_set_password_hash().times(1).returning(|_, hash, _| {
            assert!(hash.starts_with("$argon2id$"));
            Ok(())
        });
        let mut sessions = MockSessionStore::new();
        no_failures(&mut sessions);
        sessions.expect_clear_failures().times(2).returning(|_| Ok(()));
        sessions
            .expect_revoke_all()
            .withf(move |u, _, keep| *u == id && *keep == Duration::days(30))
            .times(1)
            .returning(|_, _, _| Ok(3));
        service(users, sessions)
            .change_password(id, PASSWORD, "a brand new passphrase", "127.0.0.1")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_wrong_current_password_changes_nothing() {
        let user = ada();
        let id = user.id;
        let mut users = MockUsers::new();
        users.expect_get_user().returning(move |_| Ok(Some(user.clone())));
        users.expect_set_password_hash().never();
        let mut sessions = MockSessionStore::new();
        no_failures(&mut sessions);
        sessions
            .expect_record_failure()
            .times(2)
            .returning(|_, _, _| Ok(Attempts { count: 1, retry_after: Duration::minutes(15) }));
        sessions.expect_revoke_all().never();
        let err = service(users, sessions)
            .change_password(id, "not the password", "a brand new passphrase", "127.0.0.1")
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::InvalidCredentials), "{err}");
    }

    #[tokio::test]
    async fn a_taken_username_is_a_conflict() {
        let mut users = MockUsers::new();
        users.expect_create_user().returning(|u| {
            Err(iaas_core::Error::conflict("user", &u.username, "username is taken"))
        });
        let err =
            service(users, MockSessionStore::new()).register("Ada", PASSWORD).await.unwrap_err();
        assert!(
            matches!(&err, AuthError::UsernameTaken { username } if username == "ada"),
            "{err}"
        );
    }

    fn session_of(user: UserId) -> Session {
        let now = Utc::now();
        Session {
            user,
            family: Uuid::new_v4(),
            created_at: now,
            family_created_at: now,
            expires_at: now + Duration::days(30),
            client: "10.0.0.1".into(),
        }
    }

    /// A store that rotates every token into a live session of `user`.
    fn rotating_for(user: UserId) -> MockSessionStore {
        let mut sessions = MockSessionStore::new();
        sessions.expect_rotate().returning(move |_| Ok(Rotation::Rotated(session_of(user))));
        sessions
    }

    fn service_with_clock(
        users: MockUsers,
        sessions: MockSessionStore,
        clock: Arc<ManualClock>,
        config: AuthConfig,
    ) -> AuthService {
        AuthService::new(
            Arc::new(users),
            Arc::new(sessions),
            KeySet::new(SigningKey::ed25519_from_seed("k1", &[3; 32]).unwrap()),
            &[9; 32],
            clock,
            config,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn refreshes_within_the_user_cache_ttl_read_the_user_once() {
        let user = ada();
        let id = user.id;
        let mut users = MockUsers::new();
        users.expect_get_user().with(eq(id)).times(2).returning(move |_| Ok(Some(user.clone())));
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let auth = service_with_clock(users, rotating_for(id), clock.clone(), config());
        for token in ["A", "B", "C"] {
            let pair = auth.refresh(&token.repeat(43)).await.unwrap();
            let claims = auth.issuer().verify(&pair.access_token).unwrap();
            assert_eq!((claims.user, claims.scopes.clone()), (id, vec!["instances:read".into()]));
        }
        // Past the TTL the store is read again (the second and last expected read).
        clock.advance(UserCacheConfig::DEFAULT_TTL);
        auth.refresh(&"D".repeat(43)).await.unwrap();
    }

    #[tokio::test]
    async fn a_zero_user_cache_ttl_reads_the_user_on_every_refresh() {
        let user = ada();
        let id = user.id;
        let mut users = MockUsers::new();
        users.expect_get_user().times(3).returning(move |_| Ok(Some(user.clone())));
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let config = AuthConfig { user_cache: UserCacheConfig::disabled(), ..config() };
        let auth = service_with_clock(users, rotating_for(id), clock, config);
        for token in ["A", "B", "C"] {
            auth.refresh(&token.repeat(43)).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_missing_user_is_not_cached_and_each_refresh_revokes_its_family() {
        let id = UserId::new_random();
        let mut users = MockUsers::new();
        users.expect_get_user().times(2).returning(|_| Ok(None));
        let mut sessions = rotating_for(id);
        sessions.expect_revoke_family().times(2).returning(|_| Ok(None));
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let auth = service_with_clock(users, sessions, clock, config());
        for token in ["A", "B"] {
            let err = auth.refresh(&token.repeat(43)).await.unwrap_err();
            assert!(matches!(err, AuthError::InvalidRefresh(RefreshRejection::Revoked)), "{err}");
        }
    }

    #[tokio::test]
    async fn a_password_change_drops_the_cached_user() {
        let user = ada();
        let id = user.id;
        let mut users = MockUsers::new();
        // One read for the first refresh, one for the password check, one for the refresh after
        // the change: the cached entry was dropped although the TTL has not passed.
        users.expect_get_user().times(3).returning(move |_| Ok(Some(user.clone())));
        users.expect_set_password_hash().times(1).returning(|_, _, _| Ok(()));
        let mut sessions = rotating_for(id);
        no_failures(&mut sessions);
        sessions.expect_clear_failures().times(2).returning(|_| Ok(()));
        sessions.expect_revoke_all().times(1).returning(|_, _, _| Ok(1));
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let auth = service_with_clock(users, sessions, clock, config());
        auth.refresh(&"A".repeat(43)).await.unwrap();
        auth.change_password(id, PASSWORD, "a brand new passphrase", "127.0.0.1").await.unwrap();
        auth.refresh(&"B".repeat(43)).await.unwrap();
    }

    #[tokio::test]
    async fn login_always_reads_the_store() {
        let user = ada();
        let mut users = MockUsers::new();
        users.expect_find_user_by_username().times(2).returning(move |_| Ok(Some(user.clone())));
        let mut sessions = MockSessionStore::new();
        no_failures(&mut sessions);
        sessions.expect_clear_failures().returning(|_| Ok(()));
        sessions.expect_create().times(2).returning(|_, _, _| Ok(()));
        let auth = service(users, sessions);
        auth.login("ada", PASSWORD, "10.0.0.1").await.unwrap();
        auth.login("ada", PASSWORD, "10.0.0.1").await.unwrap();
    }

    #[test]
    fn a_short_refresh_secret_is_refused() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let err = AuthService::new(
            Arc::new(MockUsers::new()),
            Arc::new(MockSessionStore::new()),
            KeySet::new(SigningKey::ed25519_from_seed("k1", &[3; 32]).unwrap()),
            &[9; 16],
            clock,
            config(),
        )
        .unwrap_err();
        assert!(matches!(err, AuthError::Config { .. }), "{err}");
    }
}
