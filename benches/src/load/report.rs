//! What every subcommand of the load tool shares: latency percentiles, the final table and the
//! once-a-second progress line.
//!
//! Latencies are kept as raw samples (a run of 20 s at 1,000/s is 20,000 `Duration`s, a few
//! hundred kilobytes) and sorted once at the end, so the percentiles are exact, not estimated
//! from buckets.

#![allow(clippy::print_stdout, reason = "a command-line tool reports on stdout")]

use std::time::{Duration, Instant};

/// The value at rank `p` (0.0..=1.0) of `sorted`, nearest rank; zero when there is no sample.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Prints the header of the table [`print_row`] fills.
pub fn print_header(first_column: &str) {
    println!(
        "{first_column:<8} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "ok", "errors", "per s", "p50", "p95", "p99", "max"
    );
}

/// Prints one row: count, errors, rate over `elapsed` and p50 / p95 / p99 / max of
/// `latencies` (sorted here).
pub fn print_row(name: &str, latencies: &mut [Duration], errors: u64, elapsed: Duration) {
    latencies.sort_unstable();
    println!(
        "{:<8} {:>9} {:>7} {:>10.0} {:>9.2?} {:>9.2?} {:>9.2?} {:>9.2?}",
        name,
        latencies.len(),
        errors,
        rate(latencies.len() as u64, elapsed),
        percentile(latencies, 0.50),
        percentile(latencies, 0.95),
        percentile(latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
    );
}

/// `count` per second over `elapsed`; zero for an empty interval.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 { 0.0 } else { count as f64 / seconds }
}

/// The progress printer: a task that prints `line(elapsed)` once a second until it is stopped.
#[derive(Debug)]
pub struct Progress {
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts printing; `line` gets the time since `started` and returns the text after it.
    pub fn start<F>(started: Instant, mut line: F) -> Self
    where
        F: FnMut(Duration) -> String + Send + 'static,
    {
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let elapsed = started.elapsed();
                println!("{:>4.0?}  {}", elapsed, line(elapsed));
            }
        });
        Self { task }
    }

    /// Stops printing (the task holds no state worth finishing).
    pub fn stop(self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&sorted, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.99), Duration::ZERO);
    }

    #[test]
    fn a_rate_over_no_time_is_zero() {
        assert!((rate(500, Duration::from_millis(500)) - 1000.0).abs() < 1e-9);
        assert!(rate(10, Duration::ZERO).abs() < f64::EPSILON);
    }
}
