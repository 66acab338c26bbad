//! Named leases: work that exactly one process of a platform may do at a time, such as
//! following one Docker engine's events and repairing its clusters.
//!
//! A lease is held by one holder until it expires; the holder renews it by acquiring it again
//! before then. Whoever acquires it after it expired becomes the next holder, and its **term**
//! (a number that grows by one with each new holder, never with a renewal) tells holders apart:
//! a holder that finds a term other than its own has lost the lease. Expiry is written and read
//! with the clock of the process that calls (the store's `Clock`), so the processes of one
//! platform must keep their clocks in step (NTP): a process whose clock runs ahead by more than
//! the time left on a lease sees it expired early and takes it.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;

/// Who holds a lease, and in which term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The holder's name.
    pub holder: String,
    /// The term: 1 for the first holder, one more for each new one.
    pub term: u64,
    /// Whether it has expired (the holder died or could not renew).
    pub expired: bool,
}

/// Stores named leases.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Takes the lease `name` for `holder` until `ttl` from now when it is free, expired, or
    /// `holder`'s already (a renewal); its term when taken, `None` when another holder has it.
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<u64>>;

    /// Gives the lease up at once if `holder` has it (the next acquirer need not wait for it to
    /// expire); nothing otherwise.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;

    /// Who holds `name`, if anyone ever did.
    async fn lease_holder(&self, name: &str) -> Result<Option<LeaseHolder>>;
}
