//! What the cache counts, for tests (a [`CacheStats`] snapshot) and operators (the `metrics`
//! facade, Prometheus-style names).
//!
//! | metric                                   | kind      | meaning                                    |
//! |------------------------------------------|-----------|--------------------------------------------|
//! | `iaas_cache_hits_total{kind}`            | counter   | reads answered from the cache              |
//! | `iaas_cache_misses_total{kind}`          | counter   | reads that found nothing usable            |
//! | `iaas_cache_loads_total{kind}`           | counter   | loader runs (one per single-flight group)  |
//! | `iaas_cache_load_errors_total{kind}`     | counter   | loader failures                            |
//! | `iaas_cache_backend_errors_total{backend}` | counter | backend errors and timeouts (degraded)     |
//! | `iaas_cache_corrupt_values_total{kind}`  | counter   | undecodable values, treated as misses      |
//! | `iaas_cache_stale_fills_total{kind}`     | counter   | fills dropped because an invalidation won  |
//! | `iaas_cache_early_refreshes_total`       | counter   | values reloaded shortly before expiry      |
//! | `iaas_cache_invalidations_total`         | counter   | clusters invalidated                       |
//! | `iaas_cache_lookup_duration_seconds{backend}` | histogram | time of a backend read (see below)   |
//! | `iaas_cache_load_duration_seconds{kind}` | histogram | time of a loader run                       |
//!
//! The hit rate (the target is above 80 %) is `hits / (hits + misses)`, see [`CacheStats::hit_rate`].
//!
//! Reads of the in-process store are not timed: they take well under a microsecond, so all
//! would land in the first bucket, and the two clock reads would be a large part of an
//! in-process hit. They are still counted as hits and misses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Histogram};

use crate::kind::Kind;

/// Upper bounds of the latency buckets, in microseconds; the last bucket is unbounded.
pub const LATENCY_BUCKETS_MICROS: [u64; 11] =
    [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000];

/// A fixed-bucket latency histogram with lock-free recording.
#[derive(Debug, Default)]
pub(crate) struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    pub(crate) fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(LATENCY_BUCKETS_MICROS.len());
        if let Some(slot) = self.buckets.get(bucket) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            buckets: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

/// A copy of a latency histogram.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LatencySnapshot {
    /// Count per bucket of [`LATENCY_BUCKETS_MICROS`], plus the unbounded last one.
    pub buckets: Vec<u64>,
    /// Sum of all recorded durations, microseconds.
    pub sum_micros: u64,
}

impl LatencySnapshot {
    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Upper bound (microseconds) of the bucket holding quantile `q` (0.0-1.0); `None` when
    /// empty or when it falls in the unbounded bucket.
    pub fn quantile_upper_bound_micros(&self, q: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        // Rounding up: the rank of the q-th observation, at least the first.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return LATENCY_BUCKETS_MICROS.get(i).copied();
            }
        }
        None
    }
}

/// Handles of the facade's metrics for one kind, registered once: building labelled keys on
/// every hit would cost an allocation on the hot path.
struct KindHandles {
    hits: Counter,
    misses: Counter,
    loads: Counter,
    load_errors: Counter,
    corrupt_values: Counter,
    stale_fills: Counter,
    load_duration: Histogram,
}

impl KindHandles {
    fn register(kind: Kind) -> Self {
        let kind = kind.as_str();
        Self {
            hits: metrics::counter!("iaas_cache_hits_total", "kind" => kind),
            misses: metrics::counter!("iaas_cache_misses_total", "kind" => kind),
            loads: metrics::counter!("iaas_cache_loads_total", "kind" => kind),
            load_errors: metrics::counter!("iaas_cache_load_errors_total", "kind" => kind),
            corrupt_values: metrics::counter!("iaas_cache_corrupt_values_total", "kind" => kind),
            stale_fills: metrics::counter!("iaas_cache_stale_fills_total", "kind" => kind),
            load_duration: metrics::histogram!("iaas_cache_load_duration_seconds", "kind" => kind),
        }
    }
}

/// The cache's counters. Each event is counted here (for [`stats`](CacheMetrics::stats)) and
/// emitted through the `metrics` facade, whose handles are registered when the cache is built
/// (install the recorder before building caches).
pub(crate) struct CacheMetrics {
    hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    load_errors: AtomicU64,
    backend_errors: AtomicU64,
    corrupt_values: AtomicU64,
    stale_fills: AtomicU64,
    refreshes: AtomicU64,
    invalidations: AtomicU64,
    reused_decodes: AtomicU64,
    lookup_latency: LatencyHistogram,
    load_latency: LatencyHistogram,
    per_kind: [KindHandles; 3],
    backend_errors_total: Counter,
    refreshes_total: Counter,
    invalidations_total: Counter,
    lookup_duration: Histogram,
}

impl std::fmt::Debug for CacheMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheMetrics").field("stats", &self.stats()).finish()
    }
}

impl CacheMetrics {
    /// Counters for a cache over the `backend` store.
    pub(crate) fn new(backend: &'static str) -> Self {
        Self {
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            load_errors: AtomicU64::new(0),
            backend_errors: AtomicU64::new(0),
            corrupt_values: AtomicU64::new(0),
            stale_fills: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            reused_decodes: AtomicU64::new(0),
            lookup_latency: LatencyHistogram::default(),
            load_latency: LatencyHistogram::default(),
            per_kind: Kind::ALL.map(KindHandles::register),
            backend_errors_total: metrics::counter!("iaas_cache_backend_errors_total", "backend" => backend),
            refreshes_total: metrics::counter!("iaas_cache_early_refreshes_total"),
            invalidations_total: metrics::counter!("iaas_cache_invalidations_total"),
            lookup_duration: metrics::histogram!("iaas_cache_lookup_duration_seconds", "backend" => backend),
        }
    }

