//! The embedded backend: one SQLite file in WAL mode.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use iaas_core::SystemClock;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::error::StoreError;
use crate::sql::sql_store;

/// Where and how to open the SQLite store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// The database file; created with its directory's permissions when missing.
    pub path: PathBuf,
    /// Pool size. SQLite has one writer at a time; the rest read concurrently (WAL).
    pub max_connections: u32,
    /// How long a writer waits for another to finish before the call fails as unavailable.
    pub busy_timeout: Duration,
}

impl SqliteConfig {
    /// Defaults for the file at `path`: 4 connections, 5 s busy timeout.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), max_connections: 4, busy_timeout: Duration::from_secs(5) }
    }
}

sql_store!(
    /// Users, instances and outbox in a SQLite file.
    ///
    /// WAL journaling lets readers run beside the single writer; `synchronous = NORMAL` in WAL
    /// mode still never corrupts the database, and a commit survives a process crash (only an
    /// OS crash can lose the last transactions).
    SqliteStore,
    sqlx::Sqlite,
    backend = "sqlite",
    begin_write = "BEGIN IMMEDIATE"
);

impl SqliteStore {
    /// Opens (creating if needed) the database and applies the embedded migrations.
    pub async fn open(config: &SqliteConfig) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(&config.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(config.busy_timeout)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect {
                backend: "sqlite",
                url: config.path.display().to_string(),
                source,
            })?;
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { backend: "sqlite", source })?;
        Ok(Self { pool, clock: Arc::new(SystemClock) })
    }
}
