//! [`CachedClusterSource`]: any [`ClusterSource`] behind the cluster cache.
//!
//! Routers read cluster info, stats and replication through the core trait; the platform hands
//! them this decorator around the engine, so every read is cache-aside (single flight,
//! degradation to the source when the cache backend fails) without the router knowing.

use std::sync::Arc;

use async_trait::async_trait;
use iaas_core::{
    ClusterInfo, ClusterSource, ClusterStats, Error, InstanceId, ReplicationStatus, Result,
};

use crate::cluster::ClusterCache;
use crate::error::CacheError;

/// A [`ClusterSource`] that answers from the cache and loads misses from `source`.
#[derive(Clone)]
pub struct CachedClusterSource {
    cache: ClusterCache,
    source: Arc<dyn ClusterSource>,
}

impl std::fmt::Debug for CachedClusterSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedClusterSource").finish_non_exhaustive()
    }
}

impl CachedClusterSource {
    /// Reads through `cache`, loading from `source`.
    pub fn new(cache: ClusterCache, source: Arc<dyn ClusterSource>) -> Self {
        Self { cache, source }
    }
}

/// The source's own error survives the cache: a missing instance stays `NotFound` (404), an
/// unsupported read stays `Unsupported`, a read of a stopped instance stays `Conflict` (409),
/// an engine outage stays `Unavailable`.
fn from_load(err: CacheError) -> Error {
    let CacheError::Load { source, .. } = &err else { return err.into() };
    match source.downcast_ref::<Error>() {
        Some(Error::NotFound { entity, id }) => Error::NotFound { entity, id: id.clone() },
        Some(Error::Unsupported { what }) => Error::Unsupported { what: what.clone() },
        Some(Error::Invalid { field, reason }) => Error::Invalid { field, reason: reason.clone() },
        Some(Error::Conflict { entity, id, reason }) => {
            Error::Conflict { entity, id: id.clone(), reason: reason.clone() }
        }
        Some(Error::Unavailable { backend, operation, .. }) => {
            Error::unavailable(backend, operation.clone(), err)
        }
        _ => {
            Error::Internal { operation: "reading cluster state".to_owned(), source: Box::new(err) }
        }
    }
}

#[async_trait]
impl ClusterSource for CachedClusterSource {
    async fn cluster_info(&self, id: InstanceId) -> Result<ClusterInfo> {
        self.cache.get_or_load(id, || self.source.cluster_info(id)).await.map_err(from_load)
    }

    async fn cluster_stats(&self, id: InstanceId) -> Result<ClusterStats> {
        self.cache.get_or_load(id, || self.source.cluster_stats(id)).await.map_err(from_load)
    }

    async fn replication_status(&self, id: InstanceId) -> Result<ReplicationStatus> {
        self.cache.get_or_load(id, || self.source.replication_status(id)).await.map_err(from_load)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use chrono::Utc;
    use iaas_core::InstanceStatus;

    use super::*;
    use crate::cluster::ClusterCacheConfig;
    use crate::store::MemoryStore;

    /// An engine that counts its reads and knows one instance.
    struct Engine {
        known: InstanceId,
        reads: AtomicU32,
    }

    #[async_trait]
    impl ClusterSource for Engine {
        async fn cluster_info(&self, id: InstanceId) -> Result<ClusterInfo> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if id != self.known {
                return Err(Error::not_found("instance", id));
            }
            Ok(ClusterInfo {
                instance_id: id,
                status: InstanceStatus::Running,
                nodes: vec![],
                endpoints: vec![],
                observed_at: Utc::now(),
            })
        }

        async fn cluster_stats(&self, id: InstanceId) -> Result<ClusterStats> {
            Err(Error::unavailable("docker", format!("reading stats of {id}"), "engine down"))
        }

        async fn replication_status(&self, id: InstanceId) -> Result<ReplicationStatus> {
            if id == self.known {
                Err(Error::Unsupported { what: "replication of nginx".into() })
            } else {
                Err(Error::conflict("instance", id, "it is stopped"))
            }
        }
    }

    #[tokio::test]
    async fn hits_skip_the_engine_and_errors_keep_their_kind() {
        let engine = Arc::new(Engine { known: InstanceId::new_random(), reads: AtomicU32::new(0) });
        let cache =
            ClusterCache::new(Arc::new(MemoryStore::default()), ClusterCacheConfig::default());
        let source = CachedClusterSource::new(cache, engine.clone());

        source.cluster_info(engine.known).await.unwrap();
        source.cluster_info(engine.known).await.unwrap();
        assert_eq!(engine.reads.load(Ordering::SeqCst), 1, "the second read was a hit");

        assert!(matches!(
            source.cluster_info(InstanceId::new_random()).await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            source.cluster_stats(engine.known).await,
            Err(Error::Unavailable { backend: "docker", .. })
        ));
        assert!(matches!(
            source.replication_status(engine.known).await,
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            source.replication_status(InstanceId::new_random()).await,
            Err(Error::Conflict { entity: "instance", .. })
        ));
    }
}
