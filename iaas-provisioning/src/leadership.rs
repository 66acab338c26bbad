//! One process at a time does the work of a named lease ([`iaas_core::Leases`]): of the
//! replicas of a platform on one Docker engine, one follows its events, reconciles and repairs
//! its clusters; the others stand by and take over when it dies.
//!
//! The leader renews its lease every [`LeaseConfig::renew_every`]. When it cannot (the store
//! does not answer, or another holder has the lease) it stops its work **before** the lease can
//! have expired (after `ttl - renew_every` without a renewal), so two leaders never work at
//! once as long as the processes' clocks run at the same rate. A stand-by tries to acquire the
//! lease every `renew_every`, so it takes over at most `ttl + renew_every` after the leader
//! died, or at once when a leader that stops releases the lease. What the engine did in
//! between is not lost: a new leader's watcher replays the engine's events from before the
//! hand-over and reconciles every instance (see [`crate::WatcherConfig::replay`]).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iaas_core::Leases;
use tokio_util::sync::CancellationToken;

/// Lease settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LeaseConfig {
    /// How long the lease lasts without renewal (default 15 s).
    pub ttl: Duration,
    /// How often the leader renews it and a stand-by tries to take it (default 5 s).
    pub renew_every: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self { ttl: Duration::from_secs(15), renew_every: Duration::from_secs(5) }
    }
}

impl LeaseConfig {
    /// `ttl`, renewed every third of it.
    pub fn with_ttl(ttl: Duration) -> Self {
        Self { ttl, renew_every: ttl / 3 }
    }
}

/// Runs work while this process holds a named lease.
pub struct Leadership {
    leases: Arc<dyn Leases>,
    name: String,
    holder: String,
    config: LeaseConfig,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("name", &self.name)
            .field("holder", &self.holder)
            .field("config", &self.config)
            .finish()
    }
}

impl Leadership {
    /// Leadership of the lease `name` in `leases`, as `holder` (unique per process).
    pub fn new(
        leases: Arc<dyn Leases>,
        name: impl Into<String>,
        holder: impl Into<String>,
        config: LeaseConfig,
    ) -> Self {
        Self { leases, name: name.into(), holder: holder.into(), config }
    }

