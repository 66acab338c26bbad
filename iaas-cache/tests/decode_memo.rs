//! The Redis hit path's decode memo, against the real Redis: a hit on the bytes this cache last
//! decoded for a key reuses that value, but anything another client writes (raw bytes through
//! a plain `redis` connection, or another `ClusterCache` on its own connection, as another
//! platform process would) is what the very next read returns; and the memo holds no more keys
//! than configured.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use chrono::Utc;
use common::{Harness, TEST_TIMEOUT, info, stats};
use iaas_cache::{ClusterCache, Codec, Kind, RedisStore, RedisStoreConfig};
use iaas_core::InstanceId;

/// A second, independent client of the same server: its own `RedisStore` and cache, as another
/// process of the platform would have.
async fn other_process(h: &Harness) -> ClusterCache {
    let url = h.redis_url().expect("a Redis harness");
    let config = RedisStoreConfig::new(url).with_timeout(TEST_TIMEOUT);
    let store = RedisStore::connect(&config).await.unwrap();
    ClusterCache::new(std::sync::Arc::new(store), h.config())
}

/// A plain connection that writes raw bytes, knowing nothing of the cache.
async fn raw_set(h: &Harness, key: &str, bytes: &[u8]) {
    let client = redis::Client::open(h.redis_url().unwrap()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("SET")
        .arg(key)
        .arg(bytes)
        .arg("EX")
        .arg(60)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_changed_by_another_client_is_read_next_time() {
    let h = Harness::redis("decode-memo-other-client").await;
    let cache = h.cache(h.config());
    let id = InstanceId::new_random();
    let key = cache.key(Kind::Info, id);

    cache.set_info(id, &info(id, 1)).await.unwrap();
    assert_eq!(cache.get_info(id).await.unwrap(), Some(info(id, 1)), "decoded and kept");
    assert_eq!(cache.get_info(id).await.unwrap(), Some(info(id, 1)), "from the kept value");
    assert_eq!(cache.stats().reused_decodes, 1, "the second read did not decode");

    // Raw bytes written by a client that knows nothing of this cache.
    let codec = Codec::default();
    raw_set(&h, &key, &codec.encode(&info(id, 2), Utc::now()).unwrap()).await;
    assert_eq!(cache.get_info(id).await.unwrap(), Some(info(id, 2)), "raw SET seen at once");
    assert_eq!(cache.get_info(id).await.unwrap(), Some(info(id, 2)), "and kept in turn");
    assert_eq!(cache.stats().reused_decodes, 2);

    // The same value written again: other bytes (a later write time), so a fresh decode.
    let rewritten = codec.encode(&info(id, 2), Utc::now() + chrono::Duration::seconds(1)).unwrap();
    raw_set(&h, &key, &rewritten).await;
    assert_eq!(cache.get_info(id).await.unwrap(), Some(info(id, 2)));
    assert_eq!(cache.stats().reused_decodes, 2, "changed bytes are decoded, not reused");

    // Another process's cache writes, then invalidates.
    let other = other_process(&h).await;
    other.set_info(id, &info(id, 3)).await.unwrap();
    assert_eq!(cache.get_info(id).await.unwrap(), Some(info(id, 3)), "another cache's write");
    other.invalidate(id).await.unwrap();
    assert_eq!(cache.get_info(id).await.unwrap(), None, "another cache's invalidation");

    // Bytes of another kind written under the key: a counted miss, never the kept info.
    raw_set(&h, &key, &codec.encode(&stats(id, 1.0), Utc::now()).unwrap()).await;
    assert_eq!(cache.get_info(id).await.unwrap(), None);
    assert_eq!(cache.stats().corrupt_values, 1);

    // And back to the first value's exact bytes: served correctly again.
    cache.set_info(id, &info(id, 1)).await.unwrap();
    assert_eq!(cache.get_info(id).await.unwrap(), Some(info(id, 1)));
    let counted = cache.stats();
    assert_eq!((counted.hits, counted.misses), (7, 2));
    cache.invalidate(id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_this_caches_own_write_or_invalidation_is_current() {
    let h = Harness::redis("decode-memo-own-writes").await;
    let cache = h.cache(h.config());
    let id = InstanceId::new_random();
    cache.set_stats(id, &stats(id, 1.0)).await.unwrap();
    assert_eq!(cache.get_stats(id).await.unwrap(), Some(stats(id, 1.0)));
    cache.set_stats(id, &stats(id, 2.0)).await.unwrap();
    assert_eq!(cache.get_stats(id).await.unwrap(), Some(stats(id, 2.0)), "own write");
    cache.invalidate(id).await.unwrap();
    assert_eq!(cache.get_stats(id).await.unwrap(), None, "own invalidation");
    let loaded = cache.get_or_load(id, || async { Ok::<_, std::io::Error>(stats(id, 3.0)) }).await;
    assert_eq!(loaded.unwrap(), stats(id, 3.0));
    assert_eq!(cache.get_stats(id).await.unwrap(), Some(stats(id, 3.0)), "own fill");
    assert_eq!(cache.get_stats(id).await.unwrap(), Some(stats(id, 3.0)));
    assert_eq!(cache.stats().reused_decodes, 1, "only the last read reused a decode");
    cache.invalidate(id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memo_keeps_no_more_keys_than_configured() {
    const KEPT: usize = 2;
    const CLUSTERS: usize = 6;
    let h = Harness::redis("decode-memo-bounded").await;
    let mut config = h.config();
    config.decoded_memo_entries = KEPT;
    let cache = h.cache(config);
    let ids: Vec<InstanceId> = (0..CLUSTERS).map(|_| InstanceId::new_random()).collect();
    for &id in &ids {
        cache.set_info(id, &info(id, 2)).await.unwrap();
    }

    for round in 0..3 {
        let before = cache.stats().reused_decodes;
        for &id in &ids {
            assert_eq!(cache.get_info(id).await.unwrap(), Some(info(id, 2)), "round {round}");
        }
        // A key is reused in a round only if it was kept when the round began (each key is read
        // once per round): with at most KEPT keys kept, at most KEPT reuses.
        let reused = cache.stats().reused_decodes - before;
        assert!(reused <= KEPT as u64, "round {round}: {reused} reuses with {KEPT} kept keys");
    }
    // Reading one key again and again reuses it: the memo works at this size.
    let before = cache.stats().reused_decodes;
    for _ in 0..3 {
        assert_eq!(cache.get_info(ids[0]).await.unwrap(), Some(info(ids[0], 2)));
    }
    assert!(cache.stats().reused_decodes - before >= 2);
    for &id in &ids {
        cache.invalidate(id).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memo_of_zero_keys_decodes_every_hit() {
    let h = Harness::redis("decode-memo-off").await;
    let mut config = h.config();
    config.decoded_memo_entries = 0;
    let cache = h.cache(config);
    let id = InstanceId::new_random();
    cache.set_info(id, &info(id, 3)).await.unwrap();
    for _ in 0..3 {
        assert_eq!(cache.get_info(id).await.unwrap(), Some(info(id, 3)));
    }
    let counted = cache.stats();
    assert_eq!((counted.hits, counted.reused_decodes), (3, 0));
    cache.invalidate(id).await.unwrap();
}
