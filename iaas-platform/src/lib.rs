//! The iaas-rs reference platform: the auth, provisioning and monitoring services assembled in
//! one process.
//!
//! [`Platform::start`] opens the store (the embedded SQLite file, or PostgreSQL), connects the
//! bus (in-process, or Kafka), and starts the outbox relay, the Docker event watcher and live
//! status; [`router`] serves the auth API (`/v1/auth/*`), live status (`GET /v1/ws`) and the
//! operational endpoints (`GET /healthz`, `GET /readyz` with a check per backend, `GET /metrics`
//! in the Prometheus format; see `docs/operations.md`), provisioning (`/v1/instances*`),
//! monitoring search (`/v1/events`), the outbox and quota administration, and the dashboard.
//!
//! [`Config`] is layered: built-in defaults, then a TOML file (`--config` or `IAAS_CONFIG`),
//! then the environment; each setting is declared once and [`SETTINGS`] lists every one. It is
//! validated before anything starts. With `elasticsearch_url` set the event log goes to
//! Elasticsearch ([`open_log_index`]), else to an embedded index in the data directory. The
//! first start creates an `admin` account ([`admin`]).
//!
//! Every component is built from the configuration in one place, the composition root
//! (`parts`): the store ([`open_store`]), the Docker engine ([`connect_docker`]), the auth
//! service ([`auth_service`]), the Kafka settings ([`kafka_config`]), the cluster cache, the
//! runtime, the bus and its subscribers, the relay and the watcher. [`Platform::start`] and the
//! single-service examples ([`ProvisioningService`], [`MonitoringService`], [`auth_router`])
//! assemble the same parts.
//!
//! # Layers
//!
//! Modules import only from the layers below them, so the crate has no import circle:
//!
//! ```text
//! cli                                    command line, exit codes
//! server                                 the platform's router, serve, shutdown
//! platform   services                    the processes: all-in-one, and one service each
//! parts                                  the composition root: components from configuration
//! http_layers                            request ids, limits, metrics route, JSON errors
//! telemetry  verify_keys                 metrics recorder; keys of verify-only services
//! auth_keys  health  log_index           key file; readiness checks; the event log index
//! config  error  admin  dashboard        settings; start errors; leaves
//! ```
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = iaas_platform::Config::load_from(Some(std::path::Path::new("platform.toml")))?;
//! let platform = iaas_platform::Platform::start(&config).await?;
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! let router = iaas_platform::router(&platform);
//! iaas_platform::serve(listener, router, &config, iaas_platform::shutdown_signal()).await?;
//! platform.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admin;
mod auth_keys;
pub mod cli;
mod config;
pub mod dashboard;
mod error;
mod health;
mod http_layers;
mod log_index;
mod parts;
mod platform;
mod server;
mod services;
mod telemetry;
mod verify_keys;

pub use auth_keys::token_issuer;
pub use config::{
    AUTH_JWKS_VAR, AUTH_KEY_FILE_VAR, AUTH_TOKEN_CACHE_ENTRIES_VAR, AUTH_USER_CACHE_TTL_VAR,
    BACKUP_S3_BUCKET_VAR, BACKUP_S3_CA_FILE_VAR, BACKUP_S3_ENDPOINT_VAR, BACKUP_S3_KEY_VAR,
    BACKUP_S3_PATH_VAR, BACKUP_S3_PORT_VAR, BACKUP_S3_REGION_VAR, BACKUP_S3_SECRET_FILE_VAR,
    BODY_LIMIT_VAR, CACHE_INVALIDATION_GROUP, CACHE_INVALIDATION_GROUP_VAR, CACHE_PREFIX_VAR,
    CONFIG_VAR, Command, Config, ConfigError, DATA_DIR_VAR, DATABASE_URL_VAR, DOCKER_HOST_VAR,
    DRAIN_VAR, Database, ELASTICSEARCH_INDEX_VAR, ELASTICSEARCH_URL_VAR, HOST_FIREWALL_VAR,
    HOST_PORT_RANGE_VAR, HostFirewall, KAFKA_BROKERS_VAR, KAFKA_IDEMPOTENCE_VAR, KAFKA_TOPIC_VAR,
    LISTEN_VAR, LIVE_SESSION_CHECK_VAR, LIVE_SESSION_RECHECK_VAR, LIVE_SOCKETS_PER_USER_VAR,
    LIVE_SOCKETS_TOTAL_VAR, LOG_VAR, MONITORING_GROUP, MONITORING_GROUP_VAR, NGINX_IMAGE_VAR,
    POSTGRES_HA_IMAGE_VAR, POSTGRES_IMAGE_VAR, PUBLISH_ADDRESS_VAR, QUOTA_INSTANCE_MEMORY_MIB_VAR,
    QUOTA_INSTANCE_MILLICPUS_VAR, QUOTA_INSTANCES_VAR, QUOTA_MEMORY_MIB_VAR, QUOTA_MILLICPUS_VAR,
    REDIS_URL_VAR, REGISTRATIONS_PER_CLIENT_VAR, REQUEST_TIMEOUT_VAR, SECRETS_KEY_FILE_VAR,
    SETTINGS, SHUTDOWN_GRACE_VAR, Setting, TRUSTED_PROXIES_VAR, settings_help,
};
pub use error::StartError;
pub use http_layers::{HttpLimits, REQUEST_ID_HEADER, instrumented};
pub use log_index::open_log_index;
pub use parts::{Repositories, auth_service, connect_docker, kafka_config, open_store};
pub use platform::Platform;
pub use server::{router, router_with_limits, serve, shutdown_after_drain, shutdown_signal};
pub use services::{MonitoringService, ProvisioningService, auth_router};
pub use telemetry::timed_handler;
