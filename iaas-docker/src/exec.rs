//! Running a command inside a container through the engine's exec API (how the runtime talks
//! to PostgreSQL without a network path from the host: `psql` over the container's own socket).

use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use futures_util::StreamExt;

use crate::error::from_bollard;
use iaas_core::RuntimeError;

/// What a finished command printed and how it exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecOutput {
    /// Exit status (`-1` when the engine did not report one).
    pub(crate) exit_code: i64,
    /// Standard output.
    pub(crate) stdout: String,
    /// Standard error.
    pub(crate) stderr: String,
}

impl ExecOutput {
    /// The output if the command exited 0, else an [`RuntimeError::Engine`] naming `operation`
    /// and carrying the command's standard error.
    pub(crate) fn success(self, operation: impl Into<String>) -> Result<Self, RuntimeError> {
        if self.exit_code == 0 {
            Ok(self)
        } else {
            Err(RuntimeError::Engine {
                operation: operation.into(),
                message: format!(
                    "command exited with status {}: {}",
                    self.exit_code,
                    self.stderr.trim()
                ),
            })
        }
    }
}

/// One command to run in a container.
pub(crate) struct Command<'a> {
    /// Container id or name.
    pub(crate) container: &'a str,
    /// OS user the command runs as.
    pub(crate) user: &'a str,
    /// Argument vector.
    pub(crate) cmd: Vec<String>,
    /// Extra environment (`KEY=value`), used for secrets so they never appear in a command line.
    pub(crate) env: Vec<String>,
    /// How long the command may run.
    pub(crate) timeout: Duration,
}

/// Runs `command` to completion and returns its output and exit status.
pub(crate) async fn run(docker: &Docker, command: Command<'_>) -> Result<ExecOutput, RuntimeError> {
    let container = command.container;
    let operation = format!("running a command in container {container}");
    let created = docker
        .create_exec(
            container,
            ExecConfig {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                user: Some(command.user.to_owned()),
                cmd: Some(command.cmd),
                env: Some(command.env),
                ..Default::default()
            },
        )
        .await
        .map_err(|err| from_bollard(operation.clone(), err))?;
    let collect = async {
        let started = docker
            .start_exec(
                &created.id,
                Some(StartExecOptions { detach: false, tty: false, output_capacity: None }),
            )
            .await
            .map_err(|err| from_bollard(operation.clone(), err))?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let StartExecResults::Attached { mut output, .. } = started {
            while let Some(chunk) = output.next().await {
                match chunk.map_err(|err| from_bollard(operation.clone(), err))? {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        stdout.extend_from_slice(&message);
                    }
                    LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                    LogOutput::StdIn { .. } => {}
                }
            }
        }
        Ok::<_, RuntimeError>((stdout, stderr))
    };
    let (stdout, stderr) =
        tokio::time::timeout(command.timeout, collect).await.map_err(|_| {
            RuntimeError::Engine {
                operation: operation.clone(),
                message: format!("the command did not finish within {:?}", command.timeout),
            }
        })??;
    let inspected = docker
        .inspect_exec(&created.id)
        .await
        .map_err(|err| from_bollard(operation.clone(), err))?;
    Ok(ExecOutput {
        exit_code: inspected.exit_code.unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}
