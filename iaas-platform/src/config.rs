//! Layered configuration: built-in defaults, then a TOML file, then the environment, each layer
//! overriding the one before. Everything is validated before anything starts: a bad value stops
//! the start with an error naming the key (the file key or the environment variable, whichever
//! supplied it), the value and what was expected.
//!
//! Every setting is one row of [`SETTINGS`]; the file reader, the `--help` text and
//! `docs/configuration.md` all follow that table, so a new setting cannot be readable from one
//! layer and missing from another. The file is flat (`listen = "127.0.0.1:8080"`), and a key
//! that is not in the table is an error rather than silently ignored: a typo in a file must not
//! quietly leave a default in place.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use iaas_docker::ImageCatalog;

use crate::http_layers::HttpLimits;
use crate::services::{CACHE_INVALIDATION_GROUP, MONITORING_GROUP};

/// Variable naming a TOML configuration file (the `--config` argument wins over it).
pub const CONFIG_VAR: &str = "IAAS_CONFIG";
/// Variable naming the address to listen on.
pub const LISTEN_VAR: &str = "IAAS_LISTEN";
/// Variable giving the seconds in-flight requests get to finish on shutdown.
pub const SHUTDOWN_GRACE_VAR: &str = "IAAS_SHUTDOWN_GRACE_SECS";
/// Variable giving the longest time one HTTP request may take, in seconds.
pub const REQUEST_TIMEOUT_VAR: &str = "IAAS_REQUEST_TIMEOUT_SECS";
/// Variable giving the largest HTTP request body, in bytes.
pub const BODY_LIMIT_VAR: &str = "IAAS_BODY_LIMIT_BYTES";
/// Variable naming the directory for embedded data (the SQLite file).
pub const DATA_DIR_VAR: &str = "IAAS_DATA_DIR";
/// Variable naming a PostgreSQL database to use instead of the embedded SQLite file.
pub const DATABASE_URL_VAR: &str = "IAAS_DATABASE_URL";
/// Variable naming Kafka brokers to use instead of the in-process bus.
pub const KAFKA_BROKERS_VAR: &str = "IAAS_KAFKA_BROKERS";
/// Variable naming the Kafka topic events travel on.
pub const KAFKA_TOPIC_VAR: &str = "IAAS_KAFKA_TOPIC";
/// Variable saying whether the Kafka producer is idempotent (`on`, `off`).
pub const KAFKA_IDEMPOTENCE_VAR: &str = "IAAS_KAFKA_IDEMPOTENCE";
/// Variable naming the Kafka consumer group of the monitoring indexer.
pub const MONITORING_GROUP_VAR: &str = "IAAS_MONITORING_GROUP";
/// Variable naming the Kafka consumer group that invalidates a shared (Redis) cluster cache.
pub const CACHE_INVALIDATION_GROUP_VAR: &str = "IAAS_CACHE_INVALIDATION_GROUP";
/// Variable naming a Redis server for refresh sessions instead of the in-process store.
pub const REDIS_URL_VAR: &str = "IAAS_REDIS_URL";
/// Variable naming the prefix of every cluster cache key.
pub const CACHE_PREFIX_VAR: &str = "IAAS_CACHE_PREFIX";
/// Variable naming the file holding the token signing key and refresh secret.
pub const AUTH_KEY_FILE_VAR: &str = "IAAS_AUTH_KEY_FILE";
/// Variable giving the seconds a user read for a token refresh is reused (0 turns it off).
pub const AUTH_USER_CACHE_TTL_VAR: &str = "IAAS_AUTH_USER_CACHE_TTL_SECS";
/// Variable giving how many verified access tokens are remembered (0 turns the memo off).
pub const AUTH_TOKEN_CACHE_ENTRIES_VAR: &str = "IAAS_AUTH_TOKEN_CACHE_ENTRIES";
/// Variable naming an Elasticsearch node to use instead of the embedded log index.
pub const ELASTICSEARCH_URL_VAR: &str = "IAAS_ELASTICSEARCH_URL";
/// Variable naming the Elasticsearch index the log entries go to.
pub const ELASTICSEARCH_INDEX_VAR: &str = "IAAS_ELASTICSEARCH_INDEX";
/// Variable naming the image of PostgreSQL instances (the name `iaas-docker` reads).
pub const POSTGRES_IMAGE_VAR: &str = "IAAS_POSTGRES_IMAGE";
/// Variable naming the image of Nginx instances (the name `iaas-docker` reads).
pub const NGINX_IMAGE_VAR: &str = "IAAS_NGINX_IMAGE";
/// Variable giving the host ports tenants may choose to publish on (`FIRST-LAST`).
pub const HOST_PORT_RANGE_VAR: &str = "IAAS_HOST_PORT_RANGE";
/// Variable naming the host address instances' ports are published on.
pub const PUBLISH_ADDRESS_VAR: &str = "IAAS_PUBLISH_ADDRESS";
/// Variable naming the JWKS (a file or an `http://` URL) a service that only verifies tokens
/// reads its public keys from.
pub const AUTH_JWKS_VAR: &str = "IAAS_AUTH_JWKS";
/// Variable listing the reverse proxies (addresses or CIDR blocks, comma-separated) whose
/// `X-Forwarded-For` is believed for the client address.
pub const TRUSTED_PROXIES_VAR: &str = "IAAS_TRUSTED_PROXIES";
/// Variable giving how many registrations one client address may make per hour.
pub const REGISTRATIONS_PER_CLIENT_VAR: &str = "IAAS_REGISTRATIONS_PER_CLIENT";
/// Variable giving how many instances (not deleted) a user may hold.
pub const QUOTA_INSTANCES_VAR: &str = "IAAS_QUOTA_INSTANCES";
/// Variable giving the CPU, in millicores, of all of a user's instances.
pub const QUOTA_MILLICPUS_VAR: &str = "IAAS_QUOTA_MILLICPUS";
/// Variable giving the memory, in MiB, of all of a user's instances.
pub const QUOTA_MEMORY_MIB_VAR: &str = "IAAS_QUOTA_MEMORY_MIB";
/// Variable giving the CPU, in millicores, one instance may ask for per container.
pub const QUOTA_INSTANCE_MILLICPUS_VAR: &str = "IAAS_QUOTA_INSTANCE_MILLICPUS";
/// Variable giving the memory, in MiB, one instance may ask for per container.
pub const QUOTA_INSTANCE_MEMORY_MIB_VAR: &str = "IAAS_QUOTA_INSTANCE_MEMORY_MIB";
/// Variable saying whether the platform adds the firewall rule that keeps containers away from
/// the host's own services (`auto`, `on`, `off`).
pub const HOST_FIREWALL_VAR: &str = "IAAS_HOST_FIREWALL";
/// Variable naming the Docker engine (the name every Docker client reads).
pub const DOCKER_HOST_VAR: &str = "DOCKER_HOST";
/// Variable holding the log filter (the name `tracing-subscriber` reads).
pub const LOG_VAR: &str = "RUST_LOG";

/// One setting: its key in the file, its environment variable, its default and its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Setting {
    /// The key in the TOML file.
    pub key: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// The default, as shown to people.
    pub default: &'static str,
    /// What it does.
    pub meaning: &'static str,
}

const fn setting(
    key: &'static str,
    env: &'static str,
    default: &'static str,
    meaning: &'static str,
) -> Setting {
    Setting { key, env, default, meaning }
}

