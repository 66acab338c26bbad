//! The backend for more than one platform process: PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use iaas_core::{SystemClock, redact_url as redact};
use sqlx::postgres::PgPoolOptions;

use crate::error::StoreError;
use crate::sql::sql_store;

/// Where and how to connect to PostgreSQL.
#[derive(Clone)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// How long a call waits for a free connection (or a new one) before it fails as
    /// unavailable; also bounds how long a down database stalls a request.
    pub acquire_timeout: Duration,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

impl PostgresConfig {
    /// Defaults for `url`: 10 connections, 5 s acquire timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), max_connections: 10, acquire_timeout: Duration::from_secs(5) }
    }
}

sql_store!(
    /// Users, instances and outbox in PostgreSQL.
    PostgresStore,
    sqlx::Postgres,
    backend = "postgres",
    // Said, not assumed: the quota check reads the owner's instances after taking its lock, and
    // must see what committed meanwhile, which a server defaulting to REPEATABLE READ would hide.
    begin_write = "BEGIN ISOLATION LEVEL READ COMMITTED",
    // A transaction-scoped advisory lock per owner: quota-checked creates of one owner queue
    // for it, from any number of platform processes.
    lock_owner = Some("SELECT pg_advisory_xact_lock($1)")
);

impl PostgresStore {
    /// Connects and applies the embedded migrations (concurrent starts are serialized by the
    /// migrator's advisory lock).
    pub async fn connect(config: &PostgresConfig) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect(&config.url)
            .await
            .map_err(|source| StoreError::Connect {
                backend: "postgres",
                url: redact(&config.url),
                source,
            })?;
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { backend: "postgres", source })?;
        Ok(Self {
            writer: pool.clone(),
            readers: Arc::new(crate::readers::Readers::Pool(pool.clone())),
            pool,
            clock: Arc::new(SystemClock),
        })
    }
}
