//! Criterion benchmarks for iaas-rs; see `benches/` and `docs/benchmarks.md`.
//!
//! Run them with `cargo bench -p iaas-benches`. The library target is empty: the benches are
//! the crate.
