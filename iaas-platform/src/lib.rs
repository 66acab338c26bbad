//! The iaas-rs reference platform: the auth, provisioning and monitoring services assembled in
//! one process.
//!
//! [`Platform::start`] opens the store (the embedded SQLite file, or PostgreSQL), connects the
//! bus (in-process, or Kafka), and starts the outbox relay, the Docker event watcher and live
//! status; [`router`] serves the auth API (`/v1/auth/*`), live status (`GET /v1/ws`) and the
//! operational endpoints (`GET /healthz`, `GET /readyz` with a check per backend); the other
//! service routers are mounted here as their crates land. [`Config`] is read from the environment and validated at start.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = iaas_platform::Config::from_env()?;
//! let platform = iaas_platform::Platform::start(&config).await?;
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! let router = iaas_platform::router(&platform);
//! iaas_platform::serve(listener, router, &config, iaas_platform::shutdown_signal()).await?;
//! platform.shutdown().await;
//! # Ok(()) }
//! ```

mod auth_keys;
mod config;
mod health;
mod platform;
mod server;

pub use config::{
    AUTH_KEY_FILE_VAR, Config, ConfigError, DATA_DIR_VAR, DATABASE_URL_VAR, Database,
    KAFKA_BROKERS_VAR, LISTEN_VAR, REDIS_URL_VAR, SHUTDOWN_GRACE_VAR,
};
pub use platform::{Platform, Repositories, StartError};
pub use server::{router, serve, shutdown_signal};
