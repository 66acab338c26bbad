//! What can go wrong in the cache, said with the key or backend at fault.
//!
//! Read paths of [`ClusterCache::get_or_load`](crate::ClusterCache::get_or_load) never return a
//! backend error (they degrade to the loader and count it); these errors reach callers of the
//! plain get / set / invalidate calls, where a missed write matters (an invalidation that did
//! not land must be retried).

use std::sync::Arc;

/// A boxed error shared between the callers of one single-flight load.
pub type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Why a cache call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The backend refused or failed the command.
    #[error("{backend} cache backend failed while {operation} (key {key})")]
    Backend {
        /// `"redis"` or `"memory"`.
        backend: &'static str,
        /// What was being done (`"GET"`, `"invalidating"`).
        operation: &'static str,
        /// The (first) key concerned.
        key: String,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The backend did not answer within the per-call timeout.
    #[error(
        "{backend} cache backend did not answer {operation} on key {key} within {timeout_ms} ms"
    )]
    Timeout {
        /// `"redis"`.
        backend: &'static str,
        /// What was being done.
        operation: &'static str,
        /// The (first) key concerned.
        key: String,
        /// The configured timeout.
        timeout_ms: u128,
    },
    /// The backend could not be reached when the store was built.
    #[error("cannot connect to the {backend} cache at {url}")]
    Connect {
        /// `"redis"`.
        backend: &'static str,
        /// Where.
        url: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The loader of a cache-aside read failed; its error is shared by every caller that
    /// waited on the same load.
    #[error("loading {key} failed")]
    Load {
        /// The cache key being filled.
        key: String,
        /// The loader's error.
        #[source]
        source: SharedError,
    },
    /// A value could not be encoded (it does not fit the configured maximum size).
    #[error("cannot encode the value for {key}: {reason}")]
    Encode {
        /// The cache key.
        key: String,
        /// Why.
        reason: String,
    },
}

impl CacheError {
    /// Whether this is a backend failure (error or timeout), the kind the cache degrades on.
    pub fn is_backend(&self) -> bool {
        matches!(self, CacheError::Backend { .. } | CacheError::Timeout { .. })
    }
}

impl From<CacheError> for iaas_core::Error {
    /// Backend failures are `Unavailable` (retry later); the rest are `Internal`.
    fn from(err: CacheError) -> Self {
        match err {
            CacheError::Backend { backend, operation, .. }
            | CacheError::Timeout { backend, operation, .. } => {
                iaas_core::Error::unavailable(backend, operation, err)
            }
            CacheError::Connect { backend, .. } => {
                iaas_core::Error::unavailable(backend, "connecting", err)
            }
            other => iaas_core::Error::Internal {
                operation: "using the cluster cache".to_owned(),
                source: Box::new(other),
            },
        }
    }
}

/// `Result` with [`CacheError`] as the default error.
pub type Result<T, E = CacheError> = std::result::Result<T, E>;
