//! Monitoring: every infrastructure event becomes a searchable log entry.
//!
//! The [`LogIndex`] port says what the monitoring API needs from a log store: index entries
//! (idempotently, keyed by event id, because the bus delivers at least once), search them with
//! filters and a cursor, and count them over time. [`MonitoringIndexer`] is the
//! [`iaas_core::EventHandler`] that feeds it from a consumer.
//!
//! Ownership is part of the port, not of the callers: a [`LogQuery`] and a [`CountQuery`] always
//! name a user, and every backend filters on it, so no route can forget to.
//!
//! Results come newest first, ordered by `(timestamp, event id)` descending; the cursor is the
//! position of the last entry of a page, so pages never overlap and never skip an entry even
//! when many entries share a timestamp.
//!
//! Backends: `SqliteLogIndex` (feature `embedded-index`, a real on-disk full-text index) and
//! `ElasticsearchLogIndex` (feature `elasticsearch`).
//!
//! ```no_run
//! # #[cfg(feature = "embedded-index")]
//! # async fn demo(user: iaas_core::UserId) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use iaas_events::monitoring::{LogQuery, LogIndex, MonitoringIndexer, SqliteIndexConfig, SqliteLogIndex};
//!
//! let index = Arc::new(SqliteLogIndex::open(&SqliteIndexConfig::new("/var/lib/iaas/logs.db")).await?);
//! // Give this to a consumer runner (Kafka) or subscribe it to the in-process bus.
//! let _handler = MonitoringIndexer::new(index.clone());
//!
//! let page = index.search(&LogQuery::for_user(user).text("postgres failed").limit(20)).await?;
//! for entry in &page.entries {
//!     println!("{} {} {}", entry.timestamp, entry.level, entry.message);
//! }
//! let next = page.next_cursor.map(|c| c.to_string()); // hand to the client as is
//! # let _ = next; Ok(()) }
//! ```

mod cursor;
#[cfg(feature = "elasticsearch")]
mod elasticsearch;
mod entry;
mod error;
#[cfg(feature = "http")]
mod http;
mod indexer;
pub mod openapi;
mod query;
#[cfg(feature = "embedded-index")]
mod sqlite;

use async_trait::async_trait;

pub use cursor::Cursor;
#[cfg(feature = "elasticsearch")]
pub use elasticsearch::{ElasticsearchConfig, ElasticsearchLogIndex};
pub use entry::{LogEntry, LogLevel};
pub use error::IndexError;
#[cfg(feature = "http")]
pub use http::{SCOPE_EVENTS_READ, monitoring_router};
pub use indexer::MonitoringIndexer;
pub use query::{CountBucket, CountQuery, Counts, LogPage, LogQuery};
#[cfg(feature = "embedded-index")]
pub use sqlite::{SqliteIndexConfig, SqliteLogIndex};

/// A store of log entries the monitoring API searches.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait LogIndex: Send + Sync {
    /// Stores the entries. Idempotent by [`LogEntry::event_id`]: indexing an entry again (a
    /// redelivered event) leaves exactly one copy.
    async fn index(&self, entries: &[LogEntry]) -> Result<(), IndexError>;

    /// One page of the query's user's entries matching its filters, newest first.
    async fn search(&self, query: &LogQuery) -> Result<LogPage, IndexError>;

    /// How many of the query's user's entries fall in each time bucket, per action and type.
    async fn counts(&self, query: &CountQuery) -> Result<Counts, IndexError>;
}
