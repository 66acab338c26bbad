//! Redis going away and coming back, on a private `redis-server` process (never the shared
//! server): reads are answered from the loader while Redis is down, each failure counted; once
//! Redis is back on the same port the cache is used again, without rebuilding anything.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::stats;
use iaas_cache::{ClusterCache, ClusterCacheConfig, RedisStore, RedisStoreConfig};
use iaas_core::{ClusterStats, InstanceId};
use iaas_testkit::wait::eventually;
use tokio::process::{Child, Command};

/// A throwaway Redis on a fixed loopback port, killed when dropped.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = Self { port, child: None };
        redis.restart().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (scripts/services.sh installs it)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        eventually(Duration::from_secs(10), || async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await
        .unwrap();
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_redis_going_away_and_use_it_again_when_it_returns() {
    let mut server = PrivateRedis::start().await;
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

    // Up: the first read loads and fills, the second hits.
    assert_eq!(cache.get_or_load(id, load()).await.unwrap(), stats(id, 7.0));
    assert_eq!(cache.get_or_load(id, load()).await.unwrap(), stats(id, 7.0));
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats().backend_errors, 0);

    // Down: every read is still answered, from the loader, quickly; errors are counted.
    server.stop().await;
    let mut previous_errors = 0;
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
    assert_eq!(loads.load(Ordering::SeqCst), 6, "each degraded read went to the source");

    // Back (empty, same port): the same cache reconnects and fills again, then hits.
    server.restart().await;
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
    server.stop().await;
}
