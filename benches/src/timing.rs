//! Timing helpers shared by the criterion benches.

use std::future::Future;
use std::time::{Duration, Instant};

/// The time of `iters` runs of `timed`, each right after an untimed run of `other`, so both
/// sides of a comparison meet the server in the same state (its storage grows, other work on
/// the machine comes and goes). Measured one side after the other instead, the ratio of two
/// sides swung by tens of percent between runs of the same code (`docs/benchmarks.md`).
pub async fn paired<O, T, OF, TF>(iters: u64, other: &O, timed: &T) -> Duration
where
    O: Fn() -> OF,
    T: Fn() -> TF,
    OF: Future<Output = ()>,
    TF: Future<Output = ()>,
{
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        other().await;
        let started = Instant::now();
        timed().await;
        total += started.elapsed();
    }
    total
}
