//! Where a store's reads run: its pool, or on SQLite connections the store keeps for them.
//!
//! A pooled connection is pinged before it is lent out and again when it comes back, each a
//! round trip that guards against a server that went away. On SQLite each round trip is a hop
//! to the connection's worker thread and back, and a connection to a local file cannot go
//! away: the pings were most of an instance read's cost (docs/benchmarks.md, "The request
//! path"). So the SQLite store opens its reading connections once and lends them itself; the
//! PostgreSQL store reads through its pool, where the pings are worth their round trips.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::Database;
use sqlx::pool::PoolConnection;
use tokio::sync::{Mutex, MutexGuard};

/// The connections reads run on.
pub(crate) enum Readers<DB: Database> {
    /// Borrowed from the pool for each read.
    Pool(sqlx::Pool<DB>),
    /// Opened once and lent by turns.
    Held {
        /// The connections, each used by one read at a time.
        connections: Box<[Mutex<DB::Connection>]>,
        /// Where the next read starts looking for a free connection.
        next: AtomicUsize,
    },
}

/// A connection lent for one read.
pub(crate) enum ReadConnection<'a, DB: Database> {
    /// From the pool, returned to it when dropped.
    Pooled(PoolConnection<DB>),
    /// One of the held connections, free again when dropped.
    Held(MutexGuard<'a, DB::Connection>),
}

impl<DB: Database> Readers<DB> {
    /// Reads through `connections`, which must not be empty (the pool is used then).
    pub(crate) fn held(connections: Vec<DB::Connection>, pool: &sqlx::Pool<DB>) -> Self {
        if connections.is_empty() {
            return Self::Pool(pool.clone());
        }
        Self::Held {
            connections: connections.into_iter().map(Mutex::new).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A connection for one read: a free held one if there is any, else the next in turn
    /// once it is free.
    pub(crate) async fn acquire(&self) -> Result<ReadConnection<'_, DB>, sqlx::Error> {
        match self {
            Self::Pool(pool) => pool.acquire().await.map(ReadConnection::Pooled),
            Self::Held { connections, next } => {
                let start = next.fetch_add(1, Ordering::Relaxed);
                let count = connections.len();
                for offset in 0..count {
                    if let Some(slot) = connections.get((start + offset) % count)
                        && let Ok(guard) = slot.try_lock()
                    {
                        return Ok(ReadConnection::Held(guard));
                    }
                }
                match connections.get(start % count) {
                    Some(slot) => Ok(ReadConnection::Held(slot.lock().await)),
                    None => Err(sqlx::Error::PoolClosed),
                }
            }
        }
    }
}

impl<DB: Database> std::fmt::Debug for Readers<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pool(pool) => f.debug_tuple("Pool").field(pool).finish(),
            Self::Held { connections, .. } => {
                f.debug_struct("Held").field("connections", &connections.len()).finish()
            }
        }
    }
}

impl<DB: Database> Deref for ReadConnection<'_, DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &Self::Target {
        match self {
            Self::Pooled(connection) => connection,
            Self::Held(connection) => connection,
        }
    }
}

impl<DB: Database> DerefMut for ReadConnection<'_, DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Self::Pooled(connection) => connection,
            Self::Held(connection) => connection,
        }
    }
}
