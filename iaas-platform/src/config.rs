//! Layered configuration: built-in defaults, then a TOML file, then the environment, each layer
//! overriding the one before. Everything is validated before anything starts: a bad value stops
//! the start with an error naming the key (the file key or the environment variable, whichever
//! supplied it), where it came from, the value (passwords removed) and what was expected.
//!
//! # One declaration per setting
//!
//! Each setting is written once, as one entry of the `settings!` invocation below: the
//! [`Config`] field (name, type, documentation), the file key, the environment variable, the
//! default, the parser that checks a value, whether the value may hold a password, and the
//! one-line meaning `--help` prints. Everything else is generated from that entry: the field,
//! the `*_VAR` constant, the row of [`SETTINGS`] (which the file reader's unknown-key check,
//! [`settings_help`] and the test of `docs/configuration.md` follow), the default of
//! [`Config::default`] (the shown default text, run through the setting's own parser, so the
//! default `--help` shows is the one the platform uses), the overlay of the file and the
//! environment, and the line of `Debug` (secrets redacted). A setting therefore cannot be
//! readable from one layer and missing from another, or documented with a default it does
//! not have.
//!
//! Why a declarative macro rather than a serde struct with `deny_unknown_fields` and
//! per-field defaults: serde would read the file, but the environment overlay, `--help` and the
//! documentation check would still need a second table of variables, default texts and
//! meanings beside the struct, which is the duplication this module exists to remove. And both
//! layers must go through the same parser, so that a value is checked and reported the same
//! way (`invalid key="value" (from origin): reason`) whichever layer supplied it, and so that
//! a file may keep writing any value as a string or an integer.
//!
//! The file is flat (`listen = "127.0.0.1:8080"`), and a key that is not a setting is an
//! error rather than silently ignored: a typo in a file must not quietly leave a default in
//! place. An environment variable set to an empty string counts as unset and hides the file's
//! value.
//!
//! Values built from several settings are methods: [`Config::database`] (PostgreSQL when
//! `database_url` is set, else SQLite in `data_dir`), [`Config::auth_key_path`] (the key file,
//! by default in `data_dir`), [`Config::images`] and [`Config::quota`]; the HTTP limits are
//! `HttpLimits::from_config`.
//!
//! This module imports nothing else of the crate: every other module may depend on it.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use iaas_docker::ImageCatalog;

/// Variable naming a TOML configuration file (the `--config` argument wins over it). It is not
/// a setting: it names the file the settings are read from.
pub const CONFIG_VAR: &str = "IAAS_CONFIG";

/// The monitoring consumer group, the default of the `monitoring_group` setting
/// ([`Config::monitoring_group`]): one indexer per platform, however many processes.
pub const MONITORING_GROUP: &str = default_of("monitoring_group");

/// The default consumer group invalidating a shared (Redis) cluster cache, the default of the
/// `cache_invalidation_group` setting ([`Config::cache_invalidation_group`]).
pub const CACHE_INVALIDATION_GROUP: &str = default_of("cache_invalidation_group");

/// The declared default of the setting `key`, at compile time (a key that is not declared
/// stops the build).
const fn default_of(key: &str) -> &'static str {
    let mut i = 0;
    while i < SETTINGS.len() {
        if same(SETTINGS[i].key.as_bytes(), key.as_bytes()) {
            return SETTINGS[i].default;
        }
        i += 1;
    }
    panic!("no setting has this key");
}

/// `a == b`, in a `const fn`.
const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

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
    /// Whether a value may hold a password (a URL with credentials): errors and `Debug` show
    /// it through `iaas_core::redact_url`.
    pub secret: bool,
}

impl Setting {
    /// The setting whose file key is `key`.
    pub fn by_key(key: &str) -> Option<&'static Setting> {
        SETTINGS.iter().find(|s| s.key == key)
    }
}

/// Declares every setting; see the module docs for what each entry generates.
///
/// The default is one of: `default: "text"` (the value is `text` read by the setting's parser,
/// and `--help` shows `text`), `unset: "text"` (the type's empty value, `None` or no items;
/// `--help` shows `unset: text`) or `implied: "text"` (the empty value too, standing for
/// something derived elsewhere, which `--help` shows as `text`).
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $field:ident: $ty:ty {
            key: $key:literal,
            env: $var:ident = $env:literal,
            $kind:ident: $default:tt,
            parse: $parse:expr,
            $(secret: $secret:tt,)?
            meaning: $meaning:literal $(,)?
        }
    )*) => {
        $(
            #[doc = concat!("The environment variable of the `", $key, "` setting.")]
            pub const $var: &str = $env;
        )*

        /// Every setting, in the order `--help` and the docs list them.
        pub const SETTINGS: &[Setting] = &[$(
            Setting {
                key: $key,
                env: $env,
                default: settings!(@shown $kind $default),
                meaning: $meaning,
                secret: settings!(@secret $($secret)?),
            },
        )*];

        /// How the platform runs: one field per setting, each documenting its file key and
        /// environment variable; the defaults are those of [`SETTINGS`]. `Debug` leaves the
        /// backends' passwords out.
        #[derive(Clone, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Config {
            $(
                $(#[doc = $doc])*
                #[doc = ""]
                #[doc = concat!(
                    "File key `", $key, "`, environment variable `", $env, "`, default `",
                    settings!(@shown $kind $default), "`."
                )]
                pub $field: $ty,
            )*
        }

        impl Default for Config {
            fn default() -> Self {
                Self { $($field: settings!(@default $kind $default, $parse, $key),)* }
            }
        }

        impl std::fmt::Debug for Config {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("Config")
                    $(.field(stringify!($field), settings!(@debug (self.$field) $($secret)?)))*
                    .finish()
            }
        }

        impl Config {
            /// `self` with every setting the file or the environment supplies read over it.
            fn overlay(mut self, layers: &Layers<'_>) -> Result<Self, ConfigError> {
                $(
                    if let Some(value) = layers.parse($key, $parse)? {
                        self.$field = value;
                    }
                )*
                Ok(self)
            }
        }
    };

    (@shown default $text:tt) => { $text };
    (@shown unset $text:tt) => { concat!("unset: ", $text) };
    (@shown implied $text:tt) => { $text };

    (@default default $text:tt, $parse:expr, $key:literal) => {
        match ($parse)($text) {
            Ok(value) => value,
            // The test `every_declared_default_is_accepted_by_its_parser` keeps this unreachable.
            Err(reason) => panic!("the declared default of {} is refused: {reason}", $key),
        }
    };
    (@default unset $text:tt, $parse:expr, $key:literal) => { Default::default() };
    (@default implied $text:tt, $parse:expr, $key:literal) => { Default::default() };

    (@secret) => { false };
    (@secret $secret:tt) => { $secret };

    (@debug ($value:expr)) => { &$value };
    (@debug ($value:expr) true) => { &$value.as_deref().map(iaas_core::redact_url) };
}

