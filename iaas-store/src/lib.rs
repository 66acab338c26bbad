//! The platform's source of truth: users, instances and the transactional outbox, in SQL.
//!
//! Both backends implement [`UserRepository`](iaas_core::UserRepository),
//! [`InstanceRepository`](iaas_core::InstanceRepository) and [`Outbox`](iaas_core::Outbox)
//! from `iaas-core`, with the same SQL and the same test suite:
//!
//! - [`SqliteStore`] (feature `sqlite`): one file in WAL mode, the embedded default.
//! - [`PostgresStore`] (feature `postgres`): for several platform processes.
//!
//! An instance and its event are written in one transaction, so the outbox holds an event if
//! and only if the change it describes was committed: no event is lost between the database
//! and the bus, and none describes a change that was rolled back. Status changes use optimistic
//! concurrency (a `version` column), so two writers never silently overwrite each other.
//! Migrations are embedded and applied when the store opens; a failing migration stops the
//! open with [`StoreError::Migrate`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use iaas_core::Outbox;
//! use iaas_store::{SqliteConfig, SqliteStore};
//!
//! let store = SqliteStore::open(&SqliteConfig::new("/var/lib/iaas/iaas.db")).await?;
//! let stats = store.stats().await?;
//! println!("{} events waiting to be published", stats.pending);
//! # Ok(()) }
//! ```
//!
//! # A whole program
//!
//! The SQLite store wired by hand into a tokio program, with no other iaas-rs crate than
//! iaas-core: a fresh database in a temporary directory, a user with a quota override,
//! instances created within that quota, a status change, then the file reopened, read back and
//! its outbox drained the way a relay does. This is `examples/sqlite.rs`; run it with
//! `cargo run -p iaas-store --example sqlite` (it needs the `sqlite` feature, on by default).
//!
#![cfg_attr(
    feature = "sqlite",
    doc = concat!("```no_run\n", include_str!("../examples/sqlite.rs"), "\n```")
)]
//!
//! # Feature flags
//!
//! - `sqlite` (default): [`SqliteStore`].
//! - `postgres` (default): [`PostgresStore`].

#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod jobs;
mod leases;
#[cfg(feature = "postgres")]
mod postgres;
mod readers;
mod rows;
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use error::StoreError;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresConfig, PostgresStore};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteConfig, SqliteStore};

/// How often a status change without an expected version is retried after losing a race.
const MAX_STATUS_RETRIES: usize = 5;

/// Binds per statement when marking entries sent (SQLite allows 32,766; PostgreSQL 65,535).
const MAX_BINDS_PER_STATEMENT: usize = 1000;
