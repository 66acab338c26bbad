//! The invalidation handler on every backend: which events drop a cluster's keys, which do not,
//! and a backend failure asks the consumer to retry.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{Harness, info, replication, stats};
use iaas_cache::{
    CacheInvalidator, ClusterCache, ClusterCacheConfig, RedisStore, RedisStoreConfig,
};
use iaas_core::{EventAction, EventHandler, InfrastructureEvent, InstanceId, InstanceKind, UserId};

on_every_backend!(events_that_change_a_cluster_invalidate_it, other_events_leave_the_cache_alone,);

const INVALIDATING: [EventAction; 9] = [
    EventAction::Started,
    EventAction::Stopped,
    EventAction::Restarted,
    EventAction::Failed,
    EventAction::Deleted,
    EventAction::NodeAdded,
    EventAction::NodeRemoved,
    EventAction::ConfigChanged,
    EventAction::Failover,
];

fn event(id: InstanceId, action: EventAction) -> InfrastructureEvent {
    InfrastructureEvent::new(id, UserId::new_random(), InstanceKind::Postgres, action, Utc::now())
}

async fn fill(cache: &ClusterCache, id: InstanceId) {
    cache.set_info(id, &info(id, 2)).await.unwrap();
    cache.set_stats(id, &stats(id, 3.0)).await.unwrap();
    cache.set_replication(id, &replication(id)).await.unwrap();
}

async fn events_that_change_a_cluster_invalidate_it(h: Harness) {
    let cache = h.cache(h.config());
    let handler = CacheInvalidator::new(cache.clone());
    assert_eq!(handler.name(), "cluster-cache-invalidator");
    for action in INVALIDATING {
        let id = InstanceId::new_random();
        fill(&cache, id).await;
        handler.handle(&event(id, action.clone())).await.unwrap();
        assert_eq!(cache.get_info(id).await.unwrap(), None, "{action}");
        assert_eq!(cache.get_stats(id).await.unwrap(), None, "{action}");
        assert_eq!(cache.get_replication(id).await.unwrap(), None, "{action}");
        // Redelivery is harmless.
        handler.handle(&event(id, action)).await.unwrap();
    }
}

async fn other_events_leave_the_cache_alone(h: Harness) {
    let cache = h.cache(h.config());
    let handler = CacheInvalidator::new(cache.clone());
    let id = InstanceId::new_random();
    fill(&cache, id).await;
    for action in [EventAction::Created, EventAction::Other("backup_taken".into())] {
        handler.handle(&event(id, action)).await.unwrap();
    }
    assert_eq!(cache.get_info(id).await.unwrap(), Some(info(id, 2)));
    assert_eq!(cache.stats().invalidations, 0);
    cache.invalidate(id).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_backend_is_a_transient_failure() {
    // Nothing listens on port 1: every call fails, so the consumer must retry the event.
    let config =
        RedisStoreConfig::new("redis://127.0.0.1:1").with_timeout(Duration::from_millis(200));
    let store = RedisStore::lazy(&config).unwrap();
    let cache = ClusterCache::new(Arc::new(store), ClusterCacheConfig::default());
    let handler = CacheInvalidator::new(cache.clone());
    let err =
        handler.handle(&event(InstanceId::new_random(), EventAction::Stopped)).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(cache.stats().backend_errors, 1);
}
