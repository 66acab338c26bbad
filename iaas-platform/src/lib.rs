//! The iaas-rs reference platform: the auth, provisioning and monitoring services assembled in
//! one process.
//!
//! Today it serves the operational endpoints every service has (`GET /healthz`, `GET /readyz`)
//! with JSON errors, structured logs and graceful shutdown; the service routers are mounted here
//! as their crates land. [`Config`] is read from the environment and validated at start.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = iaas_platform::Config::from_env()?;
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! iaas_platform::serve(listener, &config, iaas_platform::shutdown_signal()).await?;
//! # Ok(()) }
//! ```

mod config;
mod health;
mod server;

pub use config::{Config, ConfigError, LISTEN_VAR, SHUTDOWN_GRACE_VAR};
pub use server::{router, serve, shutdown_signal};
