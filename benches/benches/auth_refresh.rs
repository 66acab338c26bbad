//! One refresh (rotate the refresh token, sign a new EdDSA access token) on the in-process
//! store and on Redis (`IAAS_TEST_REDIS_URL`, under a key prefix of its own). Each iteration
//! refreshes the token the previous one returned, as a client does.
//!
//! `auth_refresh_sqlite_users` puts the users in the platform's embedded store (SQLite through
//! `iaas-store`) and refreshes with the user cache on (the default) and off, in-process sessions:
//! the difference is the user read the cache takes off the refresh path.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a bench panics to report a failure")]

use std::sync::{Arc, Mutex};

use criterion::{Criterion, criterion_group, criterion_main};
use iaas_auth::{
    AuthConfig, AuthService, KeySet, MemorySessionStore, PasswordConfig, RedisSessionConfig,
    RedisSessionStore, SessionStore, SigningKey, UserCacheConfig,
};
use iaas_core::memory::MemoryUserRepository;
use iaas_core::{SystemClock, UserRepository};
use iaas_store::{SqliteConfig, SqliteStore};

const PASSWORD: &str = "correct horse battery";

async fn logged_in(store: Arc<dyn SessionStore>) -> (AuthService, Arc<Mutex<String>>) {
    logged_in_with(Arc::new(MemoryUserRepository::new()), store, UserCacheConfig::default()).await
}

async fn logged_in_with(
    users: Arc<dyn UserRepository>,
    store: Arc<dyn SessionStore>,
    user_cache: UserCacheConfig,
) -> (AuthService, Arc<Mutex<String>>) {
    let mut config = AuthConfig::default();
    config.user_cache = user_cache;
    // Login cost is not measured here; the cheapest argon2 keeps the setup short.
    config.passwords = PasswordConfig::insecure_fast_for_tests();
    // The bench's keys on the shared Redis expire soon after it ends.
    config.sessions.idle_timeout = chrono::Duration::minutes(10);
    let auth = AuthService::new(
        users,
        store,
        KeySet::new(SigningKey::ed25519_from_seed("ed-1", &[7; 32]).unwrap()),
        &[8; 32],
        Arc::new(SystemClock),
        config,
    )
    .unwrap();
    auth.register("bench", PASSWORD).await.unwrap();
    let pair = auth.login("bench", PASSWORD, "127.0.0.1").await.unwrap();
    (auth, Arc::new(Mutex::new(pair.refresh_token)))
}

async fn refresh_once(auth: &AuthService, current: &Mutex<String>) {
    let token = current.lock().unwrap().clone();
    let pair = auth.refresh(&token).await.unwrap();
    *current.lock().unwrap() = pair.refresh_token;
}

fn refresh(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("auth_refresh");

    let (memory, token) = rt.block_on(logged_in(Arc::new(MemorySessionStore::new())));
    group.bench_function("memory", |b| b.to_async(&rt).iter(|| refresh_once(&memory, &token)));

    match std::env::var("IAAS_TEST_REDIS_URL") {
        Ok(url) => {
            let prefix = iaas_testkit::isolation::key_prefix("bench-refresh");
            let config = RedisSessionConfig::new(url).with_key_prefix(prefix);
            let store = rt.block_on(RedisSessionStore::connect(config)).unwrap();
            let (redis, token) = rt.block_on(logged_in(Arc::new(store)));
            group
                .bench_function("redis", |b| b.to_async(&rt).iter(|| refresh_once(&redis, &token)));
        }
        Err(_) => eprintln!("auth_refresh/redis skipped: IAAS_TEST_REDIS_URL is not set"),
    }
    group.finish();
}

fn refresh_with_sqlite_users(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name("bench-users"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut group = c.benchmark_group("auth_refresh_sqlite_users");
    for (name, cache) in
        [("cache_on", UserCacheConfig::default()), ("cache_off", UserCacheConfig::disabled())]
    {
        // A database per variant: each registers the same account.
        let config = SqliteConfig::new(dir.join(format!("{name}.db")));
        let users: Arc<dyn UserRepository> =
            Arc::new(rt.block_on(SqliteStore::open(&config)).unwrap());
        let sessions = Arc::new(MemorySessionStore::new());
        let (auth, token) = rt.block_on(logged_in_with(users, sessions, cache));
        group.bench_function(name, |b| b.to_async(&rt).iter(|| refresh_once(&auth, &token)));
    }
    group.finish();
    std::fs::remove_dir_all(&dir).ok();
}

criterion_group!(benches, refresh, refresh_with_sqlite_users);
criterion_main!(benches);