    /// Until `cancel`: whenever this process takes the lease, runs `lead` with a token that is
    /// cancelled when the lease is lost, and waits for it to stop before standing by again. On
    /// `cancel` the work stops and the lease is released, so a stand-by takes over at once.
    pub async fn run<F, Fut>(&self, cancel: CancellationToken, mut lead: F)
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (name, holder) = (self.name.as_str(), self.holder.as_str());
        let gauge = metrics::gauge!("iaas_lease_held", "lease" => name.to_owned());
        while !cancel.is_cancelled() {
            match self.leases.acquire_lease(name, holder, self.config.ttl).await {
                Ok(Some(term)) => {
                    tracing::info!(lease = name, holder, term, "leading");
                    metrics::counter!("iaas_lease_terms_total", "lease" => name.to_owned())
                        .increment(1);
                    gauge.set(1.0);
                    let term_cancel = cancel.child_token();
                    let mut work = tokio::spawn(lead(term_cancel.clone()));
                    // Work that ends by itself (a panic, or a task that gave up) must not leave
                    // the lease held with nobody doing its work: the lease is released, and
                    // whoever takes it next (this process included) starts the work again.
                    let ended_early = tokio::select! {
                        () = self.hold(&cancel, term) => None,
                        ended = &mut work => Some(ended),
                    };
                    term_cancel.cancel();
                    let stopped_by_itself = ended_early.is_some();
                    let ended = match ended_early {
                        Some(ended) => {
                            tracing::error!(
                                lease = name,
                                holder,
                                term,
                                "the work of a lease stopped while the lease was held; releasing it"
                            );
                            metrics::counter!("iaas_lease_work_ended_total", "lease" => name.to_owned()).increment(1);
                            ended
                        }
                        None => work.await,
                    };
                    if let Err(error) = ended {
                        tracing::error!(lease = name, %error, "the work of a lease ended abnormally");
                    }
                    gauge.set(0.0);
                    if stopped_by_itself || cancel.is_cancelled() {
                        if let Err(error) = self.leases.release_lease(name, holder).await {
                            tracing::warn!(lease = name, error = %iaas_core::error_chain(&error), "releasing a lease on the way out; it expires by itself");
                        } else {
                            tracing::info!(lease = name, holder, term, "released");
                        }
                        if cancel.is_cancelled() {
                            return;
                        }
                    } else {
                        tracing::warn!(
                            lease = name,
                            holder,
                            term,
                            "no longer leading; standing by"
                        );
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(lease = name, error = %iaas_core::error_chain(&error), "acquiring a lease; trying again");
                }
            }
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep(self.config.renew_every) => {}
            }
        }
    }

    /// Renews the lease of `term` until it is lost, cannot be renewed in time, or `cancel`.
    async fn hold(&self, cancel: &CancellationToken, term: u64) {
        let (name, holder) = (self.name.as_str(), self.holder.as_str());
        let step_down_after = self.config.ttl.saturating_sub(self.config.renew_every);
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.config.renew_every) => {}
            }
            // Each renewal is bounded, so a store that hangs cannot keep this process leading
            // past the moment its lease may have expired.
            let renewal = self.leases.acquire_lease(name, holder, self.config.ttl);
            match tokio::time::timeout(self.config.renew_every, renewal).await {
                Ok(Ok(Some(now))) if now == term => renewed = Instant::now(),
                Ok(Ok(other)) => {
                    tracing::warn!(lease = name, holder, term, now = ?other, "the lease went to another holder");
                    return;
                }
                Ok(Err(error)) => {
                    tracing::warn!(lease = name, error = %iaas_core::error_chain(&error), "renewing a lease; trying again");
                }
                Err(_) => {
                    tracing::warn!(
                        lease = name,
                        "renewing a lease took longer than the renewal interval"
                    );
                }
            }
            if renewed.elapsed() >= step_down_after {
                tracing::warn!(
                    lease = name,
                    holder,
                    term,
                    "cannot renew the lease before it may expire; stepping down"
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use iaas_core::memory::MemoryLeases;

    use super::*;

    /// Two processes' leaderships of one lease, counting who works at any moment.
    struct Race {
        working: Arc<AtomicUsize>,
        most_at_once: Arc<AtomicUsize>,
        terms: Arc<std::sync::Mutex<Vec<(String, usize)>>>,
    }

    impl Race {
        fn new() -> Self {
            Self { working: Arc::default(), most_at_once: Arc::default(), terms: Arc::default() }
        }

        fn start(
            &self,
            leases: &Arc<MemoryLeases>,
            holder: &str,
        ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
            let leadership = Leadership::new(
                leases.clone(),
                "engine:local",
                holder,
                LeaseConfig::with_ttl(Duration::from_millis(300)),
            );
            let cancel = CancellationToken::new();
            let (working, most, terms) =
                (self.working.clone(), self.most_at_once.clone(), self.terms.clone());
            let name = holder.to_owned();
            let token = cancel.clone();
            let task = tokio::spawn(async move {
                leadership
                    .run(token, move |term| {
                        let (working, most, terms, name) =
                            (working.clone(), most.clone(), terms.clone(), name.clone());
                        async move {
                            let now = working.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            terms.lock().unwrap().push((name, now));
                            term.cancelled().await;
                            working.fetch_sub(1, Ordering::SeqCst);
                        }
                    })
                    .await;
            });
            (cancel, task)
        }
    }

    #[tokio::test]
    async fn one_leader_works_and_a_stand_by_takes_over_when_it_stops() {
        let leases = Arc::new(MemoryLeases::new());
        let race = Race::new();
        let (stop_a, a) = race.start(&leases, "a");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (stop_b, b) = race.start(&leases, "b");
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(race.working.load(Ordering::SeqCst), 1);
        assert_eq!(race.terms.lock().unwrap().clone(), [("a".to_owned(), 1)]);

        // a stops and releases: b leads within one renewal interval.
        stop_a.cancel();
        a.await.unwrap();
        let released = Instant::now();
        while race.terms.lock().unwrap().len() < 2 {
            assert!(released.elapsed() < Duration::from_millis(400), "b took over in time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(race.terms.lock().unwrap()[1].0, "b");
        let held = leases.lease_holder("engine:local").await.unwrap().unwrap();
        assert_eq!((held.holder.as_str(), held.term), ("b", 2));
        stop_b.cancel();
        b.await.unwrap();
        assert_eq!(race.most_at_once.load(Ordering::SeqCst), 1, "never two leaders at once");
        assert_eq!(race.working.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_leader_whose_lease_was_taken_steps_down() {
        let leases = Arc::new(MemoryLeases::new());
        let race = Race::new();
        let (stop_a, a) = race.start(&leases, "a");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(race.working.load(Ordering::SeqCst), 1);
        // Another process took the lease over (as after a's lease expired unseen).
        leases.release_lease("engine:local", "a").await.unwrap();
        assert_eq!(
            leases.acquire_lease("engine:local", "c", Duration::from_secs(60)).await.unwrap(),
            Some(2)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(race.working.load(Ordering::SeqCst), 0, "a stopped working");
        stop_a.cancel();
        a.await.unwrap();
        let held = leases.lease_holder("engine:local").await.unwrap().unwrap();
        assert_eq!(held.holder, "c", "a's release on the way out does not free c's lease");
    }

    #[tokio::test]
    async fn work_that_panics_gives_the_lease_up_and_starts_again() {
        let leases = Arc::new(MemoryLeases::new());
        let leadership = Leadership::new(
            leases.clone(),
            "engine:local",
            "a",
            LeaseConfig { ttl: Duration::from_secs(60), renew_every: Duration::from_millis(100) },
        );
        let started = Arc::new(AtomicUsize::new(0));
        let cancel = CancellationToken::new();
        let (token, counted) = (cancel.clone(), started.clone());
        let task = tokio::spawn(async move {
            leadership
                .run(token, move |term| {
                    let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
                    async move {
                        assert!(!first, "the first term's work fails");
                        term.cancelled().await;
                    }
                })
                .await;
        });
        // The lease lasts a minute: only giving it up lets the work start again this soon.
        let begun = Instant::now();
        while started.load(Ordering::SeqCst) < 2 {
            assert!(begun.elapsed() < Duration::from_secs(5), "the work started again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let held = leases.lease_holder("engine:local").await.unwrap().unwrap();
        assert_eq!(held.holder, "a");
        assert!(!held.expired, "held again for the work started again");
        cancel.cancel();
        task.await.unwrap();
    }
}