/// Every setting, in the order `--help` and the docs list them.
pub const SETTINGS: &[Setting] = &[
    setting("listen", LISTEN_VAR, "127.0.0.1:8080", "address and port to serve HTTP on"),
    setting(
        "shutdown_grace_secs",
        SHUTDOWN_GRACE_VAR,
        "10",
        "seconds in-flight requests get after SIGINT/SIGTERM (0-3600)",
    ),
    setting(
        "request_timeout_secs",
        REQUEST_TIMEOUT_VAR,
        "30",
        "longest time one HTTP request may take, seconds (1-3600)",
    ),
    setting(
        "body_limit_bytes",
        BODY_LIMIT_VAR,
        "65536",
        "largest HTTP request body, bytes (1024-67108864)",
    ),
    setting(
        "data_dir",
        DATA_DIR_VAR,
        "./iaas-data",
        "directory of the embedded database, event index and key file",
    ),
    setting(
        "database_url",
        DATABASE_URL_VAR,
        "unset: SQLite in data_dir",
        "postgres:// URL of the store",
    ),
    setting(
        "kafka_brokers",
        KAFKA_BROKERS_VAR,
        "unset: in-process bus",
        "Kafka brokers, host:port[,host:port...]",
    ),
    setting("kafka_topic", KAFKA_TOPIC_VAR, "infrastructure.events", "topic events travel on"),
    setting(
        "kafka_idempotence",
        KAFKA_IDEMPOTENCE_VAR,
        "on",
        "idempotent Kafka producer: on, or off for a broker that cannot keep producer state across its restart",
    ),
    setting(
        "monitoring_group",
        MONITORING_GROUP_VAR,
        MONITORING_GROUP,
        "Kafka consumer group of the monitoring indexer (one per platform)",
    ),
    setting(
        "cache_invalidation_group",
        CACHE_INVALIDATION_GROUP_VAR,
        CACHE_INVALIDATION_GROUP,
        "Kafka consumer group invalidating a shared Redis cache (one per cache)",
    ),
    setting(
        "redis_url",
        REDIS_URL_VAR,
        "unset: in-process",
        "redis:// URL for refresh sessions and the cluster cache",
    ),
    setting("cache_prefix", CACHE_PREFIX_VAR, "iaas:", "prefix of every cluster cache key"),
    setting(
        "auth_key_file",
        AUTH_KEY_FILE_VAR,
        "data_dir/auth.key",
        "token signing key file (created on first start)",
    ),
    setting(
        "auth_jwks",
        AUTH_JWKS_VAR,
        "unset: the key file's public half",
        "provisioning and monitoring services: verify tokens with the public keys of this JWKS file or http:// URL only (the key file is never read)",
    ),
    setting(
        "auth_user_cache_ttl_secs",
        AUTH_USER_CACHE_TTL_VAR,
        "5",
        "seconds a user read for a token refresh is reused (0-60, 0 = off)",
    ),
    setting(
        "auth_token_cache_entries",
        AUTH_TOKEN_CACHE_ENTRIES_VAR,
        "10000",
        "verified access tokens remembered so repeats skip the signature check (0-1000000, 0 = off)",
    ),
    setting(
        "elasticsearch_url",
        ELASTICSEARCH_URL_VAR,
        "unset: embedded index",
        "http:// URL of an Elasticsearch node for the event log",
    ),
    setting(
        "elasticsearch_index",
        ELASTICSEARCH_INDEX_VAR,
        "iaas-logs",
        "Elasticsearch index name",
    ),
    setting("postgres_image", POSTGRES_IMAGE_VAR, "postgres:16", "image of PostgreSQL instances"),
    setting("nginx_image", NGINX_IMAGE_VAR, "nginx:1.27", "image of Nginx instances"),
    setting(
        "quota_instances",
        QUOTA_INSTANCES_VAR,
        "10",
        "instances (not deleted) one user may hold, unless an admin overrides it",
    ),
    setting(
        "quota_millicpus",
        QUOTA_MILLICPUS_VAR,
        "4000",
        "CPU of all of one user's containers, thousandths of a core",
    ),
    setting(
        "quota_memory_mib",
        QUOTA_MEMORY_MIB_VAR,
        "8192",
        "memory of all of one user's containers, MiB",
    ),
    setting(
        "quota_instance_millicpus",
        QUOTA_INSTANCE_MILLICPUS_VAR,
        "2000",
        "CPU one instance may ask for per container, thousandths of a core",
    ),
    setting(
        "quota_instance_memory_mib",
        QUOTA_INSTANCE_MEMORY_MIB_VAR,
        "4096",
        "memory one instance may ask for per container, MiB",
    ),
    setting(
        "host_port_range",
        HOST_PORT_RANGE_VAR,
        "20000-29999",
        "host ports tenants may choose, FIRST-LAST (the platform's own ports are always refused)",
    ),
    setting(
        "publish_address",
        PUBLISH_ADDRESS_VAR,
        "127.0.0.1",
        "host address instances' ports are published on",
    ),
    setting(
        "trusted_proxies",
        TRUSTED_PROXIES_VAR,
        "unset: none",
        "reverse proxies whose X-Forwarded-For is believed, comma-separated addresses or CIDR blocks",
    ),
    setting(
        "registrations_per_client",
        REGISTRATIONS_PER_CLIENT_VAR,
        "20",
        "registrations one client address may make per hour",
    ),
    setting(
        "host_firewall",
        HOST_FIREWALL_VAR,
        "auto",
        "drop traffic from tenants' networks to the host: auto (warn if it cannot), on (refuse to start), off",
    ),
    setting(
        "docker_host",
        DOCKER_HOST_VAR,
        "unix:///var/run/docker.sock",
        "Docker engine (unix:// socket)",
    ),
    setting("log", LOG_VAR, "info", "log filter (tracing EnvFilter syntax)"),
];

/// Whether the platform adds the host firewall rule of `iaas_docker::firewall` at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostFirewall {
    /// Add it; when that is not possible (not root, no iptables), log a warning with the rule
    /// to add by hand and start anyway.
    Auto,
    /// Add it, or refuse to start.
    On,
    /// Leave the host's firewall alone (the operator manages it).
    Off,
}

/// Where the platform keeps its state.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Database {
    /// The embedded SQLite file `iaas.db` in this directory.
    Sqlite(PathBuf),
    /// A PostgreSQL URL.
    Postgres(String),
}

impl std::fmt::Debug for Database {
    /// The URL's password and secret parameters are left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(dir) => f.debug_tuple("Sqlite").field(dir).finish(),
            Database::Postgres(url) => {
                f.debug_tuple("Postgres").field(&iaas_core::redact_url(url)).finish()
            }
        }
    }
}

