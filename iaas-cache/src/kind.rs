//! The three kinds of value the cluster cache holds, and how each is named in keys and metrics.
//!
//! The cache holds `cluster:info:{id}`, `cluster:stats:{id}` and `cluster:replication:{id}`;
//! [`CachedValue`] ties each core type to its [`Kind`], so the typed API cannot store stats
//! under an info key, and the codec tags every value with its kind so a value found under the
//! wrong key (a foreign writer, a bug) decodes as a miss instead of as the wrong thing.

use iaas_core::{ClusterInfo, ClusterStats, ReplicationStatus};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Which of the three cached values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// [`ClusterInfo`]: nodes, endpoints, status.
    Info,
    /// [`ClusterStats`]: CPU, memory, connections.
    Stats,
    /// [`ReplicationStatus`]: primary, replicas, lag.
    Replication,
}

impl Kind {
    /// Every kind, in key order.
    pub const ALL: [Kind; 3] = [Kind::Info, Kind::Stats, Kind::Replication];

    /// The name used in keys (`cluster:{name}:{id}`) and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Info => "info",
            Kind::Stats => "stats",
            Kind::Replication => "replication",
        }
    }

    /// The tag byte the codec writes (never 0, so zeroed bytes are never a valid tag).
    pub(crate) const fn tag(self) -> u8 {
        match self {
            Kind::Info => 1,
            Kind::Stats => 2,
            Kind::Replication => 3,
        }
    }

    /// The position of this kind in [`Kind::ALL`].
    pub(crate) const fn index(self) -> usize {
        match self {
            Kind::Info => 0,
            Kind::Stats => 1,
            Kind::Replication => 2,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for iaas_core::ClusterInfo {}
    impl Sealed for iaas_core::ClusterStats {}
    impl Sealed for iaas_core::ReplicationStatus {}
}

/// A value the cluster cache can hold: one of [`ClusterInfo`], [`ClusterStats`] and
/// [`ReplicationStatus`] (the set is closed).
pub trait CachedValue:
    sealed::Sealed + Serialize + DeserializeOwned + Clone + Send + Sync + 'static
{
    /// Its kind.
    const KIND: Kind;
}

impl CachedValue for ClusterInfo {
    const KIND: Kind = Kind::Info;
}

impl CachedValue for ClusterStats {
    const KIND: Kind = Kind::Stats;
}

impl CachedValue for ReplicationStatus {
    const KIND: Kind = Kind::Replication;
}
