//! iaas-cache in a tokio program of your own: cache-aside reads of cluster stats through the
//! in-process store, without iaas-platform.
//!
//! A slow stand-in for the container engine counts how often it is asked. The example reads
//! through the cache (a miss loads and fills, a hit does not ask the engine), lets ten tasks miss
//! on the same cold key at once (they share one load), then hands a `restarted` event to the
//! cache's invalidating event handler and reads again (the engine is asked afresh), and ends
//! with the cache's counters.
//!
//! Run it with `cargo run -p iaas-cache --example cache_aside`. It needs nothing but this crate
//! (and iaas-core, whose types it caches): the in-process store needs no server. For several
//! processes sharing one cache, put a `RedisStore` where the `MemoryStore` is.
#![allow(clippy::print_stdout, reason = "an example reports what it did")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::Utc;
use iaas_cache::{CacheInvalidator, ClusterCache, ClusterCacheConfig, MemoryStore};
use iaas_core::{
    ClusterStats, EventAction, EventHandler, InfrastructureEvent, InstanceId, InstanceKind, UserId,
    observed_now,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = ClusterCacheConfig::with_prefix("example:").with_ttl(Duration::from_secs(60));
    let cache = ClusterCache::new(Arc::new(MemoryStore::default()), config);
    let engine = Arc::new(Engine::default());
    let db = InstanceId::new_random();

    // Cache-aside: the first read misses and loads, the second is served from the cache.
    let stats = cache.get_or_load(db, || engine.stats(db)).await?;
    println!("first read: {:.1} % CPU; engine asked {} time(s)", stats.cpu_percent, engine.reads());
    let stats = cache.get_or_load(db, || engine.stats(db)).await?;
    println!(
        "second read: {:.1} % CPU; engine asked {} time(s)",
        stats.cpu_percent,
        engine.reads()
    );

    // Single flight: ten tasks missing on one cold key at once run one load between them.
    let web = InstanceId::new_random();
    let before = engine.reads();
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (cache, engine) = (cache.clone(), Arc::clone(&engine));
        readers.spawn(async move { cache.get_or_load(web, || engine.stats(web)).await });
    }
    while let Some(read) = readers.join_next().await {
        read??;
    }
    println!("10 concurrent reads of a cold key: engine asked {} time(s)", engine.reads() - before);

    // Invalidation by event: the instance restarted, so its cached views go.
    let invalidator = CacheInvalidator::new(cache.clone());
    let restarted = InfrastructureEvent::new(
        db,
        UserId::new_random(),
        InstanceKind::Postgres,
        EventAction::Restarted,
        Utc::now(),
    );
    invalidator.handle(&restarted).await?;
    let cached = cache.get_stats(db).await?.is_some();
    println!("after {}: stats still cached: {cached}", restarted.name());
    cache.get_or_load(db, || engine.stats(db)).await?;
    println!("read after the restart: engine asked {} time(s) in all", engine.reads());

    let counters = cache.stats();
    println!(
        "cache: {} hit(s), {} misses served by {} load(s), {} invalidation(s)",
        counters.hits, counters.misses, counters.loads, counters.invalidations,
    );
    Ok(())
}

/// Stands in for the slow source of truth (the container engine's `stats` call) and counts how
/// often it is asked.
#[derive(Debug, Default)]
struct Engine {
    reads: AtomicU32,
}

impl Engine {
    async fn stats(&self, id: InstanceId) -> Result<ClusterStats, std::io::Error> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(ClusterStats {
            instance_id: id,
            cpu_percent: 12.5,
            memory_bytes: 96 << 20,
            memory_limit_bytes: 256 << 20,
            connections: Some(3),
            observed_at: observed_now(),
        })
    }

    fn reads(&self) -> u32 {
        self.reads.load(Ordering::SeqCst)
    }
}
