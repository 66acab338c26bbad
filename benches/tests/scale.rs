//! Smoke run of `iaas-load scale` at small counts: every instance created becomes running,
//! the watcher applies its burst, the table has a row per count and both plots are written.
//!
//! The job workers look for due jobs once an hour here and carry out two jobs at a time: 30
//! creates finish only if each finished job makes its worker claim the next one at once.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use std::process::Command;

#[test]
fn a_small_run_provisions_everything_reports_each_count_and_draws_both_plots() {
    let out = std::env::temp_dir().join(format!("iaas-scale-smoke-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_iaas-load"))
        .args(["scale", "--counts", "10,30", "--reads", "20"])
        .args(["--job-concurrency", "2", "--job-poll-ms", "3600000", "--timeout-secs", "60"])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("the load tool runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let counts: Vec<&str> =
        stdout.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert!(counts.contains(&"10") && counts.contains(&"30"), "a row per count:\n{stdout}");
    for plot in ["scale-instances-latency.svg", "scale-instances-throughput.svg"] {
        let svg = std::fs::read_to_string(out.join(plot)).expect("the plot is written");
        assert!(svg.starts_with("<svg") && svg.contains("instances managed"), "{plot}: {svg:.200}");
    }
    std::fs::remove_dir_all(&out).unwrap();
}
