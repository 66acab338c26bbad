//! What the platform reports about a running instance: the three values the cluster cache holds
//! (under `cluster:info:{id}`, `cluster:stats:{id}` and `cluster:replication:{id}`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::InstanceId;
use crate::status::InstanceStatus;

/// The time a view is taken at, to the microsecond: what the cache's binary codec keeps, so a
/// view read from the cache is the fresh one byte for byte.
pub fn observed_now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// Topology and reachability of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The instance described.
    pub instance_id: InstanceId,
    /// Its status when the snapshot was taken.
    pub status: InstanceStatus,
    /// One entry per container.
    pub nodes: Vec<NodeInfo>,
    /// Addresses clients connect to.
    pub endpoints: Vec<Endpoint>,
    /// When this snapshot was taken.
    #[serde(with = "crate::timestamp")]
    pub observed_at: DateTime<Utc>,
}

/// The role a node plays in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// The only node, or the primary of a replicated cluster.
    Primary,
    /// A streaming replica.
    Replica,
    /// The endpoint of a highly available cluster, which clients connect to and which
    /// follows its primary.
    Endpoint,
    /// The store a highly available cluster's members elect their primary through.
    Store,
}

/// One container of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Container name.
    pub name: String,
    /// Container id, when the container exists.
    pub container_id: Option<String>,
    /// Its role.
    pub role: NodeRole,
    /// Whether the container is running.
    pub running: bool,
}

/// A published address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// What it is for (`postgres`, `http`, ...).
    pub name: String,
    /// Host address clients use (loopback by default).
    pub host: String,
    /// Published port.
    pub port: u16,
}

/// Resource use of an instance, summed over its nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStats {
    /// The instance measured.
    pub instance_id: InstanceId,
    /// CPU use in percent of one core (200.0 = two cores busy).
    pub cpu_percent: f64,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Memory limit, bytes.
    pub memory_limit_bytes: u64,
    /// Open client connections, when the service reports them (PostgreSQL does).
    pub connections: Option<u64>,
    /// When the sample was taken.
    #[serde(with = "crate::timestamp")]
    pub observed_at: DateTime<Utc>,
}

/// Replication state of a replicated cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    /// The instance described.
    pub instance_id: InstanceId,
    /// Name of the primary node.
    pub primary: String,
    /// One entry per replica.
    pub replicas: Vec<ReplicaState>,
    /// When it was observed.
    #[serde(with = "crate::timestamp")]
    pub observed_at: DateTime<Utc>,
}

/// One replica as seen from the primary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// Node name.
    pub name: String,
    /// Replication state reported by the primary (`streaming`, `catchup`, ...).
    pub state: String,
    /// Replay lag in bytes of WAL.
    pub lag_bytes: u64,
    /// Replay lag in seconds, when the primary reports it.
    pub lag_seconds: Option<f64>,
}

/// Where the platform reads what it reports about a running instance: the engine itself, or a
/// cache in front of it (both implement this trait, so routers do not care which).
#[async_trait::async_trait]
pub trait ClusterSource: Send + Sync {
    /// Topology and endpoints; [`Error::NotFound`](crate::Error::NotFound) when the instance
    /// has no containers.
    async fn cluster_info(&self, id: InstanceId) -> crate::Result<ClusterInfo>;

    /// Resource use summed over the nodes.
    async fn cluster_stats(&self, id: InstanceId) -> crate::Result<ClusterStats>;

    /// Replication state; [`Error::Unsupported`](crate::Error::Unsupported) for kinds without
    /// replication.
    async fn replication_status(&self, id: InstanceId) -> crate::Result<ReplicationStatus>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_is_observed_to_the_microsecond() {
        assert_eq!(observed_now().timestamp_subsec_nanos() % 1_000, 0);
    }

    fn info() -> ClusterInfo {
        ClusterInfo {
            instance_id: InstanceId::new_random(),
            status: InstanceStatus::Running,
            nodes: vec![],
            endpoints: vec![Endpoint {
                name: "5432/tcp".into(),
                host: "127.0.0.1".into(),
                port: 49153,
            }],
            observed_at: DateTime::from_timestamp(1_800_000_000, 123_456_000).unwrap(),
        }
    }

    #[test]
    fn json_keeps_rfc3339_timestamps() {
        let info = info();
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["observed_at"], "2027-01-15T08:00:00.123456Z");
        assert_eq!(serde_json::from_value::<ClusterInfo>(json).unwrap(), info);
    }
}
