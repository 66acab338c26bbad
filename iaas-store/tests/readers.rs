//! The SQLite store's reading connections under parallel load: many tasks on several threads,
//! far more reads in flight than connections, and not one read refused.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use std::sync::Arc;

use iaas_core::{InstanceRepository, UserId};
use iaas_store::{SqliteConfig, SqliteStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_reads_wait_their_turn_and_none_is_refused() {
    let dir = std::env::temp_dir().join(format!("iaas-readers-{}", UserId::new_random()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Arc::new(SqliteStore::open(&SqliteConfig::new(dir.join("iaas.db"))).await.unwrap());
    let owner = UserId::new_random();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut refused = Vec::new();
                for _ in 0..300 {
                    if let Err(error) = store.list_instances_by_owner(owner).await {
                        refused.push(error.to_string());
                    }
                }
                refused
            })
        })
        .collect();
    let mut refused = Vec::new();
    for task in tasks {
        refused.extend(task.await.unwrap());
    }
    assert!(refused.is_empty(), "{} reads refused, first: {:?}", refused.len(), refused.first());
    std::fs::remove_dir_all(&dir).unwrap();
}
