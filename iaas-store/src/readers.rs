//! Where a store's reads run: its pool, or on SQLite connections the store keeps for them.
//!
//! A pooled connection is pinged before it is lent out and again when it comes back, each a
//! round trip that guards against a server that went away. On SQLite each round trip is a hop
//! to the connection's worker thread and back, and a connection to a local file cannot go
//! away: the pings were most of an instance read's cost (docs/benchmarks.md, "The request
//! path"). So the SQLite store opens its reading connections once and lends them itself,
//! checking one only when it has not been checked for [`CHECK_EVERY`] (and opening it again
//! when the check fails: a worker thread that died); the PostgreSQL store reads through its
//! pool, where the pings are worth their round trips.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{ConnectOptions, Connection, Database};
use tokio::sync::{Mutex, MutexGuard, Semaphore, SemaphorePermit};

/// How long a held connection is lent without a check.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(30);

/// The options held connections are opened (and opened again) with.
type Options<DB> = <<DB as Database>::Connection as Connection>::Options;

/// The connections reads run on.
pub(crate) enum Readers<DB: Database> {
    /// Borrowed from the pool for each read.
    Pool(sqlx::Pool<DB>),
    /// Opened once and lent by turns.
    Held(Held<DB>),
}

/// Connections opened once, each lent to one read at a time.
pub(crate) struct Held<DB: Database> {
    slots: Box<[Mutex<Slot<DB>>]>,
    /// One permit per free connection: a read waits for whichever frees first.
    free: Semaphore,
    /// Where the next read starts looking for a free connection.
    next: AtomicUsize,
    options: Options<DB>,
    /// How long a read waits for a free connection.
    acquire_timeout: Duration,
}

/// A held connection and when it was last known to work.
pub(crate) struct Slot<DB: Database> {
    connection: DB::Connection,
    checked: Instant,
}

/// A connection lent for one read.
pub(crate) enum ReadConnection<'a, DB: Database> {
    /// From the pool, returned to it when dropped.
    Pooled(PoolConnection<DB>),
    /// One of the held connections, free again when dropped: the connection first, then its
    /// permit (fields drop in order), so whoever the permit wakes finds it unlocked.
    Held {
        /// The connection.
        slot: MutexGuard<'a, Slot<DB>>,
        /// Its place among the free ones.
        _free: SemaphorePermit<'a>,
    },
}

impl<DB: Database> Readers<DB> {
    /// Opens `count` connections with `options` for reads (the pool's when `count` is 0).
    pub(crate) async fn open(
        pool: &sqlx::Pool<DB>,
        options: Options<DB>,
        count: usize,
        acquire_timeout: Duration,
    ) -> Result<Self, sqlx::Error> {
        if count == 0 {
            return Ok(Self::Pool(pool.clone()));
        }
        let mut slots = Vec::with_capacity(count);
        for _ in 0..count {
            slots.push(Mutex::new(Slot {
                connection: options.connect().await?,
                checked: Instant::now(),
            }));
        }
        Ok(Self::Held(Held {
            slots: slots.into_boxed_slice(),
            free: Semaphore::new(count),
            next: AtomicUsize::new(0),
            options,
            acquire_timeout,
        }))
    }

    /// A connection for one read, waiting for the first to be free.
    pub(crate) async fn acquire(&self) -> Result<ReadConnection<'_, DB>, sqlx::Error> {
        match self {
            Self::Pool(pool) => pool.acquire().await.map(ReadConnection::Pooled),
            Self::Held(held) => held.acquire().await,
        }
    }
}

impl<DB: Database> Held<DB> {
    async fn acquire(&self) -> Result<ReadConnection<'_, DB>, sqlx::Error> {
        let permit = match tokio::time::timeout(self.acquire_timeout, self.free.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => return Err(sqlx::Error::PoolClosed),
            Err(_elapsed) => return Err(sqlx::Error::PoolTimedOut),
        };
        // A permit means a connection is free or about to be: take the first that is, else
        // wait for the next in turn (its holder is reading, and lets go when done).
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let count = self.slots.len();
        let free = (0..count).find_map(|offset| {
            self.slots.get((start + offset) % count).and_then(|slot| slot.try_lock().ok())
        });
        let mut slot = match free {
            Some(slot) => slot,
            None => match self.slots.get(start % count) {
                Some(slot) => slot.lock().await,
                None => return Err(sqlx::Error::PoolClosed),
            },
        };
        if slot.checked.elapsed() >= CHECK_EVERY {
            if let Err(error) = slot.connection.ping().await {
                tracing::warn!(%error, "a reading connection failed its check; opening it again");
                slot.connection = self.options.connect().await?;
            }
            slot.checked = Instant::now();
        }
        Ok(ReadConnection::Held { slot, _free: permit })
    }
}

impl<DB: Database> std::fmt::Debug for Readers<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pool(pool) => f.debug_tuple("Pool").field(pool).finish(),
            Self::Held(held) => f
                .debug_struct("Held")
                .field("connections", &held.slots.len())
                .field("free", &held.free.available_permits())
                .finish(),
        }
    }
}

impl<DB: Database> Deref for ReadConnection<'_, DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &Self::Target {
        match self {
            Self::Pooled(connection) => connection,
            Self::Held { slot, .. } => &slot.connection,
        }
    }
}

impl<DB: Database> DerefMut for ReadConnection<'_, DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Self::Pooled(connection) => connection,
            Self::Held { slot, .. } => &mut slot.connection,
        }
    }
}
