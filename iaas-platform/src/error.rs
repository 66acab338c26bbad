//! Why a part of the platform could not be built or started ([`StartError`]), and why the
//! auth key file could not be used ([`KeyFileError`]). A configuration that cannot be used at
//! all is `ConfigError`, beside the settings.

/// Why the platform could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}")]
    DataDir {
        /// The directory.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] iaas_store::StoreError),
    /// The bus could not be set up.
    #[error(transparent)]
    Events(#[from] iaas_events::EventsError),
    /// A key file (the auth keys, the secrets key) could not be read or created.
    #[error(transparent)]
    AuthKeys(#[from] KeyFileError),
    /// The auth service could not be configured.
    #[error("cannot configure authentication")]
    Auth(#[source] iaas_auth::AuthError),
    /// The event log index could not be opened.
    #[error("cannot open the event log index")]
    LogIndex(#[source] iaas_events::monitoring::IndexError),
    /// The cache backend could not be configured.
    #[error("cannot configure the cluster cache")]
    Cache(#[source] iaas_cache::CacheError),
    /// The host-port range cannot be used (a configuration built in code, not loaded).
    #[error("cannot use host_port_range")]
    HostPorts(#[source] iaas_core::Error),
    /// `host_firewall = on` and the host firewall rule could not be added.
    #[error("cannot keep tenants' containers away from the host (host_firewall = on)")]
    HostFirewall(#[source] iaas_docker::firewall::FirewallError),
    /// The `backup_s3_*` settings cannot be used (one missing, a file unreadable).
    #[error("cannot use the S3 backup repository: {0}")]
    BackupRepository(String),
    /// A service cannot run without a setting that is optional elsewhere.
    #[error("{service} needs {key} ({env}) to be set: {why}")]
    Unconfigured {
        /// The service.
        service: &'static str,
        /// The file key.
        key: &'static str,
        /// The environment variable.
        env: &'static str,
        /// Why it is needed.
        why: &'static str,
    },
}

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing the file failed.
    #[error("key file {path}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but is not a key file.
    #[error(
        "key file {path} has {len} bytes, expected {expected}; move it away to create a new one ({lost})"
    )]
    Corrupt {
        /// The file.
        path: String,
        /// Its length.
        len: usize,
        /// The length of a key file of its kind.
        expected: usize,
        /// What a new key file makes unreadable.
        lost: &'static str,
    },
    /// No randomness was available.
    #[error("no randomness for a new key: {0}")]
    Random(String),
}
