//! `ClusterCache` on every backend: typed keys and TTLs, one-round-trip invalidation,
//! single-flight fills, invalidation winning over a slow fill, undecodable values as misses.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{CountingStore, Harness, info, replication, stats};
use iaas_cache::{CacheError, ClusterCache, Codec, Kind};
use iaas_core::{ClusterInfo, ClusterStats, InstanceId, ManualClock, ReplicationStatus};
use iaas_testkit::wait::eventually;
use tokio::sync::oneshot;

on_every_backend!(
    each_kind_is_stored_under_its_own_key,
    each_kind_expires_after_its_own_ttl,
    invalidate_removes_all_three_keys_in_one_round_trip,
    a_hundred_concurrent_misses_run_the_loader_once,
    an_invalidation_during_a_slow_load_leaves_no_stale_value,
    a_corrupt_or_foreign_value_is_a_counted_miss,
    a_loader_error_is_returned_and_nothing_is_cached,
    a_hit_close_to_expiry_is_refreshed_by_one_caller,
    concurrent_readers_see_whole_values_and_never_go_back,
);

async fn each_kind_is_stored_under_its_own_key(h: Harness) {
    let cache = h.cache(h.config());
    let id = InstanceId::new_random();
    cache.set_info(id, &info(id, 3)).await.unwrap();
    cache.set_stats(id, &stats(id, 42.0)).await.unwrap();
    cache.set_replication(id, &replication(id)).await.unwrap();

    assert_eq!(cache.get_info(id).await.unwrap(), Some(info(id, 3)));
    assert_eq!(cache.get_stats(id).await.unwrap(), Some(stats(id, 42.0)));
    assert_eq!(cache.get_replication(id).await.unwrap(), Some(replication(id)));
    assert_eq!(cache.key(Kind::Info, id), format!("{}cluster:info:{id}", h.prefix));
    assert!(h.store.get(&format!("{}cluster:replication:{id}", h.prefix)).await.unwrap().is_some());
    assert_eq!(cache.get_info(InstanceId::new_random()).await.unwrap(), None);
    let counted = cache.stats();
    assert_eq!((counted.hits, counted.misses), (3, 1));
    cache.invalidate(id).await.unwrap();
}

async fn each_kind_expires_after_its_own_ttl(h: Harness) {
    let mut config = h.config();
    config.info_ttl = Duration::from_millis(300);
    let cache = h.cache(config);
    let id = InstanceId::new_random();
    cache.set_info(id, &info(id, 1)).await.unwrap();
    cache.set_stats(id, &stats(id, 1.0)).await.unwrap();

    h.let_expire(&cache.key(Kind::Info, id), Duration::from_millis(300)).await;

    assert_eq!(cache.get_info(id).await.unwrap(), None);
    assert_eq!(cache.get_stats(id).await.unwrap(), Some(stats(id, 1.0)), "default TTL is 5 min");
    cache.invalidate(id).await.unwrap();
}

async fn invalidate_removes_all_three_keys_in_one_round_trip(h: Harness) {
    let counting = Arc::new(CountingStore::new(h.store.clone()));
    let cache = ClusterCache::new(counting.clone(), h.config());
    let id = InstanceId::new_random();
    let other = InstanceId::new_random();
    cache.set_info(id, &info(id, 2)).await.unwrap();
    cache.set_stats(id, &stats(id, 5.0)).await.unwrap();
    cache.set_replication(id, &replication(id)).await.unwrap();
    cache.set_info(other, &info(other, 1)).await.unwrap();

    let before = counting.calls();
    cache.invalidate(id).await.unwrap();
    assert_eq!(counting.calls() - before, 1, "one store call: DEL x3 + INCR in one MULTI");

    let keys: Vec<String> = Kind::ALL.iter().map(|&kind| cache.key(kind, id)).collect();
    assert_eq!(h.store.get_many(&keys).await.unwrap(), vec![None, None, None]);
    assert_eq!(cache.get_info(other).await.unwrap(), Some(info(other, 1)), "other clusters stay");
    assert_eq!(cache.stats().invalidations, 1);
    cache.invalidate(other).await.unwrap();
}

