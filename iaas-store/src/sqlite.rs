//! The embedded backend: one SQLite file in WAL mode.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use iaas_core::SystemClock;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::error::StoreError;
use crate::sql::sql_store;

/// How long a read waits for one of the reading connections (the pool's default wait).
const READ_WAIT: Duration = Duration::from_secs(30);

/// Where and how to open the SQLite store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// The database file; created with its directory's permissions when missing.
    pub path: PathBuf,
    /// Connections reads run on (each with its worker thread). SQLite has one writer at a
    /// time: writes go through one more connection of their own, readers run beside it (WAL).
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

use crate::readers::Readers;

sql_store!(
    /// Users, instances and outbox in a SQLite file.
    ///
    /// WAL journaling lets readers run beside the single writer; `synchronous = NORMAL` in WAL
    /// mode still never corrupts the database, and a commit survives a process crash (only an
    /// OS crash can lose the last transactions).
    SqliteStore,
    sqlx::Sqlite,
    backend = "sqlite",
    begin_write = "BEGIN IMMEDIATE",
    // `BEGIN IMMEDIATE` already holds the database's one write lock.
    lock_owner = None
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
        let connect_error = |source| StoreError::Connect {
            backend: "sqlite",
            url: config.path.display().to_string(),
            source,
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .connect_with(options.clone())
            .await
            .map_err(connect_error)?;
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { backend: "sqlite", source })?;
        // SQLite has one writer at a time: one writing connection lets this process's writers
        // queue for it in order; a writer waits for it as long as for a busy database.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // A connection to a local file cannot go away the way a socket does: not pinged
            // before each write (a round trip to its worker thread).
            .test_before_acquire(false)
            .acquire_timeout(config.busy_timeout)
            .connect_with(options.clone())
            .await
            .map_err(connect_error)?;
        // Reads run on connections of their own, opened once (`readers.rs`).
        let count = usize::try_from(config.max_connections).unwrap_or(usize::MAX);
        let readers =
            Readers::open(&pool, options, count, READ_WAIT).await.map_err(connect_error)?;
        let readers = Arc::new(readers);
        Ok(Self { pool, readers, writer, clock: Arc::new(SystemClock) })
    }
}
