//! In-memory adapters for every port.
//!
//! They are the embedded defaults for single-process use and the collaborators of unit tests
//! elsewhere in the workspace. They follow the same contracts as the real backends (conflicts,
//! optimistic concurrency, atomic event append), so code tested against them behaves the same on
//! SQLite or PostgreSQL. Nothing here survives a restart.

mod bus;
mod instances;
mod jobs;
mod leases;
mod users;

pub use bus::{MemoryPublisher, RecordingHandler};
pub use instances::MemoryInstanceRepository;
pub use leases::MemoryLeases;
pub use users::MemoryUserRepository;

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical section
/// in this module leaves the data consistent before anything that can panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