settings! {
    /// Address of the HTTP listener: loopback by default, so a first run exposes nothing to the
    /// network.
    listen: SocketAddr {
        key: "listen",
        env: LISTEN_VAR = "IAAS_LISTEN",
        default: "127.0.0.1:8080",
        parse: parsed::<SocketAddr>("an address and port such as 127.0.0.1:8080"),
        meaning: "address and port to serve HTTP on",
    }
    /// Time in-flight requests get to finish after SIGINT/SIGTERM; connections still open
    /// after it are closed.
    shutdown_grace: Duration {
        key: "shutdown_grace_secs",
        env: SHUTDOWN_GRACE_VAR = "IAAS_SHUTDOWN_GRACE_SECS",
        default: "10",
        parse: seconds(0..=MAX_GRACE_SECS),
        meaning: "seconds in-flight requests get after SIGINT/SIGTERM (0-3600)",
    }
    /// After SIGINT/SIGTERM, how long the process keeps serving while `/readyz` answers 503
    /// `draining`, before it stops accepting connections: set it above the time a load
    /// balancer's health check takes to notice (2 s in `deploy/replicas`), so no request meets
    /// a closed port. 0 (the default, for a process without a load balancer) stops at once.
    drain: Duration {
        key: "drain_secs",
        env: DRAIN_VAR = "IAAS_DRAIN_SECS",
        default: "0",
        parse: seconds(0..=MAX_GRACE_SECS),
        meaning: "seconds /readyz answers 503 draining after SIGINT/SIGTERM before the listener closes (0-3600)",
    }
    /// Longest time one HTTP request may take, for every route alike.
    request_timeout: Duration {
        key: "request_timeout_secs",
        env: REQUEST_TIMEOUT_VAR = "IAAS_REQUEST_TIMEOUT_SECS",
        default: "30",
        parse: seconds(1..=MAX_REQUEST_TIMEOUT_SECS),
        meaning: "longest time one HTTP request may take, seconds (1-3600)",
    }
    /// Largest HTTP request body, in bytes, for every route alike.
    body_limit: usize {
        key: "body_limit_bytes",
        env: BODY_LIMIT_VAR = "IAAS_BODY_LIMIT_BYTES",
        default: "65536",
        parse: within(BODY_LIMIT_RANGE, "bytes"),
        meaning: "largest HTTP request body, bytes (1024-67108864)",
    }
    /// Live-status sockets (`GET /v1/ws`) one user may hold open.
    live_sockets_per_user: usize {
        key: "live_sockets_per_user",
        env: LIVE_SOCKETS_PER_USER_VAR = "IAAS_LIVE_SOCKETS_PER_USER",
        default: "100",
        parse: within(LIVE_SOCKETS_RANGE, "sockets"),
        meaning: "live-status sockets one user may hold open (1-1000000)",
    }
    /// Live-status sockets of all users together, in this process.
    live_sockets_total: usize {
        key: "live_sockets_total",
        env: LIVE_SOCKETS_TOTAL_VAR = "IAAS_LIVE_SOCKETS_TOTAL",
        default: "10000",
        parse: within(LIVE_SOCKETS_RANGE, "sockets"),
        meaning: "live-status sockets of all users together, per process (1-1000000)",
    }
    /// How often the logins of the open live-status sockets are asked about while the session
    /// store cannot tell their endings as they happen (its Redis subscription is lost).
    live_session_check: Duration {
        key: "live_session_check_secs",
        env: LIVE_SESSION_CHECK_VAR = "IAAS_LIVE_SESSION_CHECK_SECS",
        default: "2",
        parse: seconds(1..=3600),
        meaning: "seconds between checks of the live sockets' logins while the session store cannot tell endings (1-3600)",
    }
    /// How often the logins of the open live-status sockets are asked about anyway while the
    /// session store tells their endings: a net for news lost on a dead connection.
    live_session_recheck: Duration {
        key: "live_session_recheck_secs",
        env: LIVE_SESSION_RECHECK_VAR = "IAAS_LIVE_SESSION_RECHECK_SECS",
        default: "60",
        parse: seconds(1..=86400),
        meaning: "seconds between checks of the live sockets' logins while the session store tells endings (1-86400)",
    }
    /// Directory for embedded state: the SQLite store unless PostgreSQL is configured, the
    /// event log index, the auth key file.
    data_dir: PathBuf {
        key: "data_dir",
        env: DATA_DIR_VAR = "IAAS_DATA_DIR",
        default: "./iaas-data",
        parse: path,
        meaning: "directory of the embedded database, event index and key file",
    }
    /// A PostgreSQL store instead of the SQLite file in the data directory (see
    /// [`Config::database`]).
    database_url: Option<String> {
        key: "database_url",
        env: DATABASE_URL_VAR = "IAAS_DATABASE_URL",
        unset: "SQLite in data_dir",
        parse: some(check_postgres_url),
        secret: true,
        meaning: "postgres:// URL of the store",
    }
    /// Kafka brokers; the in-process bus when unset.
    kafka_brokers: Option<String> {
        key: "kafka_brokers",
        env: KAFKA_BROKERS_VAR = "IAAS_KAFKA_BROKERS",
        unset: "in-process bus",
        parse: some(check_brokers),
        meaning: "Kafka brokers, host:port[,host:port...]",
    }
    /// The Kafka topic of every event.
    kafka_topic: String {
        key: "kafka_topic",
        env: KAFKA_TOPIC_VAR = "IAAS_KAFKA_TOPIC",
        default: "infrastructure.events",
        parse: check_topic,
        meaning: "topic events travel on",
    }
    /// Whether the producer is idempotent: a batch retried after a lost acknowledgement is
    /// then written once. Turn it off only for a broker that loses its producer state when it
    /// restarts and then refuses the producer's sequence numbers (tansu 0.6.0 on SQLite does):
    /// the relay then delivers at least once, and consumers keyed by event id (the monitoring
    /// index, the cache invalidator) absorb the duplicates.
    kafka_idempotence: bool {
        key: "kafka_idempotence",
        env: KAFKA_IDEMPOTENCE_VAR = "IAAS_KAFKA_IDEMPOTENCE",
        default: "on",
        parse: on_off,
        meaning: "idempotent Kafka producer: on, or off for a broker that cannot keep producer state across its restart",
    }
    /// The Kafka consumer group the monitoring indexer reads in. Every process of one platform
    /// shares it, so each event is indexed once; two platforms on one broker and topic need
    /// different groups, or each would index only the events the other did not take.
    monitoring_group: String {
        key: "monitoring_group",
        env: MONITORING_GROUP_VAR = "IAAS_MONITORING_GROUP",
        default: "monitoring-consumer-group",
        parse: check_group,
        meaning: "Kafka consumer group of the monitoring indexer (one per platform)",
    }
    /// The Kafka consumer group that invalidates a shared (Redis) cluster cache: one member
    /// per event is enough for one cache, so every process sharing that cache shares the
    /// group; platforms with caches of their own on one broker and topic need different
    /// groups. A process with an in-process cache reads every event itself, in no group (a
    /// standalone consumer, which leaves nothing behind on the broker).
    cache_invalidation_group: String {
        key: "cache_invalidation_group",
        env: CACHE_INVALIDATION_GROUP_VAR = "IAAS_CACHE_INVALIDATION_GROUP",
        default: "cluster-cache-invalidator",
        parse: check_group,
        meaning: "Kafka consumer group invalidating a shared Redis cache (one per cache)",
    }
    /// Redis for refresh sessions, login throttling and the cluster cache; in-process when
    /// unset (sessions then end with the process).
    redis_url: Option<String> {
        key: "redis_url",
        env: REDIS_URL_VAR = "IAAS_REDIS_URL",
        unset: "in-process",
        parse: some(check_redis_url),
        secret: true,
        meaning: "redis:// URL for refresh sessions and the cluster cache",
    }
    /// Prefix of every Redis key of the platform (the cluster cache; sessions and login
    /// throttles under `<prefix>auth:`), so several platforms can share one Redis.
    cache_prefix: String {
        key: "cache_prefix",
        env: CACHE_PREFIX_VAR = "IAAS_CACHE_PREFIX",
        default: "iaas:",
        parse: check_cache_prefix,
        meaning: "prefix of every Redis key (cluster cache; sessions under <prefix>auth:)",
    }
    /// The token signing key and refresh secret, created with mode 0600 on the first start;
    /// `auth.key` in the data directory when unset (see [`Config::auth_key_path`]). Every
    /// process of one platform must share it.
    auth_key_file: Option<PathBuf> {
        key: "auth_key_file",
        env: AUTH_KEY_FILE_VAR = "IAAS_AUTH_KEY_FILE",
        implied: "data_dir/auth.key",
        parse: some(path),
        meaning: "token signing key file (created on first start)",
    }
    /// The key the credentials of instances are sealed under while the platform keeps them
    /// (for a provisioning that resumes in another process), created with mode 0600 on the
    /// first start; `secrets.key` in the data directory when unset (see
    /// [`Config::secrets_key_path`]). Every process that provisions must share it.
    secrets_key_file: Option<PathBuf> {
        key: "secrets_key_file",
        env: SECRETS_KEY_FILE_VAR = "IAAS_SECRETS_KEY_FILE",
        implied: "data_dir/secrets.key",
        parse: some(path),
        meaning: "key file sealing kept instance credentials (created on first start)",
    }
    /// Where the provisioning and monitoring services read the public keys of the tokens they
    /// verify: a JWKS file, or an `http://` URL such as the auth service's
    /// `/.well-known/jwks.json`, re-read every 30 s; unset, the public half of the key file.
    /// When it is set, those services never open the key file and cannot sign a token. The
    /// all-in-one platform ignores it.
    auth_jwks: Option<String> {
        key: "auth_jwks",
        env: AUTH_JWKS_VAR = "IAAS_AUTH_JWKS",
        unset: "the key file's public half",
        parse: some(|value: &str| JwksSource::parse(value).map(|_| value.to_owned())),
        secret: true,
        meaning: "provisioning and monitoring services: verify tokens with the public keys of this JWKS file or http:// URL only (the key file is never read)",
    }
    /// How long a user read by a token refresh is reused (0 turns the cache off). A user
    /// deleted or re-scoped directly in the store keeps refreshing for at most this long, on
    /// top of the access-token lifetime (15 minutes) that already bounds such edits; see
    /// `iaas_auth::UserCacheConfig::ttl`.
    auth_user_cache_ttl: Duration {
        key: "auth_user_cache_ttl_secs",
        env: AUTH_USER_CACHE_TTL_VAR = "IAAS_AUTH_USER_CACHE_TTL_SECS",
        default: "5",
        parse: seconds(0..=MAX_AUTH_USER_CACHE_TTL_SECS),
        meaning: "seconds a user read for a token refresh is reused (0-60, 0 = off)",
    }
    /// How many verified access tokens are remembered (0 turns the memo off). Which tokens are
    /// accepted does not change; see `iaas_auth::TokenConfig::verify_cache_capacity`.
    auth_token_cache_entries: usize {
        key: "auth_token_cache_entries",
        env: AUTH_TOKEN_CACHE_ENTRIES_VAR = "IAAS_AUTH_TOKEN_CACHE_ENTRIES",
        default: "10000",
        parse: within(0..=MAX_AUTH_TOKEN_CACHE_ENTRIES, "a whole number of tokens"),
        meaning: "verified access tokens remembered so repeats skip the signature check (0-1000000, 0 = off)",
    }
    /// An Elasticsearch node for the event log; the embedded index in the data directory when
    /// unset.
    elasticsearch_url: Option<String> {
        key: "elasticsearch_url",
        env: ELASTICSEARCH_URL_VAR = "IAAS_ELASTICSEARCH_URL",
        unset: "embedded index",
        parse: some(check_elasticsearch_url),
        secret: true,
        meaning: "http:// URL of an Elasticsearch node for the event log",
    }
    /// The Elasticsearch index.
    elasticsearch_index: String {
        key: "elasticsearch_index",
        env: ELASTICSEARCH_INDEX_VAR = "IAAS_ELASTICSEARCH_INDEX",
        default: "iaas-logs",
        parse: check_index,
        meaning: "Elasticsearch index name",
    }
    /// The image of PostgreSQL instances (see [`Config::images`]).
    postgres_image: String {
        key: "postgres_image",
        env: POSTGRES_IMAGE_VAR = "IAAS_POSTGRES_IMAGE",
        default: "postgres:16",
        parse: check_image,
        meaning: "image of PostgreSQL instances",
    }
    /// The image of highly available PostgreSQL clusters (see [`Config::images`]).
    postgres_ha_image: String {
        key: "postgres_ha_image",
        env: POSTGRES_HA_IMAGE_VAR = "IAAS_POSTGRES_HA_IMAGE",
        default: "iaas-local/postgres-ha:15",
        parse: check_image,
        meaning: "image of highly available PostgreSQL clusters (Patroni, pgBackRest, etcd, HAProxy)",
    }
    /// The S3 server highly available clusters keep their backups and archived WAL on (see
    /// [`Config::backup_s3`]); each cluster's own volume when unset.
    backup_s3_endpoint: Option<String> {
        key: "backup_s3_endpoint",
        env: BACKUP_S3_ENDPOINT_VAR = "IAAS_BACKUP_S3_ENDPOINT",
        unset: "each cluster's own volume",
        parse: some(check_host_name),
        meaning: "S3 server (host name, HTTPS) for the backups of highly available clusters",
    }
    /// Its HTTPS port.
    backup_s3_port: Option<u16> {
        key: "backup_s3_port",
        env: BACKUP_S3_PORT_VAR = "IAAS_BACKUP_S3_PORT",
        implied: "443",
        parse: some(within(1..=u16::MAX, "a port")),
        meaning: "HTTPS port of backup_s3_endpoint",
    }
    /// The bucket (needed with `backup_s3_endpoint`).
    backup_s3_bucket: Option<String> {
        key: "backup_s3_bucket",
        env: BACKUP_S3_BUCKET_VAR = "IAAS_BACKUP_S3_BUCKET",
        unset: "none",
        parse: some(check_bucket),
        meaning: "bucket of the backups on backup_s3_endpoint",
    }
    /// The bucket's region.
    backup_s3_region: String {
        key: "backup_s3_region",
        env: BACKUP_S3_REGION_VAR = "IAAS_BACKUP_S3_REGION",
        default: "us-east-1",
        parse: check_region,
        meaning: "region of backup_s3_bucket",
    }
    /// The path in the bucket every cluster's stanza lives under.
    backup_s3_path: String {
        key: "backup_s3_path",
        env: BACKUP_S3_PATH_VAR = "IAAS_BACKUP_S3_PATH",
        default: "/",
        parse: check_bucket_path,
        meaning: "path in backup_s3_bucket under which each cluster keeps its backups",
    }
    /// The access key id (needed with `backup_s3_endpoint`).
    backup_s3_key: Option<String> {
        key: "backup_s3_key",
        env: BACKUP_S3_KEY_VAR = "IAAS_BACKUP_S3_KEY",
        unset: "none",
        parse: some(check_access_key),
        meaning: "access key id for backup_s3_bucket",
    }
    /// A file holding the secret access key (needed with `backup_s3_endpoint`).
    backup_s3_secret_file: Option<PathBuf> {
        key: "backup_s3_secret_file",
        env: BACKUP_S3_SECRET_FILE_VAR = "IAAS_BACKUP_S3_SECRET_FILE",
        unset: "none",
        parse: some(path),
        meaning: "file holding the secret access key for backup_s3_bucket",
    }
    /// A PEM file of the CA certificates the S3 server's certificate is checked against.
    backup_s3_ca_file: Option<PathBuf> {
        key: "backup_s3_ca_file",
        env: BACKUP_S3_CA_FILE_VAR = "IAAS_BACKUP_S3_CA_FILE",
        unset: "the system's CAs",
        parse: some(path),
        meaning: "PEM file of CAs the S3 server's certificate is checked against",
    }
    /// The image of Nginx instances (see [`Config::images`]).
    nginx_image: String {
        key: "nginx_image",
        env: NGINX_IMAGE_VAR = "IAAS_NGINX_IMAGE",
        default: "nginx:1.27",
        parse: check_image,
        meaning: "image of Nginx instances",
    }
    /// Instances (not deleted) a user may hold unless an administrator gave them another
    /// limit (see [`Config::quota`]).
    quota_instances: u32 {
        key: "quota_instances",
        env: QUOTA_INSTANCES_VAR = "IAAS_QUOTA_INSTANCES",
        default: "10",
        parse: within(0..=u32::MAX, "a whole number"),
        meaning: "instances (not deleted) one user may hold, unless an admin overrides it",
    }
    /// CPU of all of a user's containers, in thousandths of a core (see [`Config::quota`]).
    quota_millicpus: u32 {
        key: "quota_millicpus",
        env: QUOTA_MILLICPUS_VAR = "IAAS_QUOTA_MILLICPUS",
        default: "4000",
        parse: within(0..=u32::MAX, "a whole number"),
        meaning: "CPU of all of one user's containers, thousandths of a core",
    }
    /// Memory of all of a user's containers, in MiB (see [`Config::quota`]).
    quota_memory_mib: u32 {
        key: "quota_memory_mib",
        env: QUOTA_MEMORY_MIB_VAR = "IAAS_QUOTA_MEMORY_MIB",
        default: "8192",
        parse: within(0..=u32::MAX, "a whole number"),
        meaning: "memory of all of one user's containers, MiB",
    }
    /// CPU one instance may ask for per container, in thousandths of a core (see
    /// [`Config::quota`]).
    quota_instance_millicpus: u32 {
        key: "quota_instance_millicpus",
        env: QUOTA_INSTANCE_MILLICPUS_VAR = "IAAS_QUOTA_INSTANCE_MILLICPUS",
        default: "2000",
        parse: within(0..=u32::MAX, "a whole number"),
        meaning: "CPU one instance may ask for per container, thousandths of a core",
    }
    /// Memory one instance may ask for per container, in MiB (see [`Config::quota`]).
    quota_instance_memory_mib: u32 {
        key: "quota_instance_memory_mib",
        env: QUOTA_INSTANCE_MEMORY_MIB_VAR = "IAAS_QUOTA_INSTANCE_MEMORY_MIB",
        default: "4096",
        parse: within(0..=u32::MAX, "a whole number"),
        meaning: "memory one instance may ask for per container, MiB",
    }
    /// The host ports a tenant may choose to publish on. The ports of this platform's own
    /// listener and backends ([`Config::own_ports`]), and the well-known ports of its kinds of
    /// backend, are refused even inside the range (see `iaas_core::HostPortPolicy`); ports the
    /// engine picks are always allowed.
    host_port_range: RangeInclusive<u16> {
        key: "host_port_range",
        env: HOST_PORT_RANGE_VAR = "IAAS_HOST_PORT_RANGE",
        default: "20000-29999",
        parse: port_range,
        meaning: "host ports tenants may choose, FIRST-LAST (the platform's own ports are always refused)",
    }
    /// The host address instances' ports are published on; the default is reachable from
    /// this machine only.
    publish_address: IpAddr {
        key: "publish_address",
        env: PUBLISH_ADDRESS_VAR = "IAAS_PUBLISH_ADDRESS",
        default: "127.0.0.1",
        parse: parsed::<IpAddr>("an IP address such as 127.0.0.1"),
        meaning: "host address instances' ports are published on",
    }
    /// Reverse proxies whose `X-Forwarded-For` is believed for the client address that
    /// throttling counts. Behind a proxy that is not listed, every client shares the proxy's
    /// address.
    trusted_proxies: Vec<ipnet::IpNet> {
        key: "trusted_proxies",
        env: TRUSTED_PROXIES_VAR = "IAAS_TRUSTED_PROXIES",
        unset: "none",
        parse: networks,
        meaning: "reverse proxies whose X-Forwarded-For is believed, comma-separated addresses or CIDR blocks",
    }
    /// Registrations one client address may make per hour.
    registrations_per_client: u64 {
        key: "registrations_per_client",
        env: REGISTRATIONS_PER_CLIENT_VAR = "IAAS_REGISTRATIONS_PER_CLIENT",
        default: "20",
        parse: within(0..=u64::MAX, "a whole number"),
        meaning: "registrations one client address may make per hour",
    }
    /// Whether the rule that drops traffic from tenants' networks to the host is added at
    /// start.
    host_firewall: HostFirewall {
        key: "host_firewall",
        env: HOST_FIREWALL_VAR = "IAAS_HOST_FIREWALL",
        default: "auto",
        parse: HostFirewall::parse,
        meaning: "drop traffic from tenants' networks to the host: auto (warn if it cannot), on (refuse to start), off",
    }
    /// The Docker engine (the variable every Docker client reads); the local socket when
    /// unset.
    docker_host: Option<String> {
        key: "docker_host",
        env: DOCKER_HOST_VAR = "DOCKER_HOST",
        implied: "unix:///var/run/docker.sock",
        parse: some(check_docker_host),
        meaning: "Docker engine (unix:// socket)",
    }
    /// The log filter (the variable `tracing-subscriber` reads).
    log_filter: String {
        key: "log",
        env: LOG_VAR = "RUST_LOG",
        default: "info",
        parse: check_log_filter,
        meaning: "log filter (tracing EnvFilter syntax)",
    }
}

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

