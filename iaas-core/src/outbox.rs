//! The outbox port: events committed with their state change, waiting to be published.
//!
//! Repositories append an event to the outbox in the same transaction as the change it
//! describes ([`InstanceRepository`](crate::InstanceRepository)). A relay then *claims*
//! entries, publishes them and marks them sent. The contract every backend keeps:
//!
//! - **Per-instance order.** Claims are taken per instance: while a relay's claim on an instance
//!   is live, no other relay gets any of that instance's entries, and entries come back in
//!   commit order. Several relays may run; they split the instances between them.
//! - **Leases, not locks.** A claim expires after its lease. A relay that crashed between
//!   publishing and [`Outbox::mark_sent`] loses its claim, and another relay publishes the same
//!   entries again: delivery is at least once, and the event id lets consumers drop the
//!   duplicate.
//! - **Nothing is deleted unsent.** [`Outbox::purge_sent`] removes only entries that were sent
//!   before its cut-off (the retention period).
//! - **A poison entry is parked, not retried forever.** An entry the bus refuses for good (too
//!   large, say) is counted ([`Outbox::record_failure`]) and, after the relay's bounded number
//!   of attempts, parked ([`Outbox::park`]): no claim returns it and it no longer counts as
//!   pending, so the entries behind it (of its instance too) are published. An operator lists
//!   parked entries, puts one back in line ([`Outbox::retry_parked`], it then reaches the bus
//!   after the ones that followed it) or drops it ([`Outbox::drop_parked`]).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::event::InfrastructureEvent;

/// One event waiting in (or claimed from) the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Commit order across the whole outbox; increasing per instance.
    pub seq: u64,
    /// The event to publish.
    pub event: InfrastructureEvent,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// An entry taken out of line after failing for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEntry {
    /// The entry.
    pub entry: OutboxEntry,
    /// Failed publishes counted for it.
    pub attempts: u32,
    /// The last failure's error.
    pub error: String,
    /// When it was parked.
    pub parked_at: DateTime<Utc>,
}

/// How far behind publishing is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// Entries not yet sent (parked ones left out).
    pub pending: u64,
    /// Entries parked after failing for good.
    pub parked: u64,
    /// When the oldest unsent entry was written, if any.
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

impl OutboxStats {
    /// Age of the oldest unsent entry at `now` (zero when nothing waits).
    pub fn oldest_pending_age(&self, now: DateTime<Utc>) -> Duration {
        self.oldest_pending_at.and_then(|at| (now - at).to_std().ok()).unwrap_or(Duration::ZERO)
    }
}

/// Events waiting to be published.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Claims unsent entries for `relay` (a name unique per running relay): whole instances
    /// not claimed by another live relay, at most `limit` entries, in commit order. Claims
    /// last `lease` and are renewed by the next `claim` of the same relay.
    async fn claim(&self, relay: &str, limit: u32, lease: Duration) -> Result<Vec<OutboxEntry>>;

    /// Marks entries as sent, and drops `relay`'s claims on instances with nothing left unsent.
    async fn mark_sent(&self, relay: &str, seqs: &[u64]) -> Result<()>;

    /// Gives up every claim of `relay` without marking anything sent (after a failed publish,
    /// or on shutdown), so the entries can be claimed again at once.
    async fn release(&self, relay: &str) -> Result<()>;

    /// Pending count and oldest pending entry.
    async fn stats(&self) -> Result<OutboxStats>;

    /// Deletes entries sent before `sent_before`; returns how many.
    async fn purge_sent(&self, sent_before: DateTime<Utc>) -> Result<u64>;

    /// Counts one failed publish of entry `seq` with `error`; returns its attempts so far
    /// (0 when there is no such unsent entry).
    async fn record_failure(&self, seq: u64, error: &str) -> Result<u32>;

    /// Parks entry `seq` with `error`: claims skip it and it is not pending until retried.
    async fn park(&self, seq: u64, error: &str) -> Result<()>;

    /// Parked entries, oldest first, at most `limit`.
    async fn parked(&self, limit: u32) -> Result<Vec<ParkedEntry>>;

    /// Puts parked entry `seq` back in line with its attempts reset; whether it was parked.
    async fn retry_parked(&self, seq: u64) -> Result<bool>;

    /// Deletes parked entry `seq` for good; whether it was parked.
    async fn drop_parked(&self, seq: u64) -> Result<bool>;
}
