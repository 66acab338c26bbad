//! Bounded password hashing: each argon2 run takes its memory cost (19 MiB by default) for
//! tens of milliseconds, so a burst of registrations or logins left unbounded on the blocking
//! pool (up to 512 threads) would take gigabytes. A fixed number of threads hash, a bounded
//! queue waits for them, and a request that finds the queue full is refused at once with
//! [`AuthError::Busy`] (503 with `Retry-After`) instead of piling up.
//!
//! Gauge `iaas_auth_hashing_in_use`; counter `iaas_auth_hashing_refused_total`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{AuthError, Result};
use crate::password::Scratch;

/// Slots when neither the configuration nor the machine's memory says otherwise.
const FALLBACK_SLOTS: usize = 2;

/// How many hashes run at once and how many wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingLimits {
    /// Hashes that run at once.
    pub slots: usize,
    /// Requests that may wait for a slot; more are refused.
    pub queue: usize,
}

impl HashingLimits {
    /// The limits for hashes of `memory_kib` each: `configured` slots when not zero, else a
    /// quarter of the memory available now divided by one hash's cost, at least one and at
    /// most twice the cores. The queue holds eight requests per slot.
    pub fn sized_for(memory_kib: u32, configured: usize) -> Self {
        let slots = if configured > 0 {
            configured
        } else {
            let cores = std::thread::available_parallelism().map_or(FALLBACK_SLOTS, usize::from);
            available_kib()
                .map(|available| {
                    let per_hash = u64::from(memory_kib.max(1));
                    usize::try_from(available / 4 / per_hash).unwrap_or(usize::MAX)
                })
                .unwrap_or(FALLBACK_SLOTS)
                .clamp(1, cores.saturating_mul(2).max(1))
        };
        Self { slots, queue: slots.saturating_mul(8) }
    }
}

/// `MemAvailable` from `/proc/meminfo`, in KiB; `None` off Linux or when unreadable.
fn available_kib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

type Job = Box<dyn FnOnce(&mut Scratch) + Send>;

/// A fixed set of threads, one per slot, fed through a bounded queue; cloning shares them.
/// Each thread keeps one [`Scratch`] for every hash it runs, so the memory hashing takes is
/// the slots times one hash's cost, taken once: the runtime's blocking pool would grow to
/// hundreds of threads under a burst, and fresh allocations per hash leave the allocator
/// holding several hashes' worth per thread.
#[derive(Debug, Clone)]
pub(crate) struct HashingSlots {
    jobs: std::sync::mpsc::SyncSender<Job>,
    in_use: Arc<AtomicUsize>,
    limits: HashingLimits,
}

impl HashingSlots {
    /// Starts the threads; they end when the last clone is dropped. When the system refuses
    /// threads, fewer (at least one) serve.
    pub(crate) fn new(limits: HashingLimits) -> Result<Self> {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(limits.queue);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        let mut started = 0;
        for n in 0..limits.slots.max(1) {
            let queue = queue.clone();
            let spawned =
                std::thread::Builder::new().name(format!("iaas-hash-{n}")).spawn(move || {
                    let mut scratch = Scratch::new();
                    loop {
                        // The lock is held only while waiting for the next job, never while
                        // it runs.
                        let next = match queue.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(poisoned) => poisoned.into_inner().recv(),
                        };
                        match next {
                            Ok(job) => job(&mut scratch),
                            Err(_) => return,
                        }
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(err) if started > 0 => {
                    tracing::warn!(error = %err, started, wanted = limits.slots, "fewer password-hashing threads than configured");
                    break;
                }
                Err(err) => {
                    return Err(AuthError::internal("starting password-hashing threads", err));
                }
            }
        }
        let limits = HashingLimits { slots: started, ..limits };
        Ok(Self { jobs, in_use: Arc::new(AtomicUsize::new(0)), limits })
    }

    pub(crate) fn limits(&self) -> HashingLimits {
        self.limits
    }

    /// Runs `work` on a hashing thread; [`AuthError::Busy`] at once when the queue is full.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl FnOnce(&mut Scratch) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.submit(operation, work)?.await.map_err(|err| AuthError::internal(operation, err))?
    }

    /// Queues `work`; the receiver gets its result.
    fn submit<T: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl FnOnce(&mut Scratch) -> Result<T> + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<T>>> {
        let (done, result) = tokio::sync::oneshot::channel();
        let in_use = self.in_use.clone();
        let job: Job = Box::new(move |scratch: &mut Scratch| {
            let now = in_use.fetch_add(1, Ordering::AcqRel) + 1;
            metrics::gauge!("iaas_auth_hashing_in_use").set(now as f64);
            // The caller may have gone (a dropped request): nobody to tell, nothing lost.
            let _ = done.send(work(scratch));
            let now = in_use.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
            metrics::gauge!("iaas_auth_hashing_in_use").set(now as f64);
        });
        match self.jobs.try_send(job) {
            Ok(()) => Ok(result),
            Err(std::sync::mpsc::TrySendError::Full(_)) => {
                metrics::counter!("iaas_auth_hashing_refused_total").increment(1);
                Err(AuthError::Busy { retry_after_secs: 1 })
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                Err(AuthError::internal(operation, "the password-hashing threads ended"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn configured_slots_win_and_memory_sizing_stays_in_bounds() {
        assert_eq!(HashingLimits::sized_for(19_456, 3), HashingLimits { slots: 3, queue: 24 });
        let sized = HashingLimits::sized_for(19_456, 0);
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        assert!((1..=cores * 2).contains(&sized.slots), "{sized:?}");
        // A cost larger than any machine's memory still gets one slot.
        assert_eq!(HashingLimits::sized_for(u32::MAX, 0).slots, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_is_refused_at_once_and_the_slots_are_never_exceeded() {
        let slots = HashingSlots::new(HashingLimits { slots: 1, queue: 2 }).unwrap();
        let (release, hold) = mpsc::channel::<()>();
        let hold = Arc::new(std::sync::Mutex::new(hold));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let job = || {
            let (hold, running, most) = (hold.clone(), running.clone(), most.clone());
            move |_: &mut Scratch| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let _ = hold.lock().map(|rx| rx.recv_timeout(Duration::from_secs(10)));
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        };
        let first = slots.submit("testing", job()).unwrap();
        // The one thread has taken the first job: the queue has room for two more.
        tokio::time::timeout(Duration::from_secs(5), async {
            while slots.in_use.load(Ordering::SeqCst) < 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        let queued =
            [slots.submit("testing", job()).unwrap(), slots.submit("testing", job()).unwrap()];
        let refused = slots.submit("testing", job());
        assert!(matches!(refused, Err(AuthError::Busy { retry_after_secs: 1 })), "{refused:?}");
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        first.await.unwrap().unwrap();
        for done in queued {
            done.await.unwrap().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1, "more hashes ran at once than slots");
    }
}
