//! Criterion benchmarks for iaas-rs (see `benches/` and `docs/benchmarks.md`) and the
//! `iaas-load` load tool.
//!
//! Run the benchmarks with `cargo bench -p iaas-benches`; the load tool with
//! `scripts/load.sh [http|pipeline|...] [args]` or `cargo run -p iaas-benches --bin iaas-load --
//! --help`. The library holds the load tool's code, one module per subcommand, and what they
//! share, such as the percentiles of its reports:
//!
//! ```
//! use std::time::Duration;
//! use iaas_benches::load::report::percentile;
//!
//! let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
//! assert_eq!(percentile(&sorted, 0.99), Duration::from_millis(99));
//! ```

pub mod load;
pub mod timing;
