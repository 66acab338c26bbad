//! Settings of the Docker runtime.

use std::time::Duration;

use iaas_core::HostPortPolicy;

use crate::catalog::ImageCatalog;
use crate::confinement;

/// Settings of the Docker runtime.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DockerRuntimeConfig {
    /// Images per kind.
    pub catalog: ImageCatalog,
    /// Host address published ports bind to (default `127.0.0.1`: nothing is reachable from
    /// other machines unless configured).
    pub publish_host: String,
    /// Grace between SIGTERM and SIGKILL on stop (default 10 s).
    pub stop_timeout: Duration,
    /// Prefix of every container, volume and network name (default `iaas`).
    pub name_prefix: String,
    /// How long provisioning waits for a PostgreSQL primary to accept connections before it
    /// creates the replicas (default 120 s).
    pub ready_timeout: Duration,
    /// How long one command run inside a container (`psql`, `pg_isready`) may take
    /// (default 30 s).
    pub exec_timeout: Duration,
    /// How long one base backup of a highly available cluster may take (default 1 h).
    pub backup_timeout: Duration,
    /// Which host ports a spec may choose (default [`HostPortPolicy::default`]: 20000-29999,
    /// the platform's well-known ports refused).
    pub host_ports: HostPortPolicy,
    /// Most processes one container may run (default 512).
    pub pids_limit: i64,
}

impl Default for DockerRuntimeConfig {
    fn default() -> Self {
        Self {
            catalog: ImageCatalog::default(),
            publish_host: "127.0.0.1".to_owned(),
            stop_timeout: Duration::from_secs(10),
            name_prefix: "iaas".to_owned(),
            ready_timeout: Duration::from_secs(120),
            exec_timeout: Duration::from_secs(30),
            backup_timeout: Duration::from_secs(3600),
            host_ports: HostPortPolicy::default(),
            pids_limit: confinement::DEFAULT_PIDS_LIMIT,
        }
    }
}