/// How the platform runs. Each field documents its file key and environment variable; the
/// defaults are those of [`Config::default`]. `Debug` leaves the backends' passwords out.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Address of the HTTP listener (`listen`, `IAAS_LISTEN`, default `127.0.0.1:8080`:
    /// loopback, so a first run exposes nothing to the network).
    pub listen: SocketAddr,
    /// Time in-flight requests get to finish after SIGINT/SIGTERM (`shutdown_grace_secs`,
    /// `IAAS_SHUTDOWN_GRACE_SECS`, default 10 s); connections still open after it are closed.
    pub shutdown_grace: Duration,
    /// Bounds on each HTTP request: the timeout (`request_timeout_secs`,
    /// `IAAS_REQUEST_TIMEOUT_SECS`, default 30 s) and the body limit (`body_limit_bytes`,
    /// `IAAS_BODY_LIMIT_BYTES`, default 64 KiB), for every route alike.
    pub http_limits: HttpLimits,
    /// The store: SQLite in the data directory, or PostgreSQL when `database_url`
    /// (`IAAS_DATABASE_URL`) is set.
    pub database: Database,
    /// Directory for embedded state (`data_dir`, `IAAS_DATA_DIR`, default `./iaas-data`): the
    /// SQLite store unless PostgreSQL is configured, the event log index, the auth key file.
    pub data_dir: PathBuf,
    /// Kafka brokers (`kafka_brokers`, `IAAS_KAFKA_BROKERS`); the in-process bus when unset.
    pub kafka_brokers: Option<String>,
    /// The Kafka topic of every event (`kafka_topic`, `IAAS_KAFKA_TOPIC`, default
    /// `infrastructure.events`).
    pub kafka_topic: String,
    /// Whether the producer is idempotent (`kafka_idempotence`, `IAAS_KAFKA_IDEMPOTENCE`,
    /// default `on`): a batch retried after a lost acknowledgement is then written once. Turn
    /// it off only for a broker that loses its producer state when it restarts and then refuses
    /// the producer's sequence numbers (tansu 0.6.0 on SQLite does): the relay then delivers
    /// at least once, and consumers keyed by event id (the monitoring index, the cache
    /// invalidator) absorb the duplicates.
    pub kafka_idempotence: bool,
    /// The Kafka consumer group the monitoring indexer reads in (`monitoring_group`,
    /// `IAAS_MONITORING_GROUP`, default `monitoring-consumer-group`). Every process of one
    /// platform shares it, so each event is indexed once; two platforms on one broker and topic
    /// need different groups, or each would index only the events the other did not take.
    pub monitoring_group: String,
    /// The Kafka consumer group that invalidates a shared (Redis) cluster cache
    /// (`cache_invalidation_group`, `IAAS_CACHE_INVALIDATION_GROUP`, default
    /// `cluster-cache-invalidator`): one member per event is enough for one cache, so every
    /// process sharing that cache shares the group; platforms with caches of their own on one
    /// broker and topic need different groups. A process with an in-process cache always reads
    /// in a group of its own.
    pub cache_invalidation_group: String,
    /// Redis for refresh sessions, login throttling and the cluster cache (`redis_url`,
    /// `IAAS_REDIS_URL`); in-process when unset (sessions then end with the process).
    pub redis_url: Option<String>,
    /// Prefix of every cluster cache key (`cache_prefix`, `IAAS_CACHE_PREFIX`, default
    /// `iaas:`), so several platforms can share one Redis.
    pub cache_prefix: String,
    /// The token signing key and refresh secret (`auth_key_file`, `IAAS_AUTH_KEY_FILE`,
    /// default `auth.key` in the data directory), created with mode 0600 on the first start.
    /// Every process of one platform must share it.
    pub auth_key_file: PathBuf,
    /// Where the provisioning and monitoring services read the public keys of the tokens they
    /// verify (`auth_jwks`, `IAAS_AUTH_JWKS`, default unset: the public half of
    /// `auth_key_file`): a JWKS file, or an `http://` URL such as the auth service's
    /// `/.well-known/jwks.json`, re-read every 30 s. When it is set, those services never open
    /// the key file and cannot sign a token. The all-in-one platform ignores it.
    pub auth_jwks: Option<String>,
    /// How long a user read by a token refresh is reused (`auth_user_cache_ttl_secs`,
    /// `IAAS_AUTH_USER_CACHE_TTL_SECS`, whole seconds, default 5, 0 turns the cache off). A user
    /// deleted or re-scoped directly in the store keeps refreshing for at most this long, on
    /// top of the access-token lifetime (15 minutes) that already bounds such edits; see
    /// `iaas_auth::UserCacheConfig::ttl`.
    pub auth_user_cache_ttl: Duration,
    /// How many verified access tokens are remembered (`auth_token_cache_entries`,
    /// `IAAS_AUTH_TOKEN_CACHE_ENTRIES`, default 10,000, 0 turns the memo off). Which tokens are
    /// accepted does not change; see `iaas_auth::TokenConfig::verify_cache_capacity`.
    pub auth_token_cache_entries: usize,
    /// An Elasticsearch node for the event log (`elasticsearch_url`,
    /// `IAAS_ELASTICSEARCH_URL`); the embedded index in the data directory when unset.
    pub elasticsearch_url: Option<String>,
    /// The Elasticsearch index (`elasticsearch_index`, `IAAS_ELASTICSEARCH_INDEX`, default
    /// `iaas-logs`).
    pub elasticsearch_index: String,
    /// Images per instance kind (`postgres_image` / `IAAS_POSTGRES_IMAGE`, `nginx_image` /
    /// `IAAS_NGINX_IMAGE`).
    pub images: ImageCatalog,
    /// The limits of every user an administrator has not given others (`quota_instances`,
    /// `quota_millicpus`, `quota_memory_mib`, `quota_instance_millicpus`,
    /// `quota_instance_memory_mib`; `IAAS_QUOTA_*`; defaults those of `iaas_core::Quota`).
    pub quota: iaas_core::Quota,
    /// The host ports a tenant may choose to publish on (`host_port_range`,
    /// `IAAS_HOST_PORT_RANGE`, default `20000-29999`). The ports of this platform's own
    /// listener and backends, and the well-known ports of its kinds of backend, are refused
    /// even inside the range (see `iaas_core::HostPortPolicy`); ports the engine picks are
    /// always allowed.
    pub host_port_range: std::ops::RangeInclusive<u16>,
    /// The host address instances' ports are published on (`publish_address`,
    /// `IAAS_PUBLISH_ADDRESS`, default `127.0.0.1`: reachable from this machine only).
    pub publish_address: std::net::IpAddr,
    /// Whether the rule that drops traffic from tenants' networks to the host is added at start
    /// (`host_firewall`, `IAAS_HOST_FIREWALL`, default `auto`).
    pub host_firewall: HostFirewall,
    /// Reverse proxies whose `X-Forwarded-For` is believed for the client address that
    /// throttling counts (`trusted_proxies`, `IAAS_TRUSTED_PROXIES`, default none). Behind a
    /// proxy that is not listed, every client shares the proxy's address.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Registrations one client address may make per hour (`registrations_per_client`,
    /// `IAAS_REGISTRATIONS_PER_CLIENT`, default 20).
    pub registrations_per_client: u64,
    /// The Docker engine (`docker_host`, `DOCKER_HOST`); the local socket when unset.
    pub docker_host: Option<String>,
    /// The log filter (`log`, `RUST_LOG`, default `info`).
    pub log_filter: String,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = |url: &Option<String>| url.as_deref().map(iaas_core::redact_url);
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("http_limits", &self.http_limits)
            .field("database", &self.database)
            .field("data_dir", &self.data_dir)
            .field("kafka_brokers", &self.kafka_brokers)
            .field("kafka_topic", &self.kafka_topic)
            .field("kafka_idempotence", &self.kafka_idempotence)
            .field("monitoring_group", &self.monitoring_group)
            .field("cache_invalidation_group", &self.cache_invalidation_group)
            .field("redis_url", &url(&self.redis_url))
            .field("cache_prefix", &self.cache_prefix)
            .field("auth_key_file", &self.auth_key_file)
            .field("auth_jwks", &self.auth_jwks.as_deref().map(iaas_core::redact_url))
            .field("auth_user_cache_ttl", &self.auth_user_cache_ttl)
            .field("auth_token_cache_entries", &self.auth_token_cache_entries)
            .field("elasticsearch_url", &url(&self.elasticsearch_url))
            .field("elasticsearch_index", &self.elasticsearch_index)
            .field("images", &self.images)
            .field("quota", &self.quota)
            .field("host_port_range", &self.host_port_range)
            .field("publish_address", &self.publish_address)
            .field("host_firewall", &self.host_firewall)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("registrations_per_client", &self.registrations_per_client)
            .field("docker_host", &self.docker_host)
            .field("log_filter", &self.log_filter)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace: Duration::from_secs(10),
            http_limits: HttpLimits::default(),
            database: Database::Sqlite(PathBuf::from("iaas-data")),
            data_dir: PathBuf::from("iaas-data"),
            kafka_brokers: None,
            kafka_topic: DEFAULT_KAFKA_TOPIC.to_owned(),
            kafka_idempotence: true,
            monitoring_group: MONITORING_GROUP.to_owned(),
            cache_invalidation_group: CACHE_INVALIDATION_GROUP.to_owned(),
            redis_url: None,
            cache_prefix: DEFAULT_CACHE_PREFIX.to_owned(),
            auth_key_file: PathBuf::from("iaas-data").join("auth.key"),
            auth_jwks: None,
            auth_user_cache_ttl: Duration::from_secs(DEFAULT_AUTH_USER_CACHE_TTL_SECS),
            auth_token_cache_entries: iaas_auth::TokenConfig::DEFAULT_VERIFY_CACHE_CAPACITY,
            elasticsearch_url: None,
            elasticsearch_index: DEFAULT_ELASTICSEARCH_INDEX.to_owned(),
            images: ImageCatalog::default(),
            quota: iaas_core::Quota::default(),
            host_port_range: iaas_core::HostPortPolicy::DEFAULT_RANGE,
            publish_address: std::net::IpAddr::from([127, 0, 0, 1]),
            host_firewall: HostFirewall::Auto,
            trusted_proxies: Vec::new(),
            registrations_per_client: 20,
            docker_host: None,
            log_filter: DEFAULT_LOG_FILTER.to_owned(),
        }
    }
}

