//! The consumer side of invalidation: an [`EventHandler`] that drops a cluster's cached values
//! when an event says they changed.
//!
//! Invalidates on started / stopped / restarted / deleted / failed, node added / removed,
//! configuration change and failover. Other actions (`created`, unknown ones) leave the cache alone: nothing is
//! cached for an instance before it runs, and an unknown action is no reason to flush.
//! Invalidation is idempotent, so redelivered events are harmless. A backend failure is
//! [`HandlerError::Transient`]: the consumer retries the event instead of moving on with a
//! stale cache.

use async_trait::async_trait;
use iaas_core::{EventAction, EventHandler, HandlerError, InfrastructureEvent};

use crate::cluster::ClusterCache;

/// Invalidates a cluster's cache keys on the events that change them.
#[derive(Debug, Clone)]
pub struct CacheInvalidator {
    cache: ClusterCache,
}

impl CacheInvalidator {
    /// A handler invalidating entries of `cache`.
    pub fn new(cache: ClusterCache) -> Self {
        Self { cache }
    }

    /// Whether an event with `action` invalidates its cluster.
    pub fn invalidates(action: &EventAction) -> bool {
        matches!(
            action,
            EventAction::Started
                | EventAction::Stopped
                | EventAction::Restarted
                | EventAction::Failed
                | EventAction::Deleted
                | EventAction::NodeAdded
                | EventAction::NodeRemoved
                | EventAction::ConfigChanged
                | EventAction::Failover
        )
    }
}

#[async_trait]
impl EventHandler for CacheInvalidator {
    fn name(&self) -> &str {
        "cluster-cache-invalidator"
    }

    async fn handle(&self, event: &InfrastructureEvent) -> Result<(), HandlerError> {
        if !Self::invalidates(&event.action) {
            return Ok(());
        }
        self.cache.invalidate(event.instance_id).await.map_err(|err| {
            tracing::warn!(
                event_id = %event.id,
                instance_id = %event.instance_id,
                event = %event.name(),
                error = %err,
                "cache invalidation failed; the event will be retried"
            );
            HandlerError::Transient(Box::new(err))
        })
    }
}