impl HostFirewall {
    fn parse(value: &str) -> Result<Self, String> {
        match value {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            _ => Err("expected auto, on or off".to_owned()),
        }
    }
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

/// Where a service that only verifies tokens finds the public keys (the `auth_jwks` setting;
/// reading them is `verify_keys`' work).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JwksSource {
    /// A file holding the document.
    File(PathBuf),
    /// An `http://` URL serving it.
    Url(String),
}

impl JwksSource {
    /// `value` of the `auth_jwks` setting: an `http://` URL or a file path.
    pub(crate) fn parse(value: &str) -> Result<Self, String> {
        if value.starts_with("http://") {
            Ok(Self::Url(value.to_owned()))
        } else if value.contains("://") {
            Err("expected a file path or an http:// URL (https is not built in: serve the \
                 document inside the cluster, or copy it to a file)"
                .to_owned())
        } else {
            Ok(Self::File(value.into()))
        }
    }
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Url(url) => f.write_str(&iaas_core::redact_url(url)),
        }
    }
}

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
/// The longest user cache TTL accepted: the window it adds after an out-of-band delete must
/// stay small beside the 15 minutes of an access token.
const MAX_AUTH_USER_CACHE_TTL_SECS: u64 = 60;
/// The most verified tokens remembered (about 1 KB each with the token: 1 GB at this bound).
const MAX_AUTH_TOKEN_CACHE_ENTRIES: usize = 1_000_000;
/// The longest request timeout accepted.
const MAX_REQUEST_TIMEOUT_SECS: u64 = 3600;
/// The body limit bounds: below 1 KiB no request of the API fits; above 64 MiB a few
/// concurrent requests can exhaust memory.
const BODY_LIMIT_RANGE: RangeInclusive<usize> = 1024..=64 * 1024 * 1024;
/// Live-status sockets a setting may allow (each holds a file descriptor and about
/// 10 KiB; see docs/benchmarks.md).
const LIVE_SOCKETS_RANGE: RangeInclusive<usize> = 1..=1_000_000;

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
        Config::default().overlay(&Layers { file: &FileLayer::default(), env: &lookup })
    }

    /// Defaults, then the file (`config_file`, else the one `IAAS_CONFIG` names, else none),
    /// then the environment read through `lookup`.
    pub fn load(
        config_file: Option<&Path>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        Self::load_with_defaults(config_file, lookup, Config::default())
    }

    /// [`Config::load`] over other defaults (a single-service binary's own port). A setting
    /// neither the file nor the environment supplies keeps its value from `defaults`.
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
        defaults.overlay(&Layers { file: &file, env: &lookup })
    }

    /// [`Config::load`] over the process arguments' `--config` and the process environment.
    pub fn load_from(config_file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load(config_file, |key| std::env::var(key).ok())
    }

    /// The store: PostgreSQL when `database_url` is set, else the SQLite file in `data_dir`.
    pub fn database(&self) -> Database {
        match &self.database_url {
            Some(url) => Database::Postgres(url.clone()),
            None => Database::Sqlite(self.data_dir.clone()),
        }
    }

    /// The auth key file: `auth_key_file`, else `auth.key` in `data_dir`.
    pub fn auth_key_path(&self) -> PathBuf {
        self.auth_key_file.clone().unwrap_or_else(|| self.data_dir.join("auth.key"))
    }

    /// The key file sealing kept credentials: `secrets_key_file`, else `secrets.key` in
    /// `data_dir`.
    pub fn secrets_key_path(&self) -> PathBuf {
        self.secrets_key_file.clone().unwrap_or_else(|| self.data_dir.join("secrets.key"))
    }

    /// The S3 repository of `backup_s3_*`, its secret and CA read from their files; `None`
    /// when `backup_s3_endpoint` is unset. An endpoint without a bucket, key or secret file,
    /// or a file that cannot be read, is an error naming the setting.
    pub fn backup_s3(&self) -> Result<Option<iaas_docker::S3Repository>, String> {
        let Some(endpoint) = &self.backup_s3_endpoint else {
            let stray = [
                ("backup_s3_bucket", self.backup_s3_bucket.is_some()),
                ("backup_s3_key", self.backup_s3_key.is_some()),
                ("backup_s3_secret_file", self.backup_s3_secret_file.is_some()),
            ];
            return match stray.iter().find(|(_, set)| *set) {
                Some((key, _)) => Err(format!("{key} is set but backup_s3_endpoint is not")),
                None => Ok(None),
            };
        };
        let needed = |key: &str| format!("backup_s3_endpoint is set: {key} is needed too");
        let bucket = self.backup_s3_bucket.clone().ok_or_else(|| needed("backup_s3_bucket"))?;
        let key = self.backup_s3_key.clone().ok_or_else(|| needed("backup_s3_key"))?;
        let secret_file =
            self.backup_s3_secret_file.as_ref().ok_or_else(|| needed("backup_s3_secret_file"))?;
        let read = |setting: &str, file: &Path| {
            std::fs::read_to_string(file)
                .map_err(|error| format!("{setting}: cannot read {}: {error}", file.display()))
        };
        let secret = read("backup_s3_secret_file", secret_file)?.trim().to_owned();
        if secret.is_empty() || secret.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "backup_s3_secret_file: {} must hold the secret key alone, on one line",
                secret_file.display()
            ));
        }
        let ca_pem = match &self.backup_s3_ca_file {
            Some(file) => {
                let pem = read("backup_s3_ca_file", file)?;
                // It travels in one environment variable of every member (the kernel takes at
                // most 128 KiB per string): the gateway's own CA, not a system bundle.
                if pem.len() > MAX_S3_CA_BYTES {
                    return Err(format!(
                        "backup_s3_ca_file: {} holds {} bytes; at most {MAX_S3_CA_BYTES} (the CAs of the S3 server only, not a system bundle)",
                        file.display(),
                        pem.len()
                    ));
                }
                if !pem.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(format!(
                        "backup_s3_ca_file: {} holds no PEM certificate",
                        file.display()
                    ));
                }
                Some(pem)
            }
            None => None,
        };
        let mut s3 = iaas_docker::S3Repository::new(endpoint.clone(), bucket, key, secret);
        s3.port = self.backup_s3_port;
        s3.region.clone_from(&self.backup_s3_region);
        s3.path.clone_from(&self.backup_s3_path);
        s3.ca_pem = ca_pem;
        Ok(Some(s3))
    }

    /// The images per instance kind (`postgres_image`, `postgres_ha_image`, `nginx_image`).
    pub fn images(&self) -> ImageCatalog {
        let mut images = ImageCatalog::default();
        images.postgres.clone_from(&self.postgres_image);
        images.postgres_ha.clone_from(&self.postgres_ha_image);
        images.nginx.clone_from(&self.nginx_image);
        images
    }

    /// The limits of every user an administrator has not given others (the five `quota_*`
    /// settings).
    pub fn quota(&self) -> iaas_core::Quota {
        iaas_core::Quota::default().with(&iaas_core::QuotaOverride {
            instances: Some(self.quota_instances),
            millicpus: Some(u64::from(self.quota_millicpus)),
            memory_mib: Some(u64::from(self.quota_memory_mib)),
            instance_millicpus: Some(self.quota_instance_millicpus),
            instance_memory_mib: Some(self.quota_instance_memory_mib),
        })
    }

    /// The ports this platform itself listens on or connects to: its HTTP listener and every
    /// configured backend (the scheme's default port when a URL names none). Tenants may never
    /// publish on them, whatever `host_port_range` says.
    pub fn own_ports(&self) -> Vec<u16> {
        let mut ports = vec![self.listen.port()];
        if let Some(url) = &self.database_url {
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
            let setting = Setting::by_key(&key).ok_or_else(|| ConfigError::UnknownKey {
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
    /// The value of `setting` and where it came from (the name that supplied it, and the
    /// origin): the environment over the file; `None` when neither sets it (an empty value
    /// counts as unset, so `IAAS_REDIS_URL=` switches a file's Redis back off).
    fn lookup(&self, setting: &Setting) -> Option<(String, &'static str, String)> {
        match (self.env)(setting.env) {
            Some(value) => {
                non_empty(Some(value)).map(|value| (value, setting.env, "the environment".into()))
            }
            None => non_empty(self.file.values.get(setting.key).cloned())
                .map(|value| (value, setting.key, self.file.path.clone())),
        }
    }

    /// The value of the setting `key` read by `parse`, if a layer supplies one; an error names
    /// the key, the origin and the value (redacted when the setting is secret).
    fn parse<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(setting) = Setting::by_key(key) else { return Ok(None) };
        let Some((value, name, origin)) = self.lookup(setting) else { return Ok(None) };
        parse(value.trim()).map(Some).map_err(|reason| ConfigError::Invalid {
            key: name.to_owned(),
            origin,
            value: if setting.secret { iaas_core::redact_url(&value) } else { value.clone() },
            reason,
        })
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// `parse` for a setting that may be unset: what it accepts, as `Some`.
fn some<T>(
    parse: impl Fn(&str) -> Result<T, String>,
) -> impl Fn(&str) -> Result<Option<T>, String> {
    move |value| parse(value).map(Some)
}

/// A value of `T`'s own syntax; `expected` describes it.
fn parsed<T: FromStr>(expected: &'static str) -> impl Fn(&str) -> Result<T, String> {
    move |value| value.parse().map_err(|_| format!("expected {expected}"))
}

/// A whole number within `range`, in `unit`.
fn within<T>(range: RangeInclusive<T>, unit: &'static str) -> impl Fn(&str) -> Result<T, String>
where
    T: FromStr + PartialOrd + Display,
{
    move |value| match value.parse::<T>() {
        Ok(number) if range.contains(&number) => Ok(number),
        _ => Err(format!("expected {unit} between {} and {}", range.start(), range.end())),
    }
}

/// Whole seconds within `range`.
fn seconds(range: RangeInclusive<u64>) -> impl Fn(&str) -> Result<Duration, String> {
    let secs = within(range, "whole seconds");
    move |value| secs(value).map(Duration::from_secs)
}

fn path(value: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(value))
}

fn on_off(value: &str) -> Result<bool, String> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("expected on or off".to_owned()),
    }
}

/// Most bytes of `backup_s3_ca_file`.
const MAX_S3_CA_BYTES: usize = 64 * 1024;

/// A host name as a certificate names it.
fn check_host_name(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if valid {
        Ok(value.to_owned())
    } else {
        Err("expected a host name such as s3.eu-west-1.amazonaws.com".to_owned())
    }
}

/// An S3 bucket name (lower-case letters, digits, dots and dashes, 3 to 63).
fn check_bucket(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let valid = (3..=63).contains(&bytes.len())
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes.iter().all(|b| edge(b) || *b == b'.' || *b == b'-');
    if valid {
        Ok(value.to_owned())
    } else {
        Err("expected a bucket name: 3 to 63 lower-case letters, digits, dots or dashes".to_owned())
    }
}

/// A region name (`us-east-1`).
fn check_region(value: &str) -> Result<String, String> {
    let valid = (1..=32).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid { Ok(value.to_owned()) } else { Err("expected a region such as eu-west-1".to_owned()) }
}

/// An absolute path in a bucket (`/`, `/pg/backups`).
fn check_bucket_path(value: &str) -> Result<String, String> {
    let valid = value.starts_with('/')
        && value.len() <= 256
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
    if valid {
        Ok(value.to_owned())
    } else {
        Err("expected an absolute path such as / or /pg-backups (letters, digits, . _ - /)"
            .to_owned())
    }
}

/// An access key id (letters and digits; no shell or configuration syntax).
fn check_access_key(value: &str) -> Result<String, String> {
    let valid = (1..=128).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if valid {
        Ok(value.to_owned())
    } else {
        Err("expected an access key id (letters, digits, . _ -)".to_owned())
    }
}

fn check_postgres_url(value: &str) -> Result<String, String> {
    if value.starts_with("postgres://") || value.starts_with("postgresql://") {
        Ok(value.to_owned())
    } else {
        Err("expected a postgres:// URL (leave it unset for the embedded SQLite file)".to_owned())
    }
}

fn check_redis_url(value: &str) -> Result<String, String> {
    if ["redis://", "rediss://", "unix://"].iter().any(|s| value.starts_with(s)) {
        Ok(value.to_owned())
    } else {
        Err("expected a redis://, rediss:// or unix:// URL".to_owned())
    }
}

fn check_elasticsearch_url(value: &str) -> Result<String, String> {
    match value.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(value.to_owned()),
        _ if value.starts_with("https://") => Err(
            "https needs iaas-events' elasticsearch-tls feature, which this build does not have; use http:// on a trusted network"
                .to_owned(),
        ),
        _ => Err("expected an http:// URL such as http://127.0.0.1:9200".to_owned()),
    }
}

fn check_docker_host(value: &str) -> Result<String, String> {
    if value.starts_with("unix://") {
        Ok(value.to_owned())
    } else {
        Err("expected a unix:// socket such as unix:///var/run/docker.sock (the only Docker transport built in)".to_owned())
    }
}

fn check_log_filter(value: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(value)
        .map(|_| value.to_owned())
        .map_err(|e| format!("not a log filter such as info or iaas_docker=debug: {e}"))
}

fn check_cache_prefix(value: &str) -> Result<String, String> {
    if value.len() <= MAX_CACHE_PREFIX_LEN && !value.contains(char::is_whitespace) {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "expected at most {MAX_CACHE_PREFIX_LEN} characters without spaces, such as iaas:"
        ))
    }
}

