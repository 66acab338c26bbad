//! The account and session flows end to end, on the in-process store and on real Redis.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use common::{Store, start_time};
use iaas_auth::{
    AuthConfig, AuthError, AuthService, KeySet, PasswordConfig, RedisSessionConfig,
    RedisSessionStore, RefreshRejection, SessionConfig, SigningKey, UserCacheConfig,
};
use iaas_core::memory::MemoryUserRepository;
use iaas_core::{ManualClock, User, UserId, UserRepository};
use iaas_testkit::isolation::key_prefix;
use iaas_testkit::wait::eventually;

on_every_backend!(
    refresh_after_password_change_is_rejected,
    reuse_of_a_rotated_token_is_refused_and_its_sibling_is_dead_too,
    logout_all_ends_every_session_and_logout_one,
    throttling_holds_across_instances,
    a_removed_user_refreshes_within_the_user_cache_ttl_then_is_refused,
);

const PASSWORD: &str = "correct horse battery";

fn config() -> AuthConfig {
    let mut config = AuthConfig::default();
    config.passwords = PasswordConfig::insecure_fast_for_tests();
    config.default_scopes = vec!["instances:read".into()];
    config
}

fn auth_with(store: Store, clock: Arc<ManualClock>, config: AuthConfig) -> AuthService {
    AuthService::new(
        Arc::new(MemoryUserRepository::new()),
        store,
        KeySet::new(SigningKey::ed25519_from_seed("k1", &[5; 32]).unwrap()),
        &[6; 32],
        clock,
        config,
    )
    .unwrap()
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(start_time()))
}

async fn refresh_after_password_change_is_rejected(store: Store) {
    let clock = clock();
    let auth = auth_with(store, clock.clone(), config());
    let user = auth.register("ada", PASSWORD).await.unwrap();
    let phone = auth.login("ada", PASSWORD, "10.0.0.1").await.unwrap();
    let laptop = auth.login("ada", PASSWORD, "10.0.0.2").await.unwrap();
    let laptop = auth.refresh(&laptop.refresh_token).await.unwrap();

    clock.advance(Duration::seconds(1));
    auth.change_password(user.id, PASSWORD, "a brand new passphrase", "127.0.0.1").await.unwrap();
    for pair in [&phone, &laptop] {
        let err = auth.refresh(&pair.refresh_token).await.unwrap_err();
        assert!(matches!(err, AuthError::InvalidRefresh(_)), "{err}");
    }
    assert!(auth.list_sessions(user.id).await.unwrap().is_empty());
    assert!(matches!(
        auth.login("ada", PASSWORD, "10.0.0.1").await.unwrap_err(),
        AuthError::InvalidCredentials
    ));
    clock.advance(Duration::seconds(1));
    let fresh = auth.login("ada", "a brand new passphrase", "10.0.0.1").await.unwrap();
    auth.refresh(&fresh.refresh_token).await.unwrap();
}

async fn reuse_of_a_rotated_token_is_refused_and_its_sibling_is_dead_too(store: Store) {
    let clock = clock();
    let auth = auth_with(store, clock.clone(), config());
    auth.register("ada", PASSWORD).await.unwrap();
    let first = auth.login("ada", PASSWORD, "10.0.0.1").await.unwrap();
    let second = auth.refresh(&first.refresh_token).await.unwrap();
    // Inside the grace window the racing client gets the same successor.
    let raced = auth.refresh(&first.refresh_token).await.unwrap();
    assert_eq!(raced.refresh_token, second.refresh_token);

    clock.advance(Duration::seconds(10));
    let err = auth.refresh(&first.refresh_token).await.unwrap_err();
    assert_eq!(err.code(), "refresh_token_reused");
    let err = auth.refresh(&second.refresh_token).await.unwrap_err();
    assert_eq!(err.code(), "refresh_token_invalid", "the sibling is dead too");
}

async fn logout_all_ends_every_session_and_logout_one(store: Store) {
    let clock = clock();
    let auth = auth_with(store, clock.clone(), config());
    let user = auth.register("ada", PASSWORD).await.unwrap();
    let a = auth.login("ada", PASSWORD, "10.0.0.1").await.unwrap();
    let b = auth.login("ada", PASSWORD, "10.0.0.2").await.unwrap();
    assert_eq!(auth.list_sessions(user.id).await.unwrap().len(), 2);

    auth.logout(&a.refresh_token).await.unwrap();
    let left = auth.list_sessions(user.id).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].client, "10.0.0.2");
    assert!(auth.refresh(&a.refresh_token).await.is_err());

    clock.advance(Duration::seconds(1));
    auth.logout_all(user.id).await.unwrap();
    assert!(auth.refresh(&b.refresh_token).await.is_err());
    assert!(auth.list_sessions(user.id).await.unwrap().is_empty());
}

