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
    /// Where highly available clusters keep their backups and archived WAL: an S3 bucket
    /// when set, each cluster's own volume when not (the default).
    pub backup_s3: Option<S3Repository>,
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
            backup_s3: None,
        }
    }
}

/// An S3 bucket (or an S3-compatible server's) for backups and archived WAL, shared by every
/// cluster: each keeps its own pgBackRest stanza (`pg-<instance id>`) in it, so a restore
/// finds its source's backups by the source's id. pgBackRest speaks S3 over HTTPS only, with
/// path-style requests.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct S3Repository {
    /// The server's host name (`s3.eu-west-1.amazonaws.com`, or a gateway's), as its
    /// certificate names it.
    pub endpoint: String,
    /// Its HTTPS port (443 when `None`).
    pub port: Option<u16>,
    /// The bucket.
    pub bucket: String,
    /// The bucket's region.
    pub region: String,
    /// The path in the bucket under which every stanza lives (`/` for the whole bucket).
    pub path: String,
    /// The access key id.
    pub key: String,
    /// The secret access key.
    pub secret: String,
    /// CA certificates (PEM) the server's certificate is checked against instead of the
    /// system's.
    pub ca_pem: Option<String>,
}

impl S3Repository {
    /// `bucket` on `endpoint` (port 443, region `us-east-1`, path `/`, the system's CAs), with
    /// the key pair `key` / `secret`.
    pub fn new(
        endpoint: impl Into<String>,
        bucket: impl Into<String>,
        key: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            port: None,
            bucket: bucket.into(),
            region: "us-east-1".to_owned(),
            path: "/".to_owned(),
            key: key.into(),
            secret: secret.into(),
            ca_pem: None,
        }
    }
}

impl std::fmt::Debug for S3Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Repository")
            .field("endpoint", &self.endpoint)
            .field("port", &self.port)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("path", &self.path)
            .field("key", &"<redacted>")
            .field("secret", &"<redacted>")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<PEM>"))
            .finish()
    }
}
