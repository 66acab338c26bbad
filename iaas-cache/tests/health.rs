//! The Redis health targets, read from a real server's `INFO`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use std::time::Duration;

use iaas_cache::{RedisStore, RedisStoreConfig, redis_health};
use iaas_testkit::isolation::key_prefix;

#[tokio::test]
async fn health_is_read_from_info() {
    let server = iaas_testkit::redis().await.unwrap();
    let store = RedisStore::connect(
        &RedisStoreConfig::new(server.url()).with_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    let mut conn = store.connection();
    // One hit and one miss, so the server has keyspace lookups to report.
    let key = format!("{}probe", key_prefix("health"));
    redis::cmd("SET")
        .arg(&key)
        .arg("1")
        .arg("PX")
        .arg(60_000)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    redis::cmd("GET").arg(&key).query_async::<Option<String>>(&mut conn).await.unwrap();
    redis::cmd("GET")
        .arg(format!("{key}:absent"))
        .query_async::<Option<String>>(&mut conn)
        .await
        .unwrap();

    let first = redis_health(&mut conn).await.unwrap();
    assert!(first.used_memory > 0, "{first:?}");
    let ratio = first.keyspace_hit_ratio().expect("lookups were made");
    assert!((0.0..=1.0).contains(&ratio), "{ratio}");
    assert!(first.keyspace_hits >= 1 && first.keyspace_misses >= 1, "{first:?}");
    if first.maxmemory > 0 {
        assert!(first.memory_ratio().unwrap() > 0.0);
    } else {
        assert_eq!(first.memory_ratio(), None, "no maxmemory: no ratio");
    }
    let second = redis_health(&mut conn).await.unwrap();
    assert!(second.evictions_per_second(&first, Duration::from_secs(1)) >= 0.0);
    redis::cmd("DEL").arg(&key).query_async::<()>(&mut conn).await.unwrap();
}
