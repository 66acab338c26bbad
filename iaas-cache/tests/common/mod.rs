//! Builds each backend for the shared suites: the in-process store on a manual clock, and a
//! Redis store on the test server with a key prefix no other test uses.

#![allow(dead_code, unreachable_pub, reason = "each test binary uses part of this shared module")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use iaas_cache::{
    CacheStore, ClusterCache, ClusterCacheConfig, MemoryStore, MemoryStoreConfig, RedisStore,
    RedisStoreConfig,
};
use iaas_core::{
    ClusterInfo, ClusterStats, Endpoint, InstanceId, InstanceStatus, ManualClock, NodeInfo,
    NodeRole, ReplicaState, ReplicationStatus,
};
use iaas_testkit::isolation::key_prefix;
use iaas_testkit::wait::eventually;

/// Functional tests use a generous timeout: the shared server on a 2-core machine under a
/// parallel test run can answer slower than the 50 ms production default. The degradation
/// test uses the default.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(2);

/// One backend, ready for a test.
pub struct Harness {
    pub store: Arc<dyn CacheStore>,
    pub prefix: String,
    /// Set for the in-process store: time moves only when the test says so.
    pub clock: Option<Arc<ManualClock>>,
    _server: Option<iaas_testkit::Service>,
}

impl Harness {
    pub fn memory(test: &str) -> Self {
        let clock = Arc::new(ManualClock::new(start_time()));
        let store = MemoryStore::new(MemoryStoreConfig::default()).with_clock(clock.clone());
        Self { store: Arc::new(store), prefix: key_prefix(test), clock: Some(clock), _server: None }
    }

    pub async fn redis(test: &str) -> Self {
        let server = iaas_testkit::redis().await.unwrap();
        let store =
            RedisStore::connect(&RedisStoreConfig::new(server.url()).with_timeout(TEST_TIMEOUT))
                .await
                .unwrap();
        Self {
            store: Arc::new(store),
            prefix: key_prefix(test),
            clock: None,
            _server: Some(server),
        }
    }

    /// The URL of the Redis server behind a Redis harness (`None` for the in-process one).
    pub fn redis_url(&self) -> Option<String> {
        self._server.as_ref().map(|server| server.url().to_owned())
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn config(&self) -> ClusterCacheConfig {
        let mut config = ClusterCacheConfig::with_prefix(self.prefix.clone());
        config.generation_ttl = Duration::from_secs(60);
        config
    }

    pub fn cache(&self, config: ClusterCacheConfig) -> ClusterCache {
        ClusterCache::new(self.store.clone(), config)
    }

    /// Lets `ttl` pass: moves the manual clock past it, or waits (polling, with a deadline)
    /// until Redis expired `key`.
    pub async fn let_expire(&self, key: &str, ttl: Duration) {
        match &self.clock {
            Some(clock) => clock.advance(
                chrono::Duration::from_std(ttl).unwrap() + chrono::Duration::milliseconds(1),
            ),
            None => {
                eventually(ttl + Duration::from_secs(5), || async {
                    match self.store.get(key).await {
                        Ok(None) => Ok(()),
                        other => Err(format!("{key} still there: {other:?}")),
                    }
                })
                .await
                .unwrap();
            }
        }
    }
}

pub fn start_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

pub fn info(id: InstanceId, nodes: usize) -> ClusterInfo {
    ClusterInfo {
        instance_id: id,
        status: InstanceStatus::Running,
        nodes: (0..nodes)
            .map(|i| NodeInfo {
                name: format!("iaas-db-{i}"),
                container_id: Some(format!("c0ffee{i:06}")),
                role: if i == 0 { NodeRole::Primary } else { NodeRole::Replica },
                running: true,
            })
            .collect(),
        endpoints: vec![Endpoint {
            name: "postgres".into(),
            host: "127.0.0.1".into(),
            port: 55432,
        }],
        observed_at: start_time(),
    }
}

pub fn stats(id: InstanceId, cpu: f64) -> ClusterStats {
    ClusterStats {
        instance_id: id,
        cpu_percent: cpu,
        memory_bytes: 256 << 20,
        memory_limit_bytes: 1 << 30,
        connections: Some(12),
        observed_at: start_time(),
    }
}

pub fn replication(id: InstanceId) -> ReplicationStatus {
    ReplicationStatus {
        instance_id: id,
        primary: "iaas-db-0".into(),
        replicas: vec![ReplicaState {
            name: "iaas-db-1".into(),
            state: "streaming".into(),
            lag_bytes: 0,
            lag_seconds: Some(0.0),
        }],
        observed_at: start_time(),
    }
}

/// Counts the calls (round trips) made to the store it wraps.
#[derive(Debug)]
pub struct CountingStore {
    pub inner: Arc<dyn CacheStore>,
    pub calls: AtomicUsize,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn CacheStore>) -> Self {
        Self { inner, calls: AtomicUsize::new(0) }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl CacheStore for CountingStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn get(&self, key: &str) -> iaas_cache::Result<Option<Vec<u8>>> {
        self.count();
        self.inner.get(key).await
    }
    async fn get_many(&self, keys: &[String]) -> iaas_cache::Result<Vec<Option<Vec<u8>>>> {
        self.count();
        self.inner.get_many(keys).await
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> iaas_cache::Result<()> {
        self.count();
        self.inner.set(key, value, ttl).await
    }
    async fn get_with_generation(
        &self,
        key: &str,
        generation_key: &str,
    ) -> iaas_cache::Result<(Option<Vec<u8>>, Option<u64>)> {
        self.count();
        self.inner.get_with_generation(key, generation_key).await
    }
    async fn set_if_generation(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        generation_key: &str,
        expected: Option<u64>,
    ) -> iaas_cache::Result<bool> {
        self.count();
        self.inner.set_if_generation(key, value, ttl, generation_key, expected).await
    }
    async fn delete_many(&self, keys: &[String]) -> iaas_cache::Result<u64> {
        self.count();
        self.inner.delete_many(keys).await
    }
    async fn invalidate(
        &self,
        keys: &[String],
        generation_key: &str,
        generation_ttl: Duration,
    ) -> iaas_cache::Result<()> {
        self.count();
        self.inner.invalidate(keys, generation_key, generation_ttl).await
    }
}

/// Instantiates a generic test body `$body(harness)` for the in-process and Redis backends.
#[macro_export]
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::common::Harness::memory(stringify!($test))).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::common::Harness::redis(stringify!($test)).await).await;
                }
            )*
        }
    };
}
