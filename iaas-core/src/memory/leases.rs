//! [`Leases`] in memory: for one process, where every holder sees the same map.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::lock;
use crate::clock::{Clock, SystemClock};
use crate::error::Result;
use crate::leases::{LeaseHolder, Leases};

#[derive(Debug)]
struct Held {
    holder: String,
    term: u64,
    until: DateTime<Utc>,
}

/// [`Leases`] in memory, on a clock of the caller's choice.
#[derive(Debug)]
pub struct MemoryLeases {
    leases: Mutex<HashMap<String, Held>>,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryLeases {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

impl MemoryLeases {
    /// No leases, on the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// No leases, expiring by `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self { leases: Mutex::default(), clock }
    }
}

#[async_trait]
impl Leases for MemoryLeases {
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<u64>> {
        let now = self.clock.now();
        let until = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let mut leases = lock(&self.leases);
        let held = leases.entry(name.to_owned()).or_insert_with(|| Held {
            holder: holder.to_owned(),
            term: 0,
            until: now,
        });
        if held.holder == holder && held.term > 0 {
            held.until = until;
        } else if held.term == 0 || held.until < now {
            held.holder = holder.to_owned();
            held.term += 1;
            held.until = until;
        } else {
            return Ok(None);
        }
        Ok(Some(held.term))
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let now = self.clock.now();
        if let Some(held) = lock(&self.leases).get_mut(name).filter(|held| held.holder == holder) {
            held.until = now - chrono::Duration::microseconds(1);
        }
        Ok(())
    }

    async fn lease_holder(&self, name: &str) -> Result<Option<LeaseHolder>> {
        let now = self.clock.now();
        Ok(lock(&self.leases).get(name).map(|held| LeaseHolder {
            holder: held.holder.clone(),
            term: held.term,
            expired: held.until < now,
        }))
    }
}