const DEFAULT_KAFKA_TOPIC: &str = "infrastructure.events";
const DEFAULT_CACHE_PREFIX: &str = "iaas:";
const DEFAULT_ELASTICSEARCH_INDEX: &str = "iaas-logs";
const DEFAULT_LOG_FILTER: &str = "info";
/// Kafka refuses longer topic names.
const MAX_TOPIC_LEN: usize = 249;
/// Kafka accepts any group id; a longer one than a topic name is a mistake, not a need.
const MAX_GROUP_LEN: usize = 249;
/// Elasticsearch refuses longer index names (in bytes).
const MAX_INDEX_LEN: usize = 255;
/// A longer cache prefix is a mistake (it is repeated in every key).
const MAX_CACHE_PREFIX_LEN: usize = 64;
/// The longest shutdown grace accepted.
const MAX_GRACE_SECS: u64 = 3600;
/// The refresh path's user cache TTL by default (`iaas_auth::UserCacheConfig`'s default).
const DEFAULT_AUTH_USER_CACHE_TTL_SECS: u64 = 5;
/// The longest user cache TTL accepted: the window it adds after an out-of-band delete must
/// stay small beside the 15 minutes of an access token.
const MAX_AUTH_USER_CACHE_TTL_SECS: u64 = 60;
/// The most verified tokens remembered (about 1 KB each with the token: 1 GB at this bound).
const MAX_AUTH_TOKEN_CACHE_ENTRIES: usize = 1_000_000;
/// The longest request timeout accepted.
const MAX_REQUEST_TIMEOUT_SECS: u64 = 3600;
/// The body limit bounds: below 1 KiB no request of the API fits; above 64 MiB a few
/// concurrent requests can exhaust memory.
const BODY_LIMIT_RANGE: std::ops::RangeInclusive<usize> = 1024..=64 * 1024 * 1024;

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting has an unusable value.
    #[error("invalid {key}={value:?} (from {origin}): {reason}")]
    Invalid {
        /// The environment variable or file key that supplied it.
        key: String,
        /// Where it came from: `the environment` or the file's path.
        origin: String,
        /// The value (passwords removed).
        value: String,
        /// What is expected.
        reason: String,
    },
    /// The file has a key that is not a setting.
    #[error("unknown key {key:?} in {path}; known keys: {known}")]
    UnknownKey {
        /// The key.
        key: String,
        /// The file.
        path: String,
        /// Every accepted key, comma-separated.
        known: String,
    },
    /// A file value is neither a string nor an integer.
    #[error("invalid {key} in {path}: expected a string or an integer, found {found}")]
    WrongType {
        /// The key.
        key: String,
        /// The file.
        path: String,
        /// The TOML type found.
        found: String,
    },
    /// The file could not be read.
    #[error("cannot read the configuration file {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The file is not valid TOML.
    #[error("the configuration file {path} is not valid TOML: {reason}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message, with line and column.
        reason: String,
    },
    /// A command-line argument is not understood.
    #[error("{reason}; see --help")]
    Argument {
        /// What is wrong.
        reason: String,
    },
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Run with the configuration file given by `--config`, if any.
    Run {
        /// The `--config` path.
        config_file: Option<PathBuf>,
    },
    /// Print the help text.
    Help,
    /// Print the version.
    Version,
}

impl Command {
    /// Parses the arguments (without the program name): `--help`, `--version`, or
    /// `--config <path>` (also `--config=<path>`).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, ConfigError> {
        let mut config_file = None;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-h" | "--help" => return Ok(Command::Help),
                "-V" | "--version" => return Ok(Command::Version),
                "-c" | "--config" => {
                    let path = args.next().ok_or_else(|| ConfigError::Argument {
                        reason: format!("{arg} needs a file path"),
                    })?;
                    config_file = Some(PathBuf::from(path));
                }
                other => match other.strip_prefix("--config=") {
                    Some(path) => config_file = Some(PathBuf::from(path)),
                    None => {
                        return Err(ConfigError::Argument {
                            reason: format!("unknown argument {other:?}"),
                        });
                    }
                },
            }
        }
        Ok(Command::Run { config_file })
    }
}

/// The text `--help` prints for the settings: one row per setting with its file key,
/// environment variable and default.
pub fn settings_help() -> String {
    let mut text = String::new();
    for s in SETTINGS {
        text.push_str(&format!(
            "    {:<21} {:<26} {}\n    {:<21} {:<26} [default: {}]\n",
            s.key, s.env, s.meaning, "", "", s.default
        ));
    }
    text
}