async fn throttling_holds_across_instances(store: Store) {
    let clock = clock();
    // Two service instances sharing one session store (one Redis).
    let users = Arc::new(MemoryUserRepository::new());
    let make = || {
        AuthService::new(
            users.clone(),
            store.clone(),
            KeySet::new(SigningKey::ed25519_from_seed("k1", &[5; 32]).unwrap()),
            &[6; 32],
            clock.clone(),
            config(),
        )
        .unwrap()
    };
    let (one, two) = (make(), make());
    one.register("ada", PASSWORD).await.unwrap();
    for _ in 0..5 {
        let err = one.login("ada", "wrong password!", "10.0.0.9").await.unwrap_err();
        assert!(matches!(err, AuthError::InvalidCredentials), "{err}");
    }
    // The same address is held back on the other instance; the owner elsewhere is not.
    let err = two.login("ada", PASSWORD, "10.0.0.9").await.unwrap_err();
    assert!(matches!(err, AuthError::Throttled { subject: "username and client", .. }), "{err}");
    two.login("ada", PASSWORD, "10.0.0.7").await.unwrap();
}

async fn redis_auth(
    test: &str,
    sessions: SessionConfig,
) -> (AuthService, ::redis::aio::MultiplexedConnection, String, iaas_testkit::Service) {
    let server = iaas_testkit::redis().await.unwrap();
    let prefix = key_prefix(test);
    let store = RedisSessionStore::connect(
        RedisSessionConfig::new(server.url()).with_key_prefix(prefix.clone()),
    )
    .await
    .unwrap();
    let mut config = config();
    config.sessions = sessions;
    let auth = auth_with(Arc::new(store), clock(), config);
    let conn = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    (auth, conn, prefix, server)
}

#[tokio::test]
async fn redis_holds_no_plaintext_token_and_honours_the_idle_ttl() {
    let (auth, mut conn, prefix, _server) =
        redis_auth("no_plaintext", SessionConfig::default()).await;
    auth.register("ada", PASSWORD).await.unwrap();
    let first = auth.login("ada", PASSWORD, "10.0.0.1").await.unwrap();
    let second = auth.refresh(&first.refresh_token).await.unwrap();

    let keys: Vec<String> =
        ::redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap();
    assert!(!keys.is_empty());
    let mut dump = keys.join("\n");
    for key in &keys {
        let kind: String = ::redis::cmd("TYPE").arg(key).query_async(&mut conn).await.unwrap();
        let values: Vec<String> = match kind.as_str() {
            "hash" => ::redis::cmd("HGETALL").arg(key).query_async(&mut conn).await.unwrap(),
            "set" => ::redis::cmd("SMEMBERS").arg(key).query_async(&mut conn).await.unwrap(),
            _ => vec![::redis::cmd("GET").arg(key).query_async(&mut conn).await.unwrap()],
        };
        dump.push_str(&values.join("\n"));
    }
    for token in [&first.refresh_token, &second.refresh_token] {
        assert!(!dump.contains(token.as_str()), "a refresh token is stored in clear");
    }
    let current =
        format!("{prefix}refresh:{}", iaas_auth::TokenHash::of(&second.refresh_token).as_str());
    let ttl: i64 = ::redis::cmd("PTTL").arg(&current).query_async(&mut conn).await.unwrap();
    let week = Duration::days(7).num_milliseconds();
    assert!(ttl > week - 60_000 && ttl <= week, "idle TTL is 7 days, got {ttl} ms");
}

#[tokio::test]
async fn redis_expires_an_idle_session_by_itself() {
    let mut sessions = SessionConfig::default();
    sessions.idle_timeout = Duration::milliseconds(300);
    let (auth, mut conn, prefix, _server) = redis_auth("idle_ttl", sessions).await;
    auth.register("ada", PASSWORD).await.unwrap();
    let pair = auth.login("ada", PASSWORD, "10.0.0.1").await.unwrap();
    let key = format!("{prefix}refresh:{}", iaas_auth::TokenHash::of(&pair.refresh_token).as_str());
    // The service clock stands still: only Redis's own TTL can end this session.
    eventually(StdDuration::from_secs(5), || {
        let mut conn = conn.clone();
        let key = key.clone();
        async move {
            let exists: bool = ::redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if exists { Err("still there".to_owned()) } else { Ok(()) }
        }
    })
    .await
    .unwrap();
    let err = auth.refresh(&pair.refresh_token).await.unwrap_err();
    assert_eq!(err.code(), "refresh_token_invalid");
    let _: () = ::redis::cmd("PING").query_async(&mut conn).await.unwrap();
}