    fn kind(&self, kind: Kind) -> &KindHandles {
        &self.per_kind[kind.index()]
    }

    pub(crate) fn hit(&self, kind: Kind) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.kind(kind).hits.increment(1);
    }

    pub(crate) fn miss(&self, kind: Kind) {
        self.misses.fetch_add(1, Ordering::Relaxed);
        self.kind(kind).misses.increment(1);
    }

    pub(crate) fn load(&self, kind: Kind, elapsed: Duration, ok: bool) {
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.load_latency.record(elapsed);
        let handles = self.kind(kind);
        handles.loads.increment(1);
        handles.load_duration.record(elapsed.as_secs_f64());
        if !ok {
            self.load_errors.fetch_add(1, Ordering::Relaxed);
            handles.load_errors.increment(1);
        }
    }

    pub(crate) fn backend_error(&self) {
        self.backend_errors.fetch_add(1, Ordering::Relaxed);
        self.backend_errors_total.increment(1);
    }

    pub(crate) fn corrupt(&self, kind: Kind) {
        self.corrupt_values.fetch_add(1, Ordering::Relaxed);
        self.kind(kind).corrupt_values.increment(1);
    }

    pub(crate) fn stale_fill(&self, kind: Kind) {
        self.stale_fills.fetch_add(1, Ordering::Relaxed);
        self.kind(kind).stale_fills.increment(1);
    }

    pub(crate) fn refresh(&self) {
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        self.refreshes_total.increment(1);
    }

    pub(crate) fn invalidation(&self) {
        self.invalidations.fetch_add(1, Ordering::Relaxed);
        self.invalidations_total.increment(1);
    }

    pub(crate) fn reused_decode(&self) {
        self.reused_decodes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn lookup(&self, elapsed: Duration) {
        self.lookup_latency.record(elapsed);
        self.lookup_duration.record(elapsed.as_secs_f64());
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            loads: self.loads.load(Ordering::Relaxed),
            load_errors: self.load_errors.load(Ordering::Relaxed),
            backend_errors: self.backend_errors.load(Ordering::Relaxed),
            corrupt_values: self.corrupt_values.load(Ordering::Relaxed),
            stale_fills: self.stale_fills.load(Ordering::Relaxed),
            early_refreshes: self.refreshes.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            reused_decodes: self.reused_decodes.load(Ordering::Relaxed),
            lookup_latency: self.lookup_latency.snapshot(),
            load_latency: self.load_latency.snapshot(),
        }
    }
}

/// A snapshot of one cache's counters since it was built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads that found nothing usable (absent, expired or corrupt).
    pub misses: u64,
    /// Loader runs.
    pub loads: u64,
    /// Loader runs that failed.
    pub load_errors: u64,
    /// Backend errors and timeouts, each absorbed by serving from the loader or skipping a
    /// fill.
    pub backend_errors: u64,
    /// Values that could not be decoded (foreign, corrupt, older layout), treated as misses.
    pub corrupt_values: u64,
    /// Fills not written because an invalidation happened during the load.
    pub stale_fills: u64,
    /// Hits close to expiry that reloaded the value ahead of time.
    pub early_refreshes: u64,
    /// Clusters invalidated.
    pub invalidations: u64,
    /// Hits on a byte store (Redis) whose bytes were the ones this cache last decoded for that
    /// key, answered with a clone of that value instead of a decode (see
    /// [`ClusterCacheConfig::decoded_memo_entries`](crate::ClusterCacheConfig)). Not a
    /// facade metric: it explains CPU, not cache behaviour.
    pub reused_decodes: u64,
    /// Latency of cache reads.
    pub lookup_latency: LatencySnapshot,
    /// Latency of loader runs.
    pub load_latency: LatencySnapshot,
}

impl CacheStats {
    /// `hits / (hits + misses)`, `None` before the first read.
    pub fn hit_rate(&self) -> Option<f64> {
        let reads = self.hits + self.misses;
        #[allow(clippy::cast_precision_loss, reason = "a ratio; counts far below 2^52")]
        (reads > 0).then(|| self.hits as f64 / reads as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_rate_is_hits_over_reads() {
        let metrics = CacheMetrics::new("memory");
        assert_eq!(metrics.stats().hit_rate(), None);
        for _ in 0..4 {
            metrics.hit(Kind::Info);
        }
        metrics.miss(Kind::Info);
        assert_eq!(metrics.stats().hit_rate(), Some(0.8));
    }

    #[test]
    fn latencies_land_in_their_bucket() {
        let histogram = LatencyHistogram::default();
        histogram.record(Duration::from_micros(40));
        histogram.record(Duration::from_micros(800));
        histogram.record(Duration::from_secs(1));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count(), 3);
        assert_eq!(snapshot.buckets[0], 1);
        assert_eq!(snapshot.buckets[4], 1);
        assert_eq!(snapshot.buckets[LATENCY_BUCKETS_MICROS.len()], 1);
        assert_eq!(snapshot.quantile_upper_bound_micros(0.5), Some(1_000));
        assert_eq!(snapshot.quantile_upper_bound_micros(1.0), None);
    }
}