impl Config {
    /// Reads the configuration through `lookup` (the environment, or a map in tests), no file.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::resolve(&FileLayer::default(), &lookup, Config::default())
    }

    /// Defaults, then the file (`config_file`, else the one `IAAS_CONFIG` names, else none),
    /// then the environment read through `lookup`.
    pub fn load(
        config_file: Option<&Path>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        Self::load_with_defaults(config_file, lookup, Config::default())
    }

    /// [`Config::load`] over other defaults (a single-service binary's own port). The store and
    /// the key file follow the data directory unless set themselves.
    pub fn load_with_defaults(
        config_file: Option<&Path>,
        lookup: impl Fn(&str) -> Option<String>,
        defaults: Config,
    ) -> Result<Self, ConfigError> {
        let named = config_file
            .map(Path::to_path_buf)
            .or_else(|| non_empty(lookup(CONFIG_VAR)).map(PathBuf::from));
        let file = match named {
            None => FileLayer::default(),
            Some(path) => FileLayer::read(&path)?,
        };
        Self::resolve(&file, &lookup, defaults)
    }

    /// [`Config::load`] over the process arguments' `--config` and the process environment.
    pub fn load_from(config_file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load(config_file, |key| std::env::var(key).ok())
    }

    fn resolve(
        file: &FileLayer,
        lookup: &dyn Fn(&str) -> Option<String>,
        defaults: Config,
    ) -> Result<Self, ConfigError> {
        let layers = Layers { file, env: lookup };

        let listen = layers.parse(LISTEN_VAR, |value| {
            value
                .parse::<SocketAddr>()
                .map_err(|_| "expected an address and port such as 127.0.0.1:8080".to_owned())
        })?;
        let shutdown_grace =
            layers.parse(SHUTDOWN_GRACE_VAR, |value| match value.parse::<u64>() {
                Ok(secs) if secs <= MAX_GRACE_SECS => Ok(Duration::from_secs(secs)),
                _ => Err(format!("expected whole seconds between 0 and {MAX_GRACE_SECS}")),
            })?;
        let request_timeout =
            layers.parse(REQUEST_TIMEOUT_VAR, |value| match value.parse::<u64>() {
                Ok(secs) if (1..=MAX_REQUEST_TIMEOUT_SECS).contains(&secs) => {
                    Ok(Duration::from_secs(secs))
                }
                _ => {
                    Err(format!("expected whole seconds between 1 and {MAX_REQUEST_TIMEOUT_SECS}"))
                }
            })?;
        let body_limit = layers.parse(BODY_LIMIT_VAR, |value| match value.parse::<usize>() {
            Ok(bytes) if BODY_LIMIT_RANGE.contains(&bytes) => Ok(bytes),
            _ => Err(format!(
                "expected bytes between {} and {}",
                BODY_LIMIT_RANGE.start(),
                BODY_LIMIT_RANGE.end()
            )),
        })?;
        let data_dir = layers.parse(DATA_DIR_VAR, |value| Ok(PathBuf::from(value)))?;
        let database_url = layers.parse_secret(DATABASE_URL_VAR, |value| {
            if value.starts_with("postgres://") || value.starts_with("postgresql://") {
                Ok(value.to_owned())
            } else {
                Err("expected a postgres:// URL (leave it unset for the embedded SQLite file)"
                    .to_owned())
            }
        })?;
        let kafka_brokers = layers.parse(KAFKA_BROKERS_VAR, check_brokers)?;
        let kafka_topic = layers.parse(KAFKA_TOPIC_VAR, check_topic)?;
        let kafka_idempotence = layers.parse(KAFKA_IDEMPOTENCE_VAR, |value| match value {
            "on" => Ok(true),
            "off" => Ok(false),
            _ => Err("expected on or off".to_owned()),
        })?;
        let monitoring_group = layers.parse(MONITORING_GROUP_VAR, check_group)?;
        let cache_invalidation_group = layers.parse(CACHE_INVALIDATION_GROUP_VAR, check_group)?;
        let redis_url = layers.parse_secret(REDIS_URL_VAR, |value| {
            if ["redis://", "rediss://", "unix://"].iter().any(|s| value.starts_with(s)) {
                Ok(value.to_owned())
            } else {
                Err("expected a redis://, rediss:// or unix:// URL".to_owned())
            }
        })?;
        let cache_prefix = layers.parse(CACHE_PREFIX_VAR, |value| {
            if value.len() <= MAX_CACHE_PREFIX_LEN && !value.contains(char::is_whitespace) {
                Ok(value.to_owned())
            } else {
                Err(format!(
                    "expected at most {MAX_CACHE_PREFIX_LEN} characters without spaces, such as iaas:"
                ))
            }
        })?;
        let auth_key_file = layers.parse(AUTH_KEY_FILE_VAR, |value| Ok(PathBuf::from(value)))?;
        let auth_jwks = layers.parse(AUTH_JWKS_VAR, |value| {
            crate::verify_keys::JwksSource::parse(value).map(|_| value.to_owned())
        })?;
        let auth_user_cache_ttl =
            layers.parse(AUTH_USER_CACHE_TTL_VAR, |value| match value.parse::<u64>() {
                Ok(secs) if secs <= MAX_AUTH_USER_CACHE_TTL_SECS => Ok(Duration::from_secs(secs)),
                _ => Err(format!(
                    "expected whole seconds between 0 (off) and {MAX_AUTH_USER_CACHE_TTL_SECS}"
                )),
            })?;
        let auth_token_cache_entries =
            layers.parse(AUTH_TOKEN_CACHE_ENTRIES_VAR, |value| match value.parse::<usize>() {
                Ok(entries) if entries <= MAX_AUTH_TOKEN_CACHE_ENTRIES => Ok(entries),
                _ => Err(format!(
                    "expected a whole number of tokens between 0 (off) and {MAX_AUTH_TOKEN_CACHE_ENTRIES}"
                )),
            })?;
        let elasticsearch_url = layers.parse(ELASTICSEARCH_URL_VAR, |value| {
            match value.strip_prefix("http://") {
                Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(value.to_owned()),
                _ if value.starts_with("https://") => Err(
                    "https needs iaas-events' elasticsearch-tls feature, which this build does not have; use http:// on a trusted network"
                        .to_owned(),
                ),
                _ => Err("expected an http:// URL such as http://127.0.0.1:9200".to_owned()),
            }
        })?;
        let elasticsearch_index = layers.parse(ELASTICSEARCH_INDEX_VAR, check_index)?;
        let postgres_image = layers.parse(POSTGRES_IMAGE_VAR, check_image)?;
        let nginx_image = layers.parse(NGINX_IMAGE_VAR, check_image)?;
        let count = |value: &str| {
            value
                .parse::<u32>()
                .map_err(|_| format!("expected a whole number between 0 and {}", u32::MAX))
        };
        let quota_instances = layers.parse(QUOTA_INSTANCES_VAR, count)?;
        let quota_millicpus = layers.parse(QUOTA_MILLICPUS_VAR, count)?;
        let quota_memory_mib = layers.parse(QUOTA_MEMORY_MIB_VAR, count)?;
        let quota_instance_millicpus = layers.parse(QUOTA_INSTANCE_MILLICPUS_VAR, count)?;
        let quota_instance_memory_mib = layers.parse(QUOTA_INSTANCE_MEMORY_MIB_VAR, count)?;
        let host_port_range = layers.parse(HOST_PORT_RANGE_VAR, |value| {
            let range = value
                .split_once('-')
                .and_then(|(first, last)| {
                    Some(first.trim().parse().ok()?..=last.trim().parse().ok()?)
                })
                .ok_or_else(|| "expected FIRST-LAST, such as 20000-29999".to_owned())?;
            iaas_core::HostPortPolicy::new(range.clone()).map(|_| range).map_err(|err| match err {
                iaas_core::Error::Invalid { reason, .. } => reason,
                other => other.to_string(),
            })
        })?;
        let publish_address = layers.parse(PUBLISH_ADDRESS_VAR, |value| {
            value
                .parse::<std::net::IpAddr>()
                .map_err(|_| "expected an IP address such as 127.0.0.1".to_owned())
        })?;
        let trusted_proxies = layers.parse(TRUSTED_PROXIES_VAR, |value| {
            value
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| {
                    item.parse::<ipnet::IpNet>()
                        .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| {
                            format!("{item:?} is not an address or CIDR block such as 10.0.0.0/8")
                        })
                })
                .collect::<Result<Vec<_>, String>>()
        })?;
        let registrations_per_client = layers.parse(REGISTRATIONS_PER_CLIENT_VAR, |value| {
            value.parse::<u64>().map_err(|_| "expected a whole number such as 20".to_owned())
        })?;
        let host_firewall = layers.parse(HOST_FIREWALL_VAR, |value| match value {
            "auto" => Ok(HostFirewall::Auto),
            "on" => Ok(HostFirewall::On),
            "off" => Ok(HostFirewall::Off),
            _ => Err("expected auto, on or off".to_owned()),
        })?;
        let docker_host = layers.parse(DOCKER_HOST_VAR, |value| {
            if value.starts_with("unix://") {
                Ok(value.to_owned())
            } else {
                Err("expected a unix:// socket such as unix:///var/run/docker.sock (the only Docker transport built in)".to_owned())
            }
        })?;
        let log_filter = layers.parse(LOG_VAR, |value| {
            tracing_subscriber::EnvFilter::builder()
                .parse(value)
                .map(|_| value.to_owned())
                .map_err(|e| format!("not a log filter such as info or iaas_docker=debug: {e}"))
        })?;

        let data_dir = data_dir.unwrap_or(defaults.data_dir);
        let mut images = defaults.images;
        if let Some(image) = postgres_image {
            images.postgres = image;
        }
        if let Some(image) = nginx_image {
            images.nginx = image;
        }
        Ok(Self {
            listen: listen.unwrap_or(defaults.listen),
            shutdown_grace: shutdown_grace.unwrap_or(defaults.shutdown_grace),
            http_limits: HttpLimits::new(
                request_timeout.unwrap_or(defaults.http_limits.request_timeout),
                body_limit.unwrap_or(defaults.http_limits.body_limit),
            ),
            database: database_url
                .map_or_else(|| Database::Sqlite(data_dir.clone()), Database::Postgres),
            auth_key_file: auth_key_file.unwrap_or_else(|| data_dir.join("auth.key")),
            auth_jwks: non_empty(auth_jwks),
            auth_user_cache_ttl: auth_user_cache_ttl.unwrap_or(defaults.auth_user_cache_ttl),
            auth_token_cache_entries: auth_token_cache_entries
                .unwrap_or(defaults.auth_token_cache_entries),
            data_dir,
            kafka_brokers: kafka_brokers.or(defaults.kafka_brokers),
            kafka_topic: kafka_topic.unwrap_or(defaults.kafka_topic),
            kafka_idempotence: kafka_idempotence.unwrap_or(defaults.kafka_idempotence),
            monitoring_group: monitoring_group.unwrap_or(defaults.monitoring_group),
            cache_invalidation_group: cache_invalidation_group
                .unwrap_or(defaults.cache_invalidation_group),
            redis_url: redis_url.or(defaults.redis_url),
            cache_prefix: cache_prefix.unwrap_or(defaults.cache_prefix),
            elasticsearch_url: elasticsearch_url.or(defaults.elasticsearch_url),
            elasticsearch_index: elasticsearch_index.unwrap_or(defaults.elasticsearch_index),
            images,
            quota: defaults.quota.with(&iaas_core::QuotaOverride {
                instances: quota_instances,
                millicpus: quota_millicpus.map(u64::from),
                memory_mib: quota_memory_mib.map(u64::from),
                instance_millicpus: quota_instance_millicpus,
                instance_memory_mib: quota_instance_memory_mib,
            }),
            host_port_range: host_port_range.unwrap_or(defaults.host_port_range),
            publish_address: publish_address.unwrap_or(defaults.publish_address),
            host_firewall: host_firewall.unwrap_or(defaults.host_firewall),
            trusted_proxies: trusted_proxies.unwrap_or(defaults.trusted_proxies),
            registrations_per_client: registrations_per_client
                .unwrap_or(defaults.registrations_per_client),
            docker_host: docker_host.or(defaults.docker_host),
            log_filter: log_filter.unwrap_or(defaults.log_filter),
        })
    }
}

