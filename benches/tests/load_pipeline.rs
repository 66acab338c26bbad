//! Smoke run of `iaas-load pipeline` on its embedded defaults (in-process bus, SQLite store and
//! log index): 400 events in 2 s must all arrive at the indexer, and the report must say so.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

#[test]
fn a_short_in_process_run_handles_every_event_and_reports_zero_lost() {
    let stdout = common::run_ok(&[
        "pipeline",
        "--bus",
        "in-process",
        "--rate",
        "200",
        "--duration",
        "2",
        "--drain-timeout",
        "20",
    ]);
    assert!(
        stdout.contains("written 400  handled 400  lost 0  duplicates 0"),
        "every written event handled once:\n{stdout}"
    );
    let e2e = stdout.lines().find(|line| line.starts_with("e2e ")).expect("an e2e latency row");
    assert!(e2e.split_whitespace().nth(1) == Some("400"), "400 latency samples: {e2e}");
}

#[test]
fn a_sweep_runs_each_rate_with_a_row_and_draws_the_depth_plot() {
    let out = common::out_dir("pipeline-sweep");
    let stdout = common::run_ok(&[
        "pipeline",
        "--bus",
        "in-process",
        "--rates",
        "50,100",
        "--duration",
        "1",
        "--drain-timeout",
        "20",
        "--out",
        &out.display().to_string(),
    ]);
    assert!(stdout.contains("written 50  handled 50  lost 0"), "the first run:\n{stdout}");
    assert!(stdout.contains("written 100  handled 100  lost 0"), "the second run:\n{stdout}");
    for rate in ["50", "100"] {
        assert!(stdout.contains(&format!("\n| {rate} | ")), "a row for {rate}/s:\n{stdout}");
    }
    common::assert_plots(&out, &["scale-outbox-depth.svg"], "outbox depth");
    std::fs::remove_dir_all(&out).unwrap();
}
