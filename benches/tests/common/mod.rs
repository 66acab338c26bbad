//! What the smoke runs of `iaas-load` share: running the tool, and checking the plots it drew.

#![allow(dead_code, reason = "each test file uses its share")]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory for one run's plots, named for `run` and this process.
pub(crate) fn out_dir(run: &str) -> PathBuf {
    std::env::temp_dir().join(format!("iaas-{run}-{}", std::process::id()))
}

/// Runs `iaas-load` with `args` and returns what it printed on stdout; a run that fails
/// fails the test with both of its outputs.
pub(crate) fn run_ok(args: &[&str]) -> String {
    let output =
        Command::new(env!("CARGO_BIN_EXE_iaas-load")).args(args).output().expect("the tool runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Checks that each of `plots` in `dir` is an SVG drawing that says `says`.
pub(crate) fn assert_plots(dir: &Path, plots: &[&str], says: &str) {
    for plot in plots {
        let svg = std::fs::read_to_string(dir.join(plot)).expect("the plot is written");
        assert!(svg.starts_with("<svg") && svg.contains(says), "{plot}: {svg:.200}");
    }
}
