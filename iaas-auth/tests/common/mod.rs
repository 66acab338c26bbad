//! Builds each session backend for the shared suites: a fresh in-process store, or a Redis
//! store on the test server under a key prefix no other test uses.

#![allow(dead_code, unreachable_pub, reason = "each test binary uses part of this shared module")]

use std::sync::Arc;

use chrono::{DateTime, Utc};
use iaas_auth::{RedisSessionConfig, RedisSessionStore, SessionStore};
use iaas_testkit::isolation::key_prefix;

pub fn start_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

/// A Redis store on the shared test server, isolated by a unique key prefix.
pub async fn redis_store(test: &str) -> (RedisSessionStore, iaas_testkit::Service) {
    let server = iaas_testkit::redis().await.unwrap();
    let config = RedisSessionConfig::new(server.url()).with_key_prefix(key_prefix(test));
    let store = RedisSessionStore::connect(config).await.unwrap();
    (store, server)
}

/// Instantiates a generic test body `$test(store: Arc<dyn SessionStore>)` for every backend.
#[macro_export]
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(std::sync::Arc::new(iaas_auth::MemorySessionStore::new())).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let (store, _server) = $crate::common::redis_store(stringify!($test)).await;
                    super::$test(std::sync::Arc::new(store)).await;
                }
            )*
        }
    };
}

pub type Store = Arc<dyn SessionStore>;
