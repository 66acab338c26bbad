//! The `iaas-load` load tool, one module per subcommand.
//!
//! - [`http`]: drives a running platform over HTTP (auth and instance reads) and reports
//!   latency per operation.
//! - [`pipeline`]: events at a target rate through outbox -> bus -> monitoring indexer,
//!   assembled in the tool's process from the SDK's building blocks; end-to-end latency, lag,
//!   and a check that nothing was lost.
//! - [`scale`]: the control plane's cost at 10 to 10,000 instances, in this process, in front
//!   of a simulated engine; a table and plots.
//! - [`events`]: the embedded event index's ingest and search at 100 thousand to 10 million
//!   events; a table and plots.
//! - [`outbox_audit`]: whether every event in a platform's store reached the broker once.
//! - [`report`]: what the subcommands share: percentiles, the result table, the progress line.
//! - [`plot`]: the log-log charts of the sweeps.
//! - [`proc_usage`]: a process's memory and CPU from `/proc`, for the runs given the platform's
//!   pid.
//!
//! The binary (`src/bin/iaas-load.rs`) only parses the command line and dispatches here.

pub mod docker_ws;
pub mod events;
pub mod http;
mod instances;
pub mod outbox_audit;
pub mod pipeline;
pub mod plot;
pub mod proc_usage;
pub mod report;
pub mod scale;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// How long the runtime waits for leftover tasks when the tool exits.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a subcommand on a multi-threaded runtime and turns its outcome into the exit code,
/// printing the error on stderr.
pub fn block_on<F>(subcommand: F) -> ExitCode
where
    F: Future<Output = Result<(), String>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("iaas-load: starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(subcommand);
    // A blocking task that hangs (a Kafka client closing against a dead broker) must not keep
    // the tool from exiting.
    runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("iaas-load: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A run's data directory (its store, its index) under the system's temporary directory,
/// removed when dropped.
pub(crate) struct DataDir(PathBuf);

impl DataDir {
    /// A new empty directory named after `name` and a fresh id.
    pub(crate) fn new(name: &str) -> Result<Self, String> {
        let path =
            std::env::temp_dir().join(format!("iaas-load-{name}-{}", iaas_core::EventId::new_v7()));
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("creating the data directory {}: {e}", path.display()))?;
        Ok(Self(path))
    }

    /// Where it is.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            eprintln!("iaas-load: removing {}: {error}", self.0.display());
        }
    }
}
