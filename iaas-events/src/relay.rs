//! The outbox relay: moves committed events from the outbox to the bus.
//!
//! Each round claims a batch (whole instances, in commit order), publishes it and marks what
//! the bus acknowledged as sent. When the bus is down nothing is marked: the entries stay in the
//! outbox and the relay retries with backoff, so an outage delays events but never loses them.
//! A relay that dies mid-round loses its claim when the lease runs out and another relay (or
//! itself after a restart) publishes the same events again: consumers deduplicate on the
//! event id.
//!
//! An event the bus refuses for good (not a transient error: too large, say) is counted on
//! its entry each time; after [`RelayConfig::max_attempts`] it is parked with its error and
//! the relay goes on with the rest at once, its instance's later events included. Transient
//! failures (the broker down) never park anything. Parked entries show in
//! `iaas_outbox_parked` and stay until an operator retries or drops them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use iaas_core::{Clock, Error, EventPublisher, InfrastructureEvent, Outbox};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

/// Relay settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelayConfig {
    /// Name of this relay in claims and logs; unique per running relay.
    pub name: String,
    /// Most events per round (default 100).
    pub batch_size: u32,
    /// How long a claim lasts if the relay stops renewing it (default 30 s). Longer than any
    /// publish round; shorter than the delay you accept after a relay crash.
    pub lease: Duration,
    /// Pause between polls when the outbox is empty (default 100 ms); a [`OutboxRelay::wake`]
    /// ends the pause at once.
    pub idle_interval: Duration,
    /// Delays after failed rounds.
    pub backoff: Backoff,
    /// How long sent events are kept before being purged (default 7 days).
    pub retention: Duration,
    /// How often sent events past their retention are purged (default hourly).
    pub purge_interval: Duration,
    /// How often the pending count and oldest age are refreshed (default 1 s).
    pub stats_interval: Duration,
    /// Publishes of one event that fail for good before it is parked (default 5).
    pub max_attempts: u32,
}

impl RelayConfig {
    /// Defaults for a relay named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            batch_size: 100,
            lease: Duration::from_secs(30),
            idle_interval: Duration::from_millis(100),
            backoff: Backoff::default(),
            retention: Duration::from_secs(7 * 24 * 3600),
            purge_interval: Duration::from_secs(3600),
            stats_interval: Duration::from_secs(1),
            max_attempts: 5,
        }
    }
}

/// Counters of a relay since it was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelayStats {
    /// Events the bus acknowledged.
    pub published: u64,
    /// Rounds that failed to publish (the bus refused or did not answer).
    pub publish_failures: u64,
    /// Rounds that failed on the outbox itself (database trouble).
    pub outbox_failures: u64,
    /// Events pending at the last refresh.
    pub pending: u64,
    /// Age of the oldest pending event at the last refresh, in milliseconds.
    pub oldest_pending_ms: u64,
    /// Events this relay parked after they failed for good.
    pub parked: u64,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    publish_failures: AtomicU64,
    outbox_failures: AtomicU64,
    pending: AtomicU64,
    oldest_pending_ms: AtomicU64,
    parked: AtomicU64,
}

/// What one round did.
#[derive(Debug)]
pub enum Round {
    /// This many events were published and marked sent.
    Published(usize),
    /// Nothing was waiting.
    Idle,
    /// An event failed for good `max_attempts` times and was parked; `published` events
    /// before it were published. The next round starts at once.
    Parked {
        /// Events published before it.
        published: usize,
        /// Its outbox sequence number.
        seq: u64,
    },
    /// The round failed; `published` events were still published and marked before it did.
    Failed {
        /// Events published before the failure.
        published: usize,
        /// What failed.
        error: Error,
    },
}

/// How [`OutboxRelay::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayReport {
    /// Counters at the end.
    pub stats: RelayStats,
    /// Whether the claims were released on the way out (if not, they expire with their lease).
    pub released_claims: bool,
}

