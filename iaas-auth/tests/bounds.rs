//! Memory a client can make the auth service take stays bounded: throttle counters in the
//! in-process store, and password hashing under a burst of registrations (measured RSS).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration as StdDuration;

use chrono::Utc;
use iaas_auth::{
    AuthConfig, AuthError, AuthService, KeySet, MemorySessionStore, PasswordConfig, SigningKey,
};
use iaas_core::ManualClock;
use iaas_core::memory::MemoryUserRepository;

fn service(store: Arc<MemorySessionStore>, passwords: PasswordConfig) -> AuthService {
    let mut config = AuthConfig::default();
    config.passwords = passwords;
    AuthService::new(
        Arc::new(MemoryUserRepository::new()),
        store,
        KeySet::new(SigningKey::ed25519_from_seed("bounds", &[31; 32]).unwrap()),
        &[32; 32],
        Arc::new(ManualClock::new(Utc::now())),
        config,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_random_username_logins_leave_the_in_process_store_bounded() {
    const LOGINS: u32 = 100_000;
    const MAX_COUNTERS: usize = 20_000;
    let store = Arc::new(MemorySessionStore::new().with_max_counters(MAX_COUNTERS));
    let auth = service(store.clone(), PasswordConfig::insecure_fast_for_tests());
    let most = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..8u32)
        .map(|worker| {
            let (auth, store, most) = (auth.clone(), store.clone(), most.clone());
            tokio::spawn(async move {
                for n in (worker..LOGINS).step_by(8) {
                    // A new username from a new address each time: no counter is ever reused.
                    let client = format!("10.{}.{}.{}", n >> 16, (n >> 8) & 0xff, n & 0xff);
                    let err = auth.login(&format!("nobody{n}"), "whatever1", &client).await;
                    assert!(matches!(err, Err(AuthError::InvalidCredentials)), "{err:?}");
                    if n % 1000 == 0 {
                        most.fetch_max(store.len().1 as u64, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let (sessions, counters) = store.len();
    let most = most.load(Ordering::Relaxed).max(counters as u64);
    eprintln!(
        "{LOGINS} failed logins ({} counters written): {counters} held at the end, at most \
         {most} seen, bound {MAX_COUNTERS}",
        2 * LOGINS
    );
    assert_eq!(sessions, 0);
    assert!(most <= MAX_COUNTERS as u64 + 1, "the counters grew to {most}");
}

/// The process's resident set, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_burst_stays_under_the_hashing_memory_bound() {
    const BURST: usize = 40;
    const SLOTS: usize = 2;
    // The production cost (19 MiB per hash), two slots.
    let mut passwords = PasswordConfig::default();
    passwords.max_concurrent_hashes = SLOTS;
    let per_hash_kib = u64::from(passwords.memory_kib);
    let auth = service(Arc::new(MemorySessionStore::new()), passwords);
    let limits = auth.hashing_limits();
    assert_eq!(limits.slots, SLOTS);

    let before = rss_kib();
    let peak = Arc::new(AtomicU64::new(before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (peak, sampling) = (peak.clone(), sampling.clone());
        async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                tokio::time::sleep(StdDuration::from_millis(5)).await;
            }
        }
    });
    let burst: Vec<_> = (0..BURST)
        .map(|n| {
            let auth = auth.clone();
            tokio::spawn(async move {
                auth.register(&format!("burst{n}"), "correct horse battery staple").await
            })
        })
        .collect();
    let (mut created, mut busy) = (0, 0);
    for task in burst {
        match task.await.unwrap() {
            Ok(_) => created += 1,
            Err(AuthError::Busy { retry_after_secs }) => {
                assert!(retry_after_secs >= 1);
                busy += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let grown = peak.load(Ordering::Relaxed).saturating_sub(before);
    // What the slots may hold, plus room for the allocator and the runtime.
    let bound = (SLOTS as u64 + 2) * per_hash_kib + 32 * 1024;
    eprintln!(
        "{BURST} concurrent registrations, {SLOTS} slots, queue {}: {created} created, {busy} \
         refused busy; RSS {before} KiB before, peak +{grown} KiB (bound {bound} KiB; \
         unbounded would be about {} KiB)",
        limits.queue,
        BURST as u64 * per_hash_kib
    );
    assert_eq!(created + busy, BURST);
    assert!(created >= SLOTS, "the slots served nobody");
    assert!(grown <= bound, "hashing took {grown} KiB over the bound of {bound} KiB");
}