impl Config {
    /// The ports this platform itself listens on or connects to: its HTTP listener and every
    /// configured backend (the scheme's default port when a URL names none). Tenants may never
    /// publish on them, whatever `host_port_range` says.
    pub fn own_ports(&self) -> Vec<u16> {
        let mut ports = vec![self.listen.port()];
        if let Database::Postgres(url) = &self.database {
            ports.extend(url_port(url, 5432));
        }
        if let Some(url) = &self.redis_url {
            ports.extend(url_port(url, 6379));
        }
        if let Some(url) = &self.elasticsearch_url {
            ports.extend(url_port(url, 9200));
        }
        for broker in self.kafka_brokers.iter().flat_map(|brokers| brokers.split(',')) {
            ports.extend(authority_port(broker.trim(), 9092));
        }
        ports
    }
}

/// The port of `scheme://[user[:password]@]host[:port][/...]`, or `default` when it names none;
/// `None` for a URL without a host (a Unix socket).
fn url_port(url: &str, default: u16) -> Option<u16> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    authority_port(host_port, default)
}

/// The port of `host[:port]` (IPv6 hosts in brackets), or `default`.
fn authority_port(host_port: &str, default: u16) -> Option<u16> {
    if host_port.is_empty() {
        return None;
    }
    let after_host = host_port.rsplit_once(']').map_or(host_port, |(_, rest)| rest);
    match after_host.rsplit_once(':') {
        Some((_, port)) => port.parse().ok(),
        None => Some(default),
    }
}

/// The file layer: file key -> value, as read from the TOML file.
#[derive(Debug, Default)]
struct FileLayer {
    path: String,
    values: BTreeMap<&'static str, String>,
}

impl FileLayer {
    fn read(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Unreadable { path: shown.clone(), reason: e.to_string() })?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| ConfigError::Syntax { path: shown.clone(), reason: e.to_string() })?;
        let mut values = BTreeMap::new();
        for (key, value) in table {
            let setting =
                SETTINGS.iter().find(|s| s.key == key).ok_or_else(|| ConfigError::UnknownKey {
                    key: key.clone(),
                    path: shown.clone(),
                    known: SETTINGS.iter().map(|s| s.key).collect::<Vec<_>>().join(", "),
                })?;
            let text = match value {
                toml::Value::String(text) => text,
                toml::Value::Integer(number) => number.to_string(),
                other => {
                    return Err(ConfigError::WrongType {
                        key,
                        path: shown,
                        found: other.type_str().to_owned(),
                    });
                }
            };
            values.insert(setting.key, text);
        }
        Ok(Self { path: shown, values })
    }
}

/// The file and the environment, in precedence order.
struct Layers<'a> {
    file: &'a FileLayer,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Layers<'_> {
    /// The value of the setting whose variable is `env` and where it came from: the
    /// environment over the file; `None` when neither sets it (an empty value counts as unset,
    /// so `IAAS_REDIS_URL=` switches a file's Redis back off).
    fn lookup(&self, env: &str) -> Option<(String, String, String)> {
        let setting = SETTINGS.iter().find(|s| s.env == env)?;
        match (self.env)(env) {
            Some(value) => non_empty(Some(value))
                .map(|value| (value, setting.env.to_owned(), "the environment".to_owned())),
            None => non_empty(self.file.values.get(setting.key).cloned())
                .map(|value| (value, setting.key.to_owned(), self.file.path.clone())),
        }
    }

    fn parse<T>(
        &self,
        env: &str,
        check: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        self.parse_shown(env, check, str::to_owned)
    }

    /// As [`Layers::parse`], with any password removed from the value an error shows.
    fn parse_secret<T>(
        &self,
        env: &str,
        check: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        self.parse_shown(env, check, iaas_core::redact_url)
    }

    fn parse_shown<T>(
        &self,
        env: &str,
        check: impl Fn(&str) -> Result<T, String>,
        show: impl Fn(&str) -> String,
    ) -> Result<Option<T>, ConfigError> {
        let Some((value, key, origin)) = self.lookup(env) else { return Ok(None) };
        check(value.trim()).map(Some).map_err(|reason| ConfigError::Invalid {
            key,
            origin,
            value: show(&value),
            reason,
        })
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn check_brokers(value: &str) -> Result<String, String> {
    let valid = value.split(',').all(|broker| {
        broker
            .trim()
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    });
    if valid {
        Ok(value.to_owned())
    } else {
        Err("expected host:port[,host:port...] such as 127.0.0.1:9092".to_owned())
    }
}

fn check_topic(value: &str) -> Result<String, String> {
    let legal = value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if legal && value.len() <= MAX_TOPIC_LEN && value != "." && value != ".." {
        Ok(value.to_owned())
    } else {
        Err(format!("a Kafka topic is 1 to {MAX_TOPIC_LEN} of the characters a-z A-Z 0-9 . _ -"))
    }
}

/// Kafka takes any group id; these are the characters of a topic name, so a group id can be
/// written in a file, a shell and a metric label without quoting.
fn check_group(value: &str) -> Result<String, String> {
    let legal = value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if legal && value.len() <= MAX_GROUP_LEN {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "a consumer group is 1 to {MAX_GROUP_LEN} of the characters a-z A-Z 0-9 . _ - such as monitoring-consumer-group"
        ))
    }
}