/// Drains an [`Outbox`] into an [`EventPublisher`].
pub struct OutboxRelay {
    outbox: Arc<dyn Outbox>,
    publisher: Arc<dyn EventPublisher>,
    clock: Arc<dyn Clock>,
    config: RelayConfig,
    counters: Counters,
    wake: Notify,
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl OutboxRelay {
    /// A relay; nothing runs until [`OutboxRelay::run`] or [`OutboxRelay::round`].
    pub fn new(
        outbox: Arc<dyn Outbox>,
        publisher: Arc<dyn EventPublisher>,
        clock: Arc<dyn Clock>,
        config: RelayConfig,
    ) -> Self {
        Self {
            outbox,
            publisher,
            clock,
            config,
            counters: Counters::default(),
            wake: Notify::new(),
        }
    }

    /// Ends an idle pause now: call after committing a write that appended events.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The counters so far.
    pub fn stats(&self) -> RelayStats {
        let c = &self.counters;
        RelayStats {
            published: c.published.load(Ordering::Relaxed),
            publish_failures: c.publish_failures.load(Ordering::Relaxed),
            outbox_failures: c.outbox_failures.load(Ordering::Relaxed),
            pending: c.pending.load(Ordering::Relaxed),
            oldest_pending_ms: c.oldest_pending_ms.load(Ordering::Relaxed),
            parked: c.parked.load(Ordering::Relaxed),
        }
    }

    /// One claim, publish, mark round.
    pub async fn round(&self) -> Round {
        let name = &self.config.name;
        let started = Instant::now();
        let entries = match self.outbox.claim(name, self.config.batch_size, self.config.lease).await
        {
            Ok(entries) => entries,
            Err(error) => {
                self.counters.outbox_failures.fetch_add(1, Ordering::Relaxed);
                return Round::Failed { published: 0, error };
            }
        };
        if entries.is_empty() {
            return Round::Idle;
        }
        let events: Vec<InfrastructureEvent> =
            entries.iter().map(|entry| entry.event.clone()).collect();
        let outcome = self.publisher.publish_batch(&events).await;
        let sent: Vec<u64> =
            entries.iter().take(outcome.published).map(|entry| entry.seq).collect();
        if !sent.is_empty() {
            if let Err(error) = self.outbox.mark_sent(name, &sent).await {
                // Published but not marked: they will be published again after the lease, and
                // consumers drop the duplicates by event id.
                self.counters.outbox_failures.fetch_add(1, Ordering::Relaxed);
                return Round::Failed { published: 0, error };
            }
            self.counters.published.fetch_add(sent.len() as u64, Ordering::Relaxed);
            metrics::counter!("iaas_relay_published_total").increment(sent.len() as u64);
        }
        metrics::histogram!("iaas_relay_round_seconds").record(started.elapsed().as_secs_f64());
        match outcome.error {
            None => Round::Published(sent.len()),
            Some(error) => {
                self.counters.publish_failures.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("iaas_relay_publish_failures_total").increment(1);
                if !error.is_transient()
                    && let Some(failed) = entries.get(outcome.published)
                {
                    match self.count_permanent_failure(failed.seq, &error).await {
                        Ok(true) => {
                            return Round::Parked { published: sent.len(), seq: failed.seq };
                        }
                        Ok(false) => {}
                        Err(outbox_error) => {
                            self.counters.outbox_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(relay = %name, seq = failed.seq, error = %iaas_core::error_chain(&outbox_error), "counting a failed publish");
                        }
                    }
                }
                // Hand the unpublished rest back at once instead of sitting on it until the
                // lease runs out.
                if let Err(release_error) = self.outbox.release(name).await {
                    tracing::warn!(relay = %name, error = %iaas_core::error_chain(&release_error), "releasing claims after a failed publish");
                }
                Round::Failed { published: sent.len(), error }
            }
        }
    }

    /// Counts a publish of entry `seq` that failed for good; parks it at the last attempt.
    /// Whether it was parked.
    async fn count_permanent_failure(&self, seq: u64, error: &Error) -> Result<bool, Error> {
        let message = iaas_core::error_chain(error);
        let attempts = self.outbox.record_failure(seq, &message).await?;
        if attempts < self.config.max_attempts {
            return Ok(false);
        }
        self.outbox.park(seq, &message).await?;
        // What was claimed with it goes back, so the next round starts right behind it.
        self.outbox.release(&self.config.name).await?;
        self.counters.parked.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("iaas_relay_parked_total").increment(1);
        tracing::error!(relay = %self.config.name, seq, attempts, error = %message, "outbox entry parked after failing for good; the events behind it go on");
        Ok(true)
    }

    /// Refreshes the pending gauges from the outbox.
    pub async fn refresh_stats(&self) -> Result<(), Error> {
        let stats = self.outbox.stats().await?;
        let age = stats.oldest_pending_age(self.clock.now());
        self.counters.pending.store(stats.pending, Ordering::Relaxed);
        let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        self.counters.oldest_pending_ms.store(age_ms, Ordering::Relaxed);
        metrics::gauge!("iaas_outbox_pending").set(stats.pending as f64);
        metrics::gauge!("iaas_outbox_parked").set(stats.parked as f64);
        metrics::gauge!("iaas_outbox_oldest_pending_seconds").set(age.as_secs_f64());
        Ok(())
    }

    /// Runs rounds until `cancel` fires, then finishes the round in flight and releases its
    /// claims so another relay can take over at once.
    pub async fn run(&self, cancel: CancellationToken) -> RelayReport {
        let name = self.config.name.clone();
        tracing::info!(relay = %name, "outbox relay started");
        let mut failures: u32 = 0;
        let mut last_purge: Option<Instant> = None;
        let mut last_stats: Option<Instant> = None;
        while !cancel.is_cancelled() {
            if last_stats.is_none_or(|at| at.elapsed() >= self.config.stats_interval) {
                if let Err(error) = self.refresh_stats().await {
                    tracing::warn!(relay = %name, error = %iaas_core::error_chain(&error), "reading outbox stats");
                }
                last_stats = Some(Instant::now());
            }
            if last_purge.is_none_or(|at| at.elapsed() >= self.config.purge_interval) {
                self.purge().await;
                last_purge = Some(Instant::now());
            }
            let pause = match self.round().await {
                Round::Published(count) => {
                    if failures > 0 {
                        tracing::info!(relay = %name, after_failures = failures, "publishing again");
                    }
                    failures = 0;
                    if count >= self.config.batch_size as usize {
                        Duration::ZERO
                    } else {
                        self.config.idle_interval
                    }
                }
                Round::Idle => {
                    failures = 0;
                    self.config.idle_interval
                }
                Round::Parked { .. } => {
                    failures = 0;
                    Duration::ZERO
                }
                Round::Failed { error, published } => {
                    let delay = self.config.backoff.delay(failures);
                    failures = failures.saturating_add(1);
                    tracing::warn!(relay = %name, error = %iaas_core::error_chain(&error), published, attempt = failures, retry_in_ms = delay.as_millis() as u64, "relay round failed; events stay in the outbox");
                    delay
                }
            };
            if !pause.is_zero() {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = self.wake.notified(), if failures == 0 => {}
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
        let released_claims = match self.outbox.release(&name).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(relay = %name, error = %iaas_core::error_chain(&error), "releasing claims on shutdown; they expire with their lease");
                false
            }
        };
        let stats = self.stats();
        tracing::info!(relay = %name, published = stats.published, "outbox relay stopped");
        RelayReport { stats, released_claims }
    }

    async fn purge(&self) {
        let retention =
            chrono::Duration::from_std(self.config.retention).unwrap_or(chrono::Duration::MAX);
        let cutoff = self
            .clock
            .now()
            .checked_sub_signed(retention)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        match self.outbox.purge_sent(cutoff).await {
            Ok(0) => {}
            Ok(purged) => {
                tracing::info!(relay = %self.config.name, purged, "purged sent outbox entries past retention")
            }
            Err(error) => {
                tracing::warn!(relay = %self.config.name, error = %iaas_core::error_chain(&error), "purging sent outbox entries")
            }
        }
    }
}
