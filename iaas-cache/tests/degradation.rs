//! Redis going away and coming back, on a private Redis container (never the shared server): reads are answered from the loader while Redis is down, each failure counted; once
//! Redis is back on the same port the cache is used again, without rebuilding anything.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::stats;
use iaas_cache::{ClusterCache, ClusterCacheConfig, RedisStore, RedisStoreConfig};
use iaas_core::{ClusterStats, InstanceId};
use iaas_testkit::RestartableRedis;
use iaas_testkit::wait::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_redis_going_away_and_use_it_again_when_it_returns() {
    let server = RestartableRedis::start(false).await.unwrap();
    // The production default: a 50 ms budget per call.
    let store = RedisStore::connect(&RedisStoreConfig::new(server.url())).await.unwrap();
    let cache = ClusterCache::new(Arc::new(store), ClusterCacheConfig::default());
    let id = InstanceId::new_random();
    let loads = Arc::new(AtomicUsize::new(0));
    let load = || {
        let loads = loads.clone();
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(stats(id, 7.0))
        }
    };

    // Up: the first read loads and fills, the next one hits. On a busy machine one call can
    // miss its 50 ms budget (counted as a backend error, and the next read fills again): the
    // hit must come within a few reads.
    assert_eq!(cache.get_or_load(id, load()).await.unwrap(), stats(id, 7.0));
    let mut rounds = 0;
    loop {
        rounds += 1;
        let before = loads.load(Ordering::SeqCst);
        assert_eq!(cache.get_or_load(id, load()).await.unwrap(), stats(id, 7.0));
        if loads.load(Ordering::SeqCst) == before {
            break;
        }
        assert!(rounds < 5, "no read hit Redis in {rounds} rounds: {:?}", cache.stats());
    }
    let loads_up = loads.load(Ordering::SeqCst);
    if rounds > 1 {
        eprintln!(
            "{} reads until a hit (a call missed its budget): {:?}",
            rounds + 1,
            cache.stats()
        );
    }

    // Down: every read is still answered, from the loader, quickly; errors are counted.
    server.kill().await.unwrap();
    let mut previous_errors = cache.stats().backend_errors;
    for round in 1..=5 {
        let started = Instant::now();
        assert_eq!(cache.get_or_load(id, load()).await.unwrap(), stats(id, 7.0));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "round {round}: {:?}",
            started.elapsed()
        );
        let errors = cache.stats().backend_errors;
        assert!(errors > previous_errors, "round {round}: backend_errors stayed at {errors}");
        previous_errors = errors;
    }
    assert_eq!(loads.load(Ordering::SeqCst), loads_up + 5, "each degraded read went to the source");

    // Back (empty, same port): the same cache reconnects and fills again, then hits.
    server.restart().await.unwrap();
    eventually(Duration::from_secs(10), || async {
        cache.get_or_load(id, load()).await.unwrap();
        match cache.get::<ClusterStats>(id).await {
            Ok(Some(_)) => Ok(()),
            other => Err(format!("not cached yet: {other:?}")),
        }
    })
    .await
    .unwrap();
    let loads_before = loads.load(Ordering::SeqCst);
    let hits_before = cache.stats().hits;
    assert_eq!(cache.get_or_load(id, load()).await.unwrap(), stats(id, 7.0));
    assert_eq!(loads.load(Ordering::SeqCst), loads_before, "served from Redis again");
    assert_eq!(cache.stats().hits, hits_before + 1);
    server.kill().await.unwrap();
}
