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
use crate::password::{PasswordConfig, PasswordHasher, fill_random};
use crate::session::{Rotate, Rotation, Session, SessionStore, TokenHash};
use crate::throttle::{self, ThrottleConfig};
use crate::token::{KeySet, TokenConfig, TokenIssuer};
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
    /// A refresh token unused this long dies (default 7 days, the seed's TTL).
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
    /// Login throttling.
    pub throttle: ThrottleConfig,
    /// Scopes given to newly registered users.
    pub default_scopes: Vec<String>,
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

/// The auth flows.
#[derive(Clone)]
pub struct AuthService {
    users: Arc<dyn UserRepository>,
    sessions: Arc<dyn SessionStore>,
    issuer: TokenIssuer,
    hasher: Arc<PasswordHasher>,
    clock: Arc<dyn Clock>,
    config: AuthConfig,
    refresh_secret: Arc<[u8]>,
}

impl std::fmt::Debug for AuthService {
    /// Secrets and backends are left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService").field("config", &self.config).finish_non_exhaustive()
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
        let issuer = TokenIssuer::new(keys, config.tokens.clone(), clock.clone());
        Ok(Self {
            users,
            sessions,
            issuer,
            hasher,
            clock,
            config,
            refresh_secret: Arc::from(refresh_secret),
        })
    }

    /// The token issuer (to verify access tokens, rotate keys or publish the JWKS).
    pub fn issuer(&self) -> &TokenIssuer {
        &self.issuer
    }

    /// The configuration in use.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Creates an account with the default scopes.
    pub async fn register(&self, username: &str, password: &str) -> Result<User> {
        let username = Username::parse(username)?;
        self.hasher.check_policy(password, username.as_str())?;
        let hash = self.hash_blocking(password).await?;
        let now = self.clock.now();
        let user = User {
            id: UserId::new_random(),
            username: username.as_str().to_owned(),
            password_hash: hash,
            scopes: self.config.default_scopes.clone(),
            created_at: now,
            password_changed_at: now,
        };
        self.users
            .create_user(&user)
            .await
            .map_err(|err| AuthError::from_port(&format!("registering {username}"), err))?;
        tracing::info!(user_id = %user.id, %username, "account registered");
        Ok(user)
    }

    /// Checks the password and starts a session family. `client` is the caller's address, for
    /// throttling and the session list.
    pub async fn login(&self, username: &str, password: &str, client: &str) -> Result<TokenPair> {
        let username = Username::parse(username)?;
        let store = self.sessions.as_ref();
        let throttle = &self.config.throttle;
        let now = self.clock.now();
        if let Err(err) = throttle::check(store, throttle, username.as_str(), client, now).await {
            metrics::counter!("iaas_auth_logins_total", "outcome" => "throttled").increment(1);
            return Err(err);
        }
        let user = self
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
        throttle::clear(store, username.as_str()).await?;

        let refresh_token = random_refresh_token()?;
        let now = self.clock.now();
        let session = Session {
            user: user.id,
            family: Uuid::new_v4(),
            created_at: now,
            family_created_at: now,
            expires_at: now + self.config.sessions.absolute_lifetime,
            client: client.to_owned(),
        };
        store
            .create(&TokenHash::of(&refresh_token), &session, self.config.sessions.idle_timeout)
            .await?;
        metrics::counter!("iaas_auth_logins_total", "outcome" => "success").increment(1);
        tracing::info!(user_id = %user.id, family = %session.family, "login");
        self.pair(&user.id, &user.scopes, refresh_token, session.expires_at)
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
            .sessions
            .rotate(Rotate {
                presented: &presented_hash,
                successor: &successor_hash,
                now: self.clock.now(),
                idle_timeout: self.config.sessions.idle_timeout,
                reuse_grace: self.config.sessions.reuse_grace,
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
        let user =
            self.users.get_user(session.user).await.map_err(|err| {
                AuthError::from_port(&format!("reading user {}", session.user), err)
            })?;
        let Some(user) = user else {
            // The account is gone: its sessions must not outlive it.
            self.sessions.revoke_family(&successor_hash).await?;
            return Err(AuthError::InvalidRefresh(RefreshRejection::Revoked));
        };
        self.pair(&user.id, &user.scopes, successor, session.expires_at)
    }

    /// Ends the session family of `refresh_token`. Unknown tokens are ignored (logout is
    /// idempotent).
    pub async fn logout(&self, refresh_token: &str) -> Result<()> {
        if !looks_like_refresh_token(refresh_token) {
            return Ok(());
        }
        if let Some(session) = self.sessions.revoke_family(&TokenHash::of(refresh_token)).await? {
            tracing::info!(user_id = %session.user, family = %session.family, "logout");
        }
        Ok(())
    }

    /// Ends every session of `user`.
    pub async fn logout_all(&self, user: UserId) -> Result<u64> {
        let deleted = self
            .sessions
            .revoke_all(user, self.clock.now(), self.config.sessions.absolute_lifetime)
            .await?;
        tracing::info!(user_id = %user, deleted, "every session revoked");
        Ok(deleted)
    }

    /// Changes the password after checking the current one, then ends every session of the
    /// user (the seed's defect 1: sessions must not survive a password change).
    pub async fn change_password(&self, user: UserId, current: &str, new: &str) -> Result<()> {
        let stored = self
            .users
            .get_user(user)
            .await
            .map_err(|err| AuthError::from_port(&format!("reading user {user}"), err))?
            .ok_or(AuthError::InvalidCredentials)?;
        if !self.verify_blocking(current, &stored.password_hash).await? {
            return Err(AuthError::InvalidCredentials);
        }
        self.hasher.check_policy(new, &stored.username)?;
        let hash = self.hash_blocking(new).await?;
        self.users
            .set_password_hash(user, &hash, self.clock.now())
            .await
            .map_err(|err| AuthError::from_port(&format!("storing the password of {user}"), err))?;
        self.logout_all(user).await?;
        tracing::info!(user_id = %user, "password changed");
        Ok(())
    }

    /// The live sessions of `user`, oldest login first.
    pub async fn list_sessions(&self, user: UserId) -> Result<Vec<Session>> {
        self.sessions.list(user, self.clock.now()).await
    }

    /// Derives the successor of a refresh token.
    fn successor_of(&self, token: &str) -> Result<String> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.refresh_secret)
            .map_err(|err| AuthError::internal("keying the refresh HMAC", err.to_string()))?;
        mac.update(token.as_bytes());
        Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    fn pair(
        &self,
        user: &UserId,
        scopes: &[String],
        refresh_token: String,
        refresh_expires_at: DateTime<Utc>,
    ) -> Result<TokenPair> {
        let access = self.issuer.issue(*user, scopes)?;
        Ok(TokenPair {
            expires_in: (access.expires_at - self.clock.now()).num_seconds(),
            access_token: access.token,
            token_type: "Bearer",
            refresh_token,
            refresh_expires_at,
        })
    }

    // argon2 takes tens of milliseconds of CPU: it runs on the blocking pool so it does not
    // stall the async workers.
    async fn hash_blocking(&self, password: &str) -> Result<String> {
        let (hasher, password) = (self.hasher.clone(), password.to_owned());
        tokio::task::spawn_blocking(move || hasher.hash(&password))
            .await
            .map_err(|err| AuthError::internal("hashing a password", err))?
    }

    async fn verify_blocking(&self, password: &str, phc: &str) -> Result<bool> {
        let (hasher, password, phc) = (self.hasher.clone(), password.to_owned(), phc.to_owned());
        tokio::task::spawn_blocking(move || hasher.verify(&password, &phc))
            .await
            .map_err(|err| AuthError::internal("verifying a password", err))?
    }

    async fn verify_dummy_blocking(&self, password: &str) -> Result<()> {
        let (hasher, password) = (self.hasher.clone(), password.to_owned());
        tokio::task::spawn_blocking(move || hasher.verify_dummy(&password))
            .await
            .map_err(|err| AuthError::internal("verifying a password", err))
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
            .with(eq("login:user:ada"), mockall::predicate::always())
            .returning(|_, _| Ok(Attempts { count: 5, retry_after: Duration::seconds(90) }));
        let err = service(users, sessions).login("ada", PASSWORD, "10.0.0.1").await.unwrap_err();
        assert!(
            matches!(err, AuthError::Throttled { subject: "username", retry_after_secs: 90 }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_unknown_user_is_invalid_credentials_and_counts_a_failure_twice() {
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
    async fn a_good_login_clears_the_username_counter_and_stores_only_a_hash() {
        let user = ada();
        let mut users = MockUsers::new();
        let found = user.clone();
        users.expect_find_user_by_username().returning(move |_| Ok(Some(found.clone())));
        let mut sessions = MockSessionStore::new();
        no_failures(&mut sessions);
        sessions.expect_clear_failures().with(eq("login:user:ada")).times(1).returning(|_| Ok(()));
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
        sessions
            .expect_revoke_all()
            .withf(move |u, _, keep| *u == id && *keep == Duration::days(30))
            .times(1)
            .returning(|_, _, _| Ok(3));
        service(users, sessions)
            .change_password(id, PASSWORD, "a brand new passphrase")
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
        sessions.expect_revoke_all().never();
        let err = service(users, sessions)
            .change_password(id, "not the password", "a brand new passphrase")
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
