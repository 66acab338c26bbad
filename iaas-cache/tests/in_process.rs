//! The in-process hit path: entries are read in place and their decoded value is kept beside
//! their bytes. The kept value must follow the bytes exactly: gone on invalidation (by call
//! and by event) and on expiry, replaced by any write, never brought back by a stale fill, and
//! equal to what was stored, on the first read and on every later one.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{Harness, info, replication, stats};
use iaas_cache::{CacheInvalidator, Codec, Kind};
use iaas_core::{
    ClusterInfo, EventAction, EventHandler, InfrastructureEvent, InstanceId, InstanceKind,
    NodeInfo, NodeRole, UserId,
};
use tokio::sync::oneshot;

fn event(id: InstanceId, action: EventAction) -> InfrastructureEvent {
    InfrastructureEvent::new(id, UserId::new_random(), InstanceKind::Postgres, action, Utc::now())
}

#[tokio::test]
async fn an_invalidating_event_removes_the_kept_value() {
    let h = Harness::memory("in-process-event");
    let cache = h.cache(h.config());
    let handler = CacheInvalidator::new(cache.clone());
    let id = InstanceId::new_random();
    cache.set_info(id, &info(id, 3)).await.unwrap();
    assert_eq!(cache.get_info(id).await.unwrap(), Some(info(id, 3)), "decoded and kept");
    assert_eq!(cache.get_info(id).await.unwrap(), Some(info(id, 3)), "served from the kept value");

    handler.handle(&event(id, EventAction::NodeAdded)).await.unwrap();

    assert_eq!(cache.get_info(id).await.unwrap(), None);
    assert_eq!(h.store.get(&cache.key(Kind::Info, id)).await.unwrap(), None, "bytes gone too");
    let fresh = cache.get_or_load(id, || async { Ok::<_, std::io::Error>(info(id, 4)) }).await;
    assert_eq!(fresh.unwrap(), info(id, 4));
    assert_eq!(cache.get_info(id).await.unwrap(), Some(info(id, 4)), "the reload, not the old one");
    let counted = cache.stats();
    assert_eq!((counted.hits, counted.misses, counted.loads), (3, 2, 1));
}

#[tokio::test]
async fn a_kept_value_expires_with_its_bytes() {
    let h = Harness::memory("in-process-expiry");
    let mut config = h.config();
    config.stats_ttl = Duration::from_secs(10);
    let cache = h.cache(config);
    let id = InstanceId::new_random();
    cache.set_stats(id, &stats(id, 7.0)).await.unwrap();
    assert_eq!(cache.get_stats(id).await.unwrap(), Some(stats(id, 7.0)));

    let clock = h.clock.clone().unwrap();
    clock.advance(chrono::Duration::milliseconds(9_999));
    assert_eq!(cache.get_stats(id).await.unwrap(), Some(stats(id, 7.0)), "still inside its TTL");
    clock.advance(chrono::Duration::milliseconds(2));
    assert_eq!(cache.get_stats(id).await.unwrap(), None, "expired, although it was kept decoded");
}

#[tokio::test]
async fn any_write_replaces_the_kept_value() {
    let h = Harness::memory("in-process-overwrite");
    let cache = h.cache(h.config());
    let id = InstanceId::new_random();
    let key = cache.key(Kind::Stats, id);
    cache.set_stats(id, &stats(id, 1.0)).await.unwrap();
    assert_eq!(cache.get_stats(id).await.unwrap(), Some(stats(id, 1.0)));

    cache.set_stats(id, &stats(id, 2.0)).await.unwrap();
    assert_eq!(cache.get_stats(id).await.unwrap(), Some(stats(id, 2.0)), "typed write");

    // Bytes written straight to the store (another writer): a value of another kind under this
    // key is a counted miss, not the previously kept stats.
    let foreign = Codec::default().encode(&replication(id), Utc::now()).unwrap();
    h.store.set(&key, &foreign, Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get_stats(id).await.unwrap(), None, "byte-level write");
    assert_eq!(cache.stats().corrupt_values, 1);

    let good = Codec::default().encode(&stats(id, 3.0), Utc::now()).unwrap();
    h.store.set(&key, &good, Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get_stats(id).await.unwrap(), Some(stats(id, 3.0)));
}

#[tokio::test]
async fn a_stale_fill_does_not_replace_a_newer_kept_value() {
    let h = Harness::memory("in-process-stale-fill");
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
                    Ok::<_, std::io::Error>(info(id, 1))
                })
                .await
        }
    });
    started_rx.await.unwrap();
    cache.invalidate(id).await.unwrap();
    cache.set_info(id, &info(id, 2)).await.unwrap();
    assert_eq!(cache.get_info(id).await.unwrap(), Some(info(id, 2)), "newer value, now kept");
    release_tx.send(()).unwrap();

    assert_eq!(slow.await.unwrap().unwrap(), info(id, 1), "the slow caller gets its own answer");
    assert_eq!(cache.get_info(id).await.unwrap(), Some(info(id, 2)), "the newer value stays");
    assert_eq!(cache.stats().stale_fills, 1);
}

#[tokio::test]
async fn returned_values_equal_what_was_stored_and_are_the_callers_own() {
    let h = Harness::memory("in-process-equal");
    let mut config = h.config();
    // Large values are LZ4-compressed in the bytes; the kept value must not care.
    config.codec.compress_above = 64;
    let cache = h.cache(config);
    let id = InstanceId::new_random();
    let mut big = info(id, 1);
    big.nodes = (0..300)
        .map(|i| NodeInfo {
            name: format!("iaas-web-{i}"),
            container_id: (i % 2 == 0).then(|| format!("c{i:011}")),
            role: NodeRole::Replica,
            running: i % 3 != 0,
        })
        .collect();
    cache.set_info(id, &big).await.unwrap();
    cache.set_stats(id, &stats(id, 12.5)).await.unwrap();
    cache.set_replication(id, &replication(id)).await.unwrap();

    for read in 0..3 {
        let mut got: ClusterInfo = cache.get_info(id).await.unwrap().unwrap();
        assert_eq!(got, big, "read {read}");
        got.nodes.clear(); // the caller's copy: changing it must not reach the cache
        assert_eq!(cache.get_stats(id).await.unwrap(), Some(stats(id, 12.5)), "read {read}");
        assert_eq!(cache.get_replication(id).await.unwrap(), Some(replication(id)), "read {read}");
    }
    assert_eq!(cache.get_info(id).await.unwrap().unwrap().nodes.len(), 300);
}
