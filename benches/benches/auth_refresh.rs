//! One refresh (rotate the refresh token, sign a new EdDSA access token) on the in-process
//! store and on Redis (`IAAS_TEST_REDIS_URL`, under a key prefix of its own). Each iteration
//! refreshes the token the previous one returned, as a client does.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a bench panics to report a failure")]

use std::sync::{Arc, Mutex};

use criterion::{Criterion, criterion_group, criterion_main};
use iaas_auth::{
    AuthConfig, AuthService, KeySet, MemorySessionStore, PasswordConfig, RedisSessionConfig,
    RedisSessionStore, SessionStore, SigningKey,
};
use iaas_core::SystemClock;
use iaas_core::memory::MemoryUserRepository;

const PASSWORD: &str = "correct horse battery";

async fn logged_in(store: Arc<dyn SessionStore>) -> (AuthService, Arc<Mutex<String>>) {
    let mut config = AuthConfig::default();
    // Login cost is not measured here; the cheapest argon2 keeps the setup short.
    config.passwords = PasswordConfig::insecure_fast_for_tests();
    // The bench's keys on the shared Redis expire soon after it ends.
    config.sessions.idle_timeout = chrono::Duration::minutes(10);
    let auth = AuthService::new(
        Arc::new(MemoryUserRepository::new()),
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

criterion_group!(benches, refresh);
criterion_main!(benches);