/// A user store whose rows can be made to vanish, the way an out-of-band delete would.
#[derive(Default)]
struct HidingUsers {
    inner: MemoryUserRepository,
    hidden: Mutex<HashSet<UserId>>,
}

impl HidingUsers {
    fn hide(&self, id: UserId) {
        self.hidden.lock().unwrap().insert(id);
    }

    fn is_hidden(&self, id: UserId) -> bool {
        self.hidden.lock().unwrap().contains(&id)
    }
}

#[async_trait]
impl UserRepository for HidingUsers {
    async fn create_user(&self, user: &User) -> iaas_core::Result<()> {
        self.inner.create_user(user).await
    }

    async fn get_user(&self, id: UserId) -> iaas_core::Result<Option<User>> {
        if self.is_hidden(id) {
            return Ok(None);
        }
        self.inner.get_user(id).await
    }

    async fn find_user_by_username(&self, username: &str) -> iaas_core::Result<Option<User>> {
        let user = self.inner.find_user_by_username(username).await?;
        Ok(user.filter(|user| !self.is_hidden(user.id)))
    }

    async fn set_password_hash(
        &self,
        id: UserId,
        password_hash: &str,
        at: DateTime<Utc>,
    ) -> iaas_core::Result<()> {
        self.inner.set_password_hash(id, password_hash, at).await
    }

    async fn set_scopes(&self, id: UserId, scopes: &[String]) -> iaas_core::Result<()> {
        self.inner.set_scopes(id, scopes).await
    }
}

/// The bound written on `UserCacheConfig::ttl`: an account deleted behind the service's back
/// keeps refreshing for at most the cache TTL, then its family is revoked as before the cache.
async fn a_removed_user_refreshes_within_the_user_cache_ttl_then_is_refused(store: Store) {
    let clock = clock();
    let users = Arc::new(HidingUsers::default());
    let auth = AuthService::new(
        users.clone(),
        store,
        KeySet::new(SigningKey::ed25519_from_seed("k1", &[5; 32]).unwrap()),
        &[6; 32],
        clock.clone(),
        config(),
    )
    .unwrap();
    assert_eq!(auth.config().user_cache.ttl, Duration::seconds(5), "the documented default");
    let user = auth.register("ada", PASSWORD).await.unwrap();
    let pair = auth.login("ada", PASSWORD, "10.0.0.1").await.unwrap();
    let pair = auth.refresh(&pair.refresh_token).await.unwrap(); // caches the user

    users.hide(user.id);
    clock.advance(Duration::seconds(4));
    let pair = auth.refresh(&pair.refresh_token).await.unwrap();
    let claims = auth.issuer().verify(&pair.access_token).unwrap();
    assert_eq!(claims.user, user.id, "within the TTL the cached user still refreshes");

    clock.advance(Duration::seconds(2));
    let err = auth.refresh(&pair.refresh_token).await.unwrap_err();
    assert!(matches!(err, AuthError::InvalidRefresh(RefreshRejection::Revoked)), "{err}");
    assert!(auth.list_sessions(user.id).await.unwrap().is_empty(), "the family is revoked");
    // The successor handed out just before the refusal is dead as well.
    let err = auth.refresh(&pair.refresh_token).await.unwrap_err();
    assert!(matches!(err, AuthError::InvalidRefresh(_)), "{err}");

    // With the cache off the same removal is refused at once.
    let mut uncached = config();
    uncached.user_cache = UserCacheConfig::disabled();
    let direct = AuthService::new(
        users.clone(),
        Arc::new(iaas_auth::MemorySessionStore::new()),
        KeySet::new(SigningKey::ed25519_from_seed("k1", &[5; 32]).unwrap()),
        &[6; 32],
        clock.clone(),
        uncached,
    )
    .unwrap();
    let bob = direct.register("bob", PASSWORD).await.unwrap();
    let pair = direct.login("bob", PASSWORD, "10.0.0.1").await.unwrap();
    let pair = direct.refresh(&pair.refresh_token).await.unwrap();
    users.hide(bob.id);
    let err = direct.refresh(&pair.refresh_token).await.unwrap_err();
    assert!(matches!(err, AuthError::InvalidRefresh(RefreshRejection::Revoked)), "{err}");
}