fn check_index(value: &str) -> Result<String, String> {
    let forbidden = |c: char| {
        c.is_ascii_uppercase()
            || c.is_whitespace()
            || matches!(c, '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ',' | '#' | ':')
    };
    let bad_start = value.starts_with(['-', '_', '+', '.']);
    if !value.contains(forbidden) && !bad_start && value.len() <= MAX_INDEX_LEN {
        Ok(value.to_owned())
    } else {
        Err("an Elasticsearch index name is lowercase, without spaces or \\/*?\"<>|,#:, and does not start with - _ + .".to_owned())
    }
}

fn check_image(value: &str) -> Result<String, String> {
    if value.contains(char::is_whitespace) {
        Err("expected an image reference such as postgres:16".to_owned())
    } else {
        Ok(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_lookup(|key| map.get(key).cloned())
    }

    /// Writes `toml` to a fresh file and loads it with the environment `pairs`.
    fn with_file(toml: &str, pairs: &[(&str, &str)]) -> (Result<Config, ConfigError>, PathBuf) {
        let dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name("iaas-config"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("platform.toml");
        std::fs::write(&path, toml).unwrap();
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let result = Config::load(Some(&path), |key| map.get(key).cloned());
        (result, path)
    }

    #[test]
    fn defaults_listen_on_loopback_with_embedded_backends() {
        let config = from(&[]).unwrap();
        assert_eq!(config, Config::default());
        assert!(config.listen.ip().is_loopback());
        assert_eq!(config.database, Database::Sqlite(PathBuf::from("iaas-data")));
        assert_eq!(config.kafka_brokers, None);
        assert_eq!(config.elasticsearch_url, None);
        assert_eq!(config.kafka_topic, "infrastructure.events");
        assert_eq!(config.monitoring_group, "monitoring-consumer-group", "the documented group");
    }

    #[test]
    fn the_settings_table_documents_every_default() {
        let config = Config::default();
        let default_of = |key: &str| SETTINGS.iter().find(|s| s.key == key).unwrap().default;
        assert_eq!(default_of("listen"), config.listen.to_string());
        assert_eq!(default_of("shutdown_grace_secs"), config.shutdown_grace.as_secs().to_string());
        assert_eq!(
            default_of("request_timeout_secs"),
            config.http_limits.request_timeout.as_secs().to_string()
        );
        assert_eq!(default_of("body_limit_bytes"), config.http_limits.body_limit.to_string());
        assert_eq!(default_of("kafka_topic"), config.kafka_topic);
        assert_eq!(default_of("monitoring_group"), config.monitoring_group);
        assert_eq!(default_of("cache_invalidation_group"), config.cache_invalidation_group);
        assert_eq!(default_of("cache_prefix"), config.cache_prefix);
        assert_eq!(default_of("elasticsearch_index"), config.elasticsearch_index);
        assert_eq!(default_of("postgres_image"), config.images.postgres);
        assert_eq!(default_of("nginx_image"), config.images.nginx);
        assert_eq!(default_of("log"), config.log_filter);
        assert_eq!(
            default_of("auth_user_cache_ttl_secs"),
            config.auth_user_cache_ttl.as_secs().to_string()
        );
        assert_eq!(
            default_of("auth_token_cache_entries"),
            config.auth_token_cache_entries.to_string()
        );
        let help = settings_help();
        for s in SETTINGS {
            assert!(help.contains(s.key) && help.contains(s.env), "{} missing from help", s.key);
        }
    }

    #[test]
    fn values_are_read_from_the_environment() {
        let config = from(&[
            (LISTEN_VAR, "0.0.0.0:9000"),
            (SHUTDOWN_GRACE_VAR, "3"),
            (DATABASE_URL_VAR, "postgres://u:p@db/iaas"),
            (KAFKA_BROKERS_VAR, "k1:9092,k2:9092"),
            (KAFKA_IDEMPOTENCE_VAR, "off"),
            (ELASTICSEARCH_URL_VAR, "http://es:9200"),
            (POSTGRES_IMAGE_VAR, "local/pg:15"),
            (DATA_DIR_VAR, "/var/lib/iaas"),
        ])
        .unwrap();
        assert!(!config.kafka_idempotence);
        assert!(!crate::kafka_config(&config, "k1:9092").idempotent, "reaches the producer");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.shutdown_grace, Duration::from_secs(3));
        assert_eq!(config.database, Database::Postgres("postgres://u:p@db/iaas".into()));
        assert_eq!(config.kafka_brokers.as_deref(), Some("k1:9092,k2:9092"));
        assert_eq!(config.elasticsearch_url.as_deref(), Some("http://es:9200"));
        assert_eq!(config.images.postgres, "local/pg:15");
        assert_eq!(config.images.nginx, "nginx:1.27");
        assert_eq!(config.auth_key_file, PathBuf::from("/var/lib/iaas/auth.key"));
    }

    #[test]
    fn the_file_overrides_defaults_and_the_environment_overrides_the_file() {
        let toml = r#"
            listen = "127.0.0.1:9100"
            shutdown_grace_secs = 5
            body_limit_bytes = 2048
            kafka_topic = "from.file"
            cache_prefix = "file:"
            data_dir = "/srv/iaas"
        "#;
        let (config, _) = with_file(toml, &[(KAFKA_TOPIC_VAR, "from.env")]);
        let config = config.unwrap();
        assert_eq!(config.listen, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(config.shutdown_grace, Duration::from_secs(5));
        assert_eq!(config.http_limits.body_limit, 2048);
        assert_eq!(config.kafka_topic, "from.env");
        assert_eq!(config.cache_prefix, "file:");
        assert_eq!(config.database, Database::Sqlite(PathBuf::from("/srv/iaas")));
        assert_eq!(config.redis_url, None, "unset everywhere keeps the default");
    }

    #[test]
    fn the_cache_invalidation_group_is_a_checked_setting() {
        let (config, _) = with_file("cache_invalidation_group = \"platform-a-cache\"", &[]);
        assert_eq!(config.unwrap().cache_invalidation_group, "platform-a-cache");
        let config = from(&[(CACHE_INVALIDATION_GROUP_VAR, "platform-b-cache")]).unwrap();
        assert_eq!(config.cache_invalidation_group, "platform-b-cache");
        let err = from(&[(CACHE_INVALIDATION_GROUP_VAR, "no spaces")]).unwrap_err();
        assert!(err.to_string().contains(CACHE_INVALIDATION_GROUP_VAR), "{err}");
        assert_eq!(from(&[]).unwrap().cache_invalidation_group, "cluster-cache-invalidator");
    }

    #[test]
    fn the_monitoring_group_comes_from_the_file_or_the_environment() {
        let (config, _) = with_file("monitoring_group = \"platform-a-indexer\"", &[]);
        assert_eq!(config.unwrap().monitoring_group, "platform-a-indexer");
        let (config, _) = with_file(
            "monitoring_group = \"platform-a-indexer\"",
            &[(MONITORING_GROUP_VAR, "platform-b-indexer")],
        );
        assert_eq!(config.unwrap().monitoring_group, "platform-b-indexer");
        let (config, _) =
            with_file("monitoring_group = \"platform-a-indexer\"", &[(MONITORING_GROUP_VAR, "")]);
        assert_eq!(
            config.unwrap().monitoring_group,
            "monitoring-consumer-group",
            "an empty variable unsets the file's value"
        );
    }

    #[test]
    fn the_token_cache_size_is_a_bounded_whole_number() {
        let off = from(&[(AUTH_TOKEN_CACHE_ENTRIES_VAR, "0")]).unwrap();
        assert_eq!(off.auth_token_cache_entries, 0);
        let most = from(&[(AUTH_TOKEN_CACHE_ENTRIES_VAR, "1000000")]).unwrap();
        assert_eq!(most.auth_token_cache_entries, 1_000_000);
        for bad in ["1000001", "-1", "10k", "0.5", ""] {
            match from(&[(AUTH_TOKEN_CACHE_ENTRIES_VAR, bad)]) {
                // An empty variable unsets the setting, like every other one.
                Ok(config) if bad.is_empty() => assert_eq!(config.auth_token_cache_entries, 10_000),
                Ok(config) => panic!("{bad} accepted as {}", config.auth_token_cache_entries),
                Err(err) => {
                    assert!(err.to_string().contains(AUTH_TOKEN_CACHE_ENTRIES_VAR), "{bad}: {err}")
                }
            }
        }
    }

    #[test]
    fn the_user_cache_ttl_is_whole_seconds_up_to_a_minute() {
        let off = from(&[(AUTH_USER_CACHE_TTL_VAR, "0")]).unwrap();
        assert_eq!(off.auth_user_cache_ttl, Duration::ZERO);
        let minute = from(&[(AUTH_USER_CACHE_TTL_VAR, "60")]).unwrap();
        assert_eq!(minute.auth_user_cache_ttl, Duration::from_secs(60));
        for bad in ["61", "-1", "5s", "0.5"] {
            let err = from(&[(AUTH_USER_CACHE_TTL_VAR, bad)]).unwrap_err();
            assert!(err.to_string().contains(AUTH_USER_CACHE_TTL_VAR), "{bad}: {err}");
        }
    }

    #[test]
    fn an_empty_environment_value_unsets_a_file_value() {
        let (config, _) = with_file("redis_url = \"redis://r:6379\"", &[(REDIS_URL_VAR, "")]);
        assert_eq!(config.unwrap().redis_url, None);
    }

    #[test]
    fn the_config_variable_names_the_file_and_the_argument_wins() {
        let dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name("iaas-config"));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.toml"), dir.join("b.toml"));
        std::fs::write(&a, "kafka_topic = \"from.a\"").unwrap();
        std::fs::write(&b, "kafka_topic = \"from.b\"").unwrap();
        let a_text = a.display().to_string();
        let env = |key: &str| (key == CONFIG_VAR).then(|| a_text.clone());
        assert_eq!(Config::load(None, env).unwrap().kafka_topic, "from.a");
        assert_eq!(Config::load(Some(&b), env).unwrap().kafka_topic, "from.b");
    }

    #[test]
    fn an_unknown_file_key_is_named() {
        let (err, path) = with_file("listen = \"127.0.0.1:1\"\nlisten_addr = \"x\"", &[]);
        let err = err.unwrap_err();
        assert!(matches!(&err, ConfigError::UnknownKey { key, .. } if key == "listen_addr"));
        let text = err.to_string();
        assert!(
            text.contains("listen_addr") && text.contains(&path.display().to_string()),
            "{text}"
        );
    }

    #[test]
    fn a_file_value_of_the_wrong_type_is_named() {
        let (err, _) = with_file("listen = [\"a\"]", &[]);
        assert!(
            matches!(&err, Err(ConfigError::WrongType { key, found, .. }) if key == "listen" && found == "array"),
            "{err:?}"
        );
    }

    #[test]
    fn a_bad_file_value_names_the_file_key_the_value_and_the_file() {
        let (err, path) = with_file("shutdown_grace_secs = 99999", &[]);
        let err = err.unwrap_err();
        let ConfigError::Invalid { key, origin, value, reason } = &err else { panic!("{err:?}") };
        assert_eq!(key, "shutdown_grace_secs");
        assert_eq!(origin, &path.display().to_string());
        assert_eq!(value, "99999");
        assert!(reason.contains("3600"), "{reason}");
    }

    #[test]
    fn unreadable_and_malformed_files_are_errors() {
        let missing = std::env::temp_dir().join(iaas_testkit::isolation::unique_name("absent"));
        let err = Config::load(Some(&missing), |_| None).unwrap_err();
        assert!(matches!(err, ConfigError::Unreadable { .. }), "{err:?}");
        let (err, _) = with_file("listen = ", &[]);
        assert!(matches!(err, Err(ConfigError::Syntax { .. })), "{err:?}");
    }

    #[test]
    fn a_bad_value_names_the_key_and_the_value() {
        let err = from(&[(LISTEN_VAR, "localhost")]).unwrap_err();
        assert!(err.to_string().contains("IAAS_LISTEN=\"localhost\""), "{err}");
        assert!(err.to_string().contains("the environment"), "{err}");
        let err = from(&[(SHUTDOWN_GRACE_VAR, "-1")]).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { key, .. } if key == SHUTDOWN_GRACE_VAR));
        let err = from(&[(DATABASE_URL_VAR, "mysql://root:secret@db/x")]).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(err.to_string().contains("root:***@db"), "{err}");
        let err = from(&[(REDIS_URL_VAR, "http://u:hunter2@r")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn each_setting_rejects_what_it_cannot_use() {
        let cases = [
            (REQUEST_TIMEOUT_VAR, "0"),
            (BODY_LIMIT_VAR, "10"),
            (BODY_LIMIT_VAR, "1e6"),
            (KAFKA_BROKERS_VAR, "k1,k2"),
            (KAFKA_BROKERS_VAR, "k1:notaport"),
            (KAFKA_TOPIC_VAR, "events with spaces"),
            (KAFKA_TOPIC_VAR, ".."),
            (MONITORING_GROUP_VAR, "monitoring group"),
            (MONITORING_GROUP_VAR, "indexer/a"),
            (CACHE_PREFIX_VAR, "a b"),
            (ELASTICSEARCH_URL_VAR, "es:9200"),
            (ELASTICSEARCH_URL_VAR, "https://es:9200"),
            (ELASTICSEARCH_INDEX_VAR, "Logs"),
            (ELASTICSEARCH_INDEX_VAR, "_logs"),
            (POSTGRES_IMAGE_VAR, "postgres 16"),
            (NGINX_IMAGE_VAR, "nginx :1"),
            (DOCKER_HOST_VAR, "tcp://10.0.0.1:2375"),
            (LOG_VAR, "info,[=bad"),
            (HOST_PORT_RANGE_VAR, "20000"),
            (HOST_PORT_RANGE_VAR, "80-9000"),
            (HOST_PORT_RANGE_VAR, "30000-20000"),
            (HOST_PORT_RANGE_VAR, "20000-70000"),
            (PUBLISH_ADDRESS_VAR, "localhost"),
            (HOST_FIREWALL_VAR, "yes"),
            (KAFKA_IDEMPOTENCE_VAR, "true"),
            (TRUSTED_PROXIES_VAR, "10.0.0.0/8, proxy.local"),
            (AUTH_JWKS_VAR, "https://auth/.well-known/jwks.json"),
            (REGISTRATIONS_PER_CLIENT_VAR, "many"),
            (QUOTA_INSTANCES_VAR, "-1"),
            (QUOTA_MEMORY_MIB_VAR, "8 GiB"),
        ];
        for (var, value) in cases {
            match from(&[(var, value)]) {
                Err(ConfigError::Invalid { key, value: shown, .. }) => {
                    assert_eq!(key, var);
                    assert_eq!(shown, value);
                }
                other => panic!("{var}={value:?} was accepted: {other:?}"),
            }
        }
    }

    #[test]
    fn the_platforms_own_ports_come_from_its_listener_and_every_backend() {
        let config = from(&[
            (LISTEN_VAR, "0.0.0.0:8443"),
            (HOST_PORT_RANGE_VAR, "21000-22000"),
            (PUBLISH_ADDRESS_VAR, "10.0.0.5"),
            (DATABASE_URL_VAR, "postgres://u:p%40ss@db.internal:6543/iaas"),
            (REDIS_URL_VAR, "redis://:secret@[::1]/0"),
            (KAFKA_BROKERS_VAR, "k1:19092, k2:29092"),
            (ELASTICSEARCH_URL_VAR, "http://elastic:pw@es:9201/"),
        ])
        .unwrap();
        assert_eq!(config.host_port_range, 21_000..=22_000);
        assert_eq!(config.publish_address.to_string(), "10.0.0.5");
        assert_eq!(config.own_ports(), [8443, 6543, 6379, 9201, 19_092, 29_092]);
        let unix = from(&[(REDIS_URL_VAR, "unix:///run/redis.sock")]).unwrap();
        assert_eq!(unix.own_ports(), [8080], "a socket has no port");
    }

    #[test]
    fn command_line_arguments() {
        let parse = |args: &[&str]| Command::parse(args.iter().map(|a| (*a).to_owned()));
        assert_eq!(parse(&[]).unwrap(), Command::Run { config_file: None });
        assert_eq!(
            parse(&["--config", "a.toml"]).unwrap(),
            Command::Run { config_file: Some(PathBuf::from("a.toml")) }
        );
        assert_eq!(
            parse(&["--config=b.toml"]).unwrap(),
            Command::Run { config_file: Some(PathBuf::from("b.toml")) }
        );
        assert_eq!(parse(&["--help"]).unwrap(), Command::Help);
        assert_eq!(parse(&["-V"]).unwrap(), Command::Version);
        assert!(matches!(parse(&["--config"]), Err(ConfigError::Argument { .. })));
        assert!(matches!(parse(&["--verbose"]), Err(ConfigError::Argument { .. })));
    }
}