async fn a_hundred_concurrent_misses_run_the_loader_once(h: Harness) {
    let cache = h.cache(h.config());
    let id = InstanceId::new_random();
    let loads = Arc::new(AtomicUsize::new(0));

    let callers: Vec<_> = (0..100)
        .map(|_| {
            let cache = cache.clone();
            let loads = loads.clone();
            tokio::spawn(async move {
                let observer = cache.clone();
                cache
                    .get_or_load(id, || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        // Hold the load until every caller has missed, so all 100 overlap it.
                        eventually(Duration::from_secs(10), || async {
                            let misses = observer.stats().misses;
                            if misses >= 100 { Ok(()) } else { Err(misses) }
                        })
                        .await
                        .map_err(std::io::Error::other)?;
                        Ok::<_, std::io::Error>(stats(id, 99.0))
                    })
                    .await
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap(), stats(id, 99.0));
    }

    assert_eq!(loads.load(Ordering::SeqCst), 1, "one load for 100 concurrent misses");
    let counted = cache.stats();
    assert_eq!((counted.loads, counted.misses), (1, 100));
    assert_eq!(cache.get_stats(id).await.unwrap(), Some(stats(id, 99.0)), "the load was cached");
    cache.invalidate(id).await.unwrap();
}

async fn an_invalidation_during_a_slow_load_leaves_no_stale_value(h: Harness) {
    let cache = h.cache(h.config());
    let id = InstanceId::new_random();
    let (started_tx, started_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel::<()>();

    let slow = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .get_or_load(id, || async move {
                    started_tx.send(()).unwrap();
                    release_rx.await.map_err(std::io::Error::other)?;
                    Ok::<_, std::io::Error>(info(id, 1)) // read before the node was added
                })
                .await
        }
    });
    started_rx.await.unwrap();
    cache.invalidate(id).await.unwrap(); // node_added lands while the load runs
    release_tx.send(()).unwrap();

    assert_eq!(slow.await.unwrap().unwrap(), info(id, 1), "the caller still gets its answer");
    assert_eq!(cache.get_info(id).await.unwrap(), None, "but the stale value was not cached");
    assert_eq!(cache.stats().stale_fills, 1);

    // The next load, after the invalidation, is cached.
    let fresh = cache.get_or_load(id, || async { Ok::<_, std::io::Error>(info(id, 2)) }).await;
    assert_eq!(fresh.unwrap(), info(id, 2));
    assert_eq!(cache.get_info(id).await.unwrap(), Some(info(id, 2)));
    cache.invalidate(id).await.unwrap();
}

async fn a_corrupt_or_foreign_value_is_a_counted_miss(h: Harness) {
    let cache = h.cache(h.config());
    let id = InstanceId::new_random();
    let key = cache.key(Kind::Info, id);
    let ttl = Duration::from_secs(60);
    let codec = Codec::default();
    let now = common::start_time();
    let mut newer_layout = codec.encode(&info(id, 1), now).unwrap();
    newer_layout[1] = iaas_cache::FORMAT_VERSION + 1;
    let garbage: [Vec<u8>; 5] = [
        b"\xc7\x01\x01\x00\xff\xff\xff".to_vec(), // our header, broken payload
        serde_json::to_vec(&info(id, 1)).unwrap(), // what the Go seed wrote
        codec.encode(&stats(id, 1.0), now).unwrap(), // stats under the info key
        newer_layout,                             // a layout from a newer build
        Vec::new(),                               // empty
    ];
    for (i, bytes) in garbage.iter().enumerate() {
        h.store.set(&key, bytes, ttl).await.unwrap();
        assert_eq!(cache.get::<ClusterInfo>(id).await.unwrap(), None, "value {i}");
    }
    assert_eq!(cache.stats().corrupt_values, 5);

    // get_or_load treats it as a miss too, and replaces it.
    let loaded = cache.get_or_load(id, || async { Ok::<_, std::io::Error>(info(id, 4)) }).await;
    assert_eq!(loaded.unwrap(), info(id, 4));
    assert_eq!(cache.get_info(id).await.unwrap(), Some(info(id, 4)));
    cache.invalidate(id).await.unwrap();
}