fn port_range(value: &str) -> Result<RangeInclusive<u16>, String> {
    let range = value
        .split_once('-')
        .and_then(|(first, last)| Some(first.trim().parse().ok()?..=last.trim().parse().ok()?))
        .ok_or_else(|| "expected FIRST-LAST, such as 20000-29999".to_owned())?;
    iaas_core::HostPortPolicy::new(range.clone()).map(|_| range).map_err(|err| match err {
        iaas_core::Error::Invalid { reason, .. } => reason,
        other => other.to_string(),
    })
}

fn networks(value: &str) -> Result<Vec<ipnet::IpNet>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{item:?} is not an address or CIDR block such as 10.0.0.0/8"))
        })
        .collect()
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
        assert_eq!(config.database(), Database::Sqlite(PathBuf::from("./iaas-data")));
        assert_eq!(config.auth_key_path(), PathBuf::from("./iaas-data/auth.key"));
        assert_eq!(config.kafka_brokers, None);
        assert_eq!(config.elasticsearch_url, None);
        assert_eq!(config.kafka_topic, "infrastructure.events");
        assert_eq!(config.monitoring_group, "monitoring-consumer-group", "the documented group");
    }

    #[test]
    fn every_declared_default_is_accepted_by_its_parser() {
        // Config::default reads each shown default through the setting's parser and panics
        // on a refusal; this runs it.
        let config = Config::default();
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
        assert_eq!(config.request_timeout, Duration::from_secs(30));
        assert_eq!(config.body_limit, 64 * 1024);
        assert_eq!(config.host_firewall, HostFirewall::Auto);
        assert!(config.kafka_idempotence);
        assert!(config.trusted_proxies.is_empty());
        assert_eq!(config.registrations_per_client, 20);
        assert_eq!(config.log_filter, "info");
    }

    #[test]
    fn the_declared_defaults_are_those_of_the_libraries() {
        let config = Config::default();
        assert_eq!(config.images(), ImageCatalog::default());
        assert_eq!(config.quota(), iaas_core::Quota::default());
        assert_eq!(config.host_port_range, iaas_core::HostPortPolicy::DEFAULT_RANGE);
        assert_eq!(
            config.auth_token_cache_entries,
            iaas_auth::TokenConfig::DEFAULT_VERIFY_CACHE_CAPACITY
        );
        assert_eq!(
            iaas_auth::UserCacheConfig::with_ttl(config.auth_user_cache_ttl).ttl,
            iaas_auth::UserCacheConfig::default().ttl
        );
    }

    #[test]
    fn every_setting_has_its_own_key_and_variable_and_is_in_the_help() {
        let keys: std::collections::BTreeSet<_> = SETTINGS.iter().map(|s| s.key).collect();
        let vars: std::collections::BTreeSet<_> = SETTINGS.iter().map(|s| s.env).collect();
        assert_eq!(keys.len(), SETTINGS.len(), "a file key is declared twice");
        assert_eq!(vars.len(), SETTINGS.len(), "a variable is declared twice");
        assert!(!vars.contains(CONFIG_VAR), "{CONFIG_VAR} names the file, it is not a setting");
        let help = settings_help();
        for s in SETTINGS {
            assert!(help.contains(s.key) && help.contains(s.env), "{} missing from help", s.key);
            assert!(help.contains(&format!("[default: {}]", s.default)), "{}", s.key);
            assert_eq!(Setting::by_key(s.key), Some(s));
        }
    }

    #[test]
    fn debug_leaves_passwords_out() {
        let config = from(&[
            (DATABASE_URL_VAR, "postgres://u:pg-secret@db/iaas"),
            (REDIS_URL_VAR, "redis://:redis-secret@r:6379"),
            (ELASTICSEARCH_URL_VAR, "http://elastic:es-secret@es:9200"),
            (AUTH_JWKS_VAR, "http://u:jwks-secret@auth/jwks.json"),
        ])
        .unwrap();
        let shown = format!("{config:?} {:?}", config.database());
        for secret in ["pg-secret", "redis-secret", "es-secret", "jwks-secret"] {
            assert!(!shown.contains(secret), "{secret} shown: {shown}");
        }
        assert!(shown.contains("u:***@db"), "{shown}");
        assert!(shown.contains("kafka_topic"), "every field is shown: {shown}");
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
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.shutdown_grace, Duration::from_secs(3));
        assert_eq!(config.database(), Database::Postgres("postgres://u:p@db/iaas".into()));
        assert_eq!(config.kafka_brokers.as_deref(), Some("k1:9092,k2:9092"));
        assert_eq!(config.elasticsearch_url.as_deref(), Some("http://es:9200"));
        assert_eq!(config.images().postgres, "local/pg:15");
        assert_eq!(config.images().nginx, "nginx:1.27");
        assert_eq!(config.auth_key_path(), PathBuf::from("/var/lib/iaas/auth.key"));
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
        assert_eq!(config.body_limit, 2048);
        assert_eq!(config.kafka_topic, "from.env");
        assert_eq!(config.cache_prefix, "file:");
        assert_eq!(config.database(), Database::Sqlite(PathBuf::from("/srv/iaas")));
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
        let err = from(&[(ELASTICSEARCH_URL_VAR, "https://elastic:hunter3@es")]).unwrap_err();
        assert!(!err.to_string().contains("hunter3"), "{err}");
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

    #[test]
    fn an_s3_backup_repository_needs_all_its_parts_and_reads_its_files() {
        assert_eq!(from(&[]).unwrap().backup_s3(), Ok(None));
        let err = from(&[("IAAS_BACKUP_S3_BUCKET", "pg-backups")]).unwrap().backup_s3();
        assert!(err.unwrap_err().contains("backup_s3_endpoint is not"));
        let endpoint = ("IAAS_BACKUP_S3_ENDPOINT", "s3.example.test");
        let err = from(&[endpoint]).unwrap().backup_s3().unwrap_err();
        assert!(err.contains("backup_s3_bucket is needed"), "{err}");
        for (key, bad) in [
            ("IAAS_BACKUP_S3_ENDPOINT", "s3 example"),
            ("IAAS_BACKUP_S3_BUCKET", "Pg_Backups"),
            ("IAAS_BACKUP_S3_PATH", "relative"),
            ("IAAS_BACKUP_S3_KEY", "key with space"),
            ("IAAS_BACKUP_S3_PORT", "0"),
        ] {
            assert!(from(&[(key, bad)]).is_err(), "{key}={bad} was accepted");
        }

        let dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name("iaas-s3"));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "wJalrXUtnFEMI/K7MDENG\n").unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
            .unwrap();
        let (secret_path, ca_path) = (secret.display().to_string(), ca.display().to_string());
        let full = [
            endpoint,
            ("IAAS_BACKUP_S3_BUCKET", "pg-backups"),
            ("IAAS_BACKUP_S3_KEY", "AKIAEXAMPLE"),
            ("IAAS_BACKUP_S3_SECRET_FILE", secret_path.as_str()),
            ("IAAS_BACKUP_S3_CA_FILE", ca_path.as_str()),
            ("IAAS_BACKUP_S3_PORT", "8443"),
        ];
        let s3 = from(&full).unwrap().backup_s3().unwrap().expect("a repository");
        assert_eq!(
            (s3.secret.as_str(), s3.port, s3.path.as_str()),
            ("wJalrXUtnFEMI/K7MDENG", Some(8443), "/")
        );
        assert!(s3.ca_pem.is_some_and(|pem| pem.contains("BEGIN CERTIFICATE")));
        std::fs::write(&ca, "not a certificate").unwrap();
        let err = from(&full).unwrap().backup_s3().unwrap_err();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        std::fs::remove_file(&secret).unwrap();
        let err = from(&full).unwrap().backup_s3().unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
        assert!(!err.contains("wJalr"), "no secret in the error: {err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
