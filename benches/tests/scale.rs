//! Smoke run of `iaas-load scale` at small counts: every instance created becomes running,
//! the watcher applies its burst, the table has a row per count and both plots are written.
//!
//! The job workers look for due jobs once an hour here and carry out two jobs at a time: 30
//! creates finish only if each finished job makes its worker claim the next one at once.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

#[test]
fn a_small_run_provisions_everything_reports_each_count_and_draws_both_plots() {
    let out = common::out_dir("scale-smoke");
    let stdout = common::run_ok(&[
        "scale",
        "--counts",
        "10,30",
        "--reads",
        "20",
        "--job-concurrency",
        "2",
        "--job-poll-ms",
        "3600000",
        "--timeout-secs",
        "60",
        "--out",
        &out.display().to_string(),
    ]);
    let counts: Vec<&str> =
        stdout.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert!(counts.contains(&"10") && counts.contains(&"30"), "a row per count:\n{stdout}");
    common::assert_plots(
        &out,
        &["scale-instances-latency.svg", "scale-instances-throughput.svg"],
        "instances managed",
    );
    std::fs::remove_dir_all(&out).unwrap();
}

/// The same on the real Docker engine: ten busybox containers made through the jobs, killed
/// behind the control plane's back for the watcher's burst, and removed at the end (the tool
/// fails when any of them is left).
#[tokio::test]
async fn a_small_run_on_the_docker_engine_removes_what_it_made() {
    iaas_testkit::docker().await.unwrap();
    let out = common::out_dir("scale-docker");
    // Nothing else runs on this test's runtime: waiting for the tool blocks nobody.
    let stdout = common::run_ok(&[
        "scale",
        "--engine",
        "docker",
        "--counts",
        "10",
        "--reads",
        "20",
        "--timeout-secs",
        "120",
        "--image",
        &iaas_testkit::busybox_image(),
        "--out",
        &out.display().to_string(),
    ]);
    assert!(
        stdout.lines().any(|line| line.split_whitespace().next() == Some("10")),
        "a row for 10 instances:\n{stdout}"
    );
    assert!(stdout.contains("removed the 10 instances from the engine"), "{stdout}");
    common::assert_plots(
        &out,
        &["scale-instances-docker-latency.svg", "scale-instances-docker-throughput.svg"],
        "Docker engine",
    );
    std::fs::remove_dir_all(&out).unwrap();
}