async fn a_loader_error_is_returned_and_nothing_is_cached(h: Harness) {
    let cache = h.cache(h.config());
    let id = InstanceId::new_random();
    let result = cache
        .get_or_load::<ReplicationStatus, _, _, _>(id, || async {
            Err(std::io::Error::other("primary unreachable"))
        })
        .await;
    let err = result.unwrap_err();
    assert!(matches!(err, CacheError::Load { .. }), "{err}");
    assert!(err.to_string().contains(&format!("cluster:replication:{id}")), "{err}");
    assert_eq!(cache.stats().load_errors, 1);
    assert_eq!(cache.get_replication(id).await.unwrap(), None);
    let _: Option<ClusterStats> = cache.get(id).await.unwrap();
}

async fn a_hit_close_to_expiry_is_refreshed_by_one_caller(h: Harness) {
    let clock = h.clock.clone().unwrap_or_else(|| Arc::new(ManualClock::new(common::start_time())));
    let mut config = h.config();
    config.refresh_ahead = Some(Duration::from_secs(30)); // TTL: the default 5 min
    let cache = ClusterCache::with_clock(h.store.clone(), config, clock.clone());
    let id = InstanceId::new_random();
    let loads = Arc::new(AtomicUsize::new(0));
    let load = |cpu: f64| {
        let loads = loads.clone();
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(stats(id, cpu))
        }
    };

    assert_eq!(cache.get_or_load(id, load(1.0)).await.unwrap(), stats(id, 1.0));
    clock.advance(chrono::Duration::minutes(4));
    assert_eq!(cache.get_or_load(id, load(2.0)).await.unwrap(), stats(id, 1.0), "not due yet");
    assert_eq!(loads.load(Ordering::SeqCst), 1);

    // 4 min 40 s old: inside the 30 s window. One caller refreshes (slowly); the others are
    // served the cached value meanwhile, without loading.
    clock.advance(chrono::Duration::seconds(40));
    let (started_tx, started_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let refresher = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .get_or_load(id, || async move {
                    started_tx.send(()).unwrap();
                    release_rx.await.map_err(std::io::Error::other)?;
                    Ok::<_, std::io::Error>(stats(id, 3.0))
                })
                .await
        }
    });
    started_rx.await.unwrap();
    assert_eq!(cache.get_or_load(id, load(9.0)).await.unwrap(), stats(id, 1.0));
    assert_eq!(loads.load(Ordering::SeqCst), 1, "only the refresher loads");
    release_tx.send(()).unwrap();
    assert_eq!(refresher.await.unwrap().unwrap(), stats(id, 3.0));

    assert_eq!(cache.get_stats(id).await.unwrap(), Some(stats(id, 3.0)), "refreshed in place");
    assert_eq!(cache.get_or_load(id, load(4.0)).await.unwrap(), stats(id, 3.0), "fresh again");
    assert_eq!(cache.stats().early_refreshes, 1);
    cache.invalidate(id).await.unwrap();
}

async fn concurrent_readers_see_whole_values_and_never_go_back(h: Harness) {
    const WRITES: u32 = 100;
    const READERS: usize = 4;
    let cache = h.cache(h.config());
    let id = InstanceId::new_random();
    cache.set_stats(id, &stats(id, 0.0)).await.unwrap();
    let done = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let cache = cache.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let mut last = 0.0;
                let mut reads = 0u32;
                loop {
                    // Read after checking: once the writer is done, this read must see its last value.
                    let finished = done.load(Ordering::SeqCst);
                    let seen = cache.get_stats(id).await.unwrap().expect("present while written");
                    assert_eq!(seen, stats(id, seen.cpu_percent), "a whole value, as written");
                    assert!(
                        seen.cpu_percent >= last,
                        "went back from {last} to {}",
                        seen.cpu_percent
                    );
                    last = seen.cpu_percent;
                    reads += 1;
                    // The in-process read never yields by itself; let the other readers in.
                    tokio::task::yield_now().await;
                    if finished {
                        assert_eq!(last, f64::from(WRITES), "the last write, once it is done");
                        return reads;
                    }
                }
            })
        })
        .collect();
    for i in 1..=WRITES {
        cache.set_stats(id, &stats(id, f64::from(i))).await.unwrap();
        tokio::task::yield_now().await;
    }
    done.store(true, Ordering::SeqCst);

    let mut reads = 0;
    for reader in readers {
        reads += reader.await.unwrap();
    }
    let counted = cache.stats();
    assert_eq!((counted.hits, counted.misses), (u64::from(reads), 0), "every read was a hit");
    cache.invalidate(id).await.unwrap();
}
