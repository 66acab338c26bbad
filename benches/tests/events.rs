//! Smoke run of `iaas-load events` at small counts: the index grows to each count, every kind
//! of search answers, the table has a row per count and both plots are written.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::process::Command;

#[test]
fn a_small_run_indexes_to_each_count_searches_and_draws_both_plots() {
    let out = common::out_dir("events-smoke");
    let stdout = common::run_ok(&[
        "events",
        "--counts",
        "2000,5000",
        "--queries",
        "20",
        "--out",
        &out.display().to_string(),
    ]);
    for count in ["2000", "5000"] {
        assert!(stdout.contains(&format!("{count} events indexed in")), "{count}:\n{stdout}");
        assert!(stdout.contains(&format!("\n| {count} | ")), "a row for {count}:\n{stdout}");
    }
    common::assert_plots(
        &out,
        &["scale-events-ingest.svg", "scale-events-search.svg"],
        "events in the index",
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn counts_that_do_not_rise_are_refused_with_a_reason() {
    let output = Command::new(env!("CARGO_BIN_EXE_iaas-load"))
        .args(["events", "--counts", "5000,2000"])
        .output()
        .expect("the load tool runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rising list"), "{stderr}");
}
