//! Server binaries under test: [`Server::start`] spawns one, waits for the `listening addr=...`
//! line its log prints once bound, keeps collecting its stdout and log (so the child never
//! blocks on a full pipe), and kills it on drop; [`Server::stop`] stops it with SIGTERM and
//! returns how it exited with everything it wrote.

use std::ffi::OsStr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::TestkitError;

/// How long [`Server::start`] waits for the address line.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long [`Server::stop`] waits for the exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the output of a server that exited (or was killed) is still read: a process it
/// started may hold its pipes open.
const OUTPUT_GRACE: Duration = Duration::from_secs(5);

/// A command for `program` with `set` and `NO_COLOR=1` (plain logs to match against), and
/// without every inherited variable whose name starts with `unset_prefix` (say `IAAS_`:
/// settings a developer's shell may hold).
pub fn command(program: impl AsRef<OsStr>, unset_prefix: &str, set: &[(&str, String)]) -> Command {
    let mut command = Command::new(program);
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with(unset_prefix) {
            command.env_remove(var);
        }
    }
    command.env("NO_COLOR", "1").envs(set.iter().map(|(k, v)| (*k, v.as_str())));
    command
}

/// The value of `key` in `envs`, as a configuration lookup of the variables a test passes to
/// [`command`].
#[must_use]
pub fn lookup(envs: &[(&str, String)], key: &str) -> Option<String> {
    envs.iter().find(|(name, _)| *name == key).map(|(_, value)| value.clone())
}

/// A running server binary; killed when dropped.
#[derive(Debug)]
pub struct Server {
    program: String,
    child: Child,
    addr: String,
    stdout: Collected,
    log: Collected,
}

/// What a pipe of the child gave so far, read in the background.
#[derive(Debug)]
struct Collected {
    bytes: Arc<Mutex<Vec<u8>>>,
    task: JoinHandle<()>,
}

impl Collected {
    /// Waits up to `within` for the pipe to close, then returns what was read from it.
    async fn finish(self, within: Duration) -> String {
        let Self { bytes, mut task } = self;
        if tokio::time::timeout(within, &mut task).await.is_err() {
            task.abort();
        }
        let bytes = bytes.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// How a [`Server`] ended, with everything it wrote.
#[derive(Debug)]
pub struct Exited {
    /// The exit status.
    pub status: ExitStatus,
    /// Its whole standard output.
    pub stdout: String,
    /// Its whole log (standard error).
    pub log: String,
}

impl Server {
    /// Spawns `command` (stdout and stderr piped, killed on drop) and waits up to
    /// [`START_TIMEOUT`] for a log line carrying `addr=<address>`.
    ///
    /// # Errors
    /// [`TestkitError::Process`] naming the program when it cannot be spawned, exits before
    /// logging an address (with the log so far), or takes longer than [`START_TIMEOUT`].
    pub async fn start(mut command: Command) -> Result<Self, TestkitError> {
        let program = command.as_std().get_program().to_string_lossy().into_owned();
        let fail = |reason: String| TestkitError::Process { program: program.clone(), reason };
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| fail(format!("cannot be spawned: {err}")))?;
        let stdout = child.stdout.take().ok_or_else(|| fail("no stdout pipe".to_owned()))?;
        let stdout = collect(stdout);
        let stderr = child.stderr.take().ok_or_else(|| fail("no stderr pipe".to_owned()))?;
        let (addr_tx, mut addr_rx) = watch::channel(None::<String>);
        let log_bytes = Arc::new(Mutex::new(Vec::new()));
        let log_sink = log_bytes.clone();
        let log_task = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) =
                    line.split("addr=").nth(1).and_then(|r| r.split_whitespace().next())
                {
                    addr_tx.send_if_modified(|seen| {
                        let first = seen.is_none();
                        if first {
                            *seen = Some(addr.to_owned());
                        }
                        first
                    });
                }
                let mut log = log_sink.lock().unwrap_or_else(PoisonError::into_inner);
                log.extend_from_slice(line.as_bytes());
                log.push(b'\n');
            }
        });
        let log = Collected { bytes: log_bytes, task: log_task };
        let waited = tokio::time::timeout(START_TIMEOUT, addr_rx.wait_for(Option::is_some)).await;
        let addr = match waited {
            Ok(Ok(addr)) => addr.clone().unwrap_or_default(),
            Ok(Err(_)) => {
                let log = log.finish(OUTPUT_GRACE).await;
                return Err(fail(format!("exited before logging `addr=`; its log:\n{log}")));
            }
            Err(_) => return Err(fail(format!("logged no `addr=` within {START_TIMEOUT:?}"))),
        };
        Ok(Self { program, child, addr, stdout, log })
    }

    /// The address it logged, e.g. `127.0.0.1:41234`.
    #[must_use]
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The child process, e.g. to kill it hard.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends SIGTERM and waits up to [`STOP_TIMEOUT`] for the exit.
    ///
    /// # Errors
    /// [`TestkitError::Process`] when the signal cannot be sent or the process does not exit
    /// in time (it is then killed, and the error carries its log).
    pub async fn stop(self) -> Result<Exited, TestkitError> {
        self.stop_within(STOP_TIMEOUT).await
    }

    /// [`Server::stop`] with a bound of its own.
    ///
    /// # Errors
    /// As [`Server::stop`].
    pub async fn stop_within(mut self, timeout: Duration) -> Result<Exited, TestkitError> {
        let fail = |reason: String| TestkitError::Process { program: self.program.clone(), reason };
        let pid = self.child.id().ok_or_else(|| fail("exited before SIGTERM".to_owned()))?;
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .map_err(|err| fail(format!("`kill -TERM {pid}` failed: {err}")))?;
        if !sent.success() {
            return Err(fail(format!("`kill -TERM {pid}` exited {sent}")));
        }
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(waited) => {
                waited.map_err(|err| fail(format!("waiting for the exit failed: {err}")))?
            }
            Err(_) => {
                // Killed so that its pipes close and its log says where it stood.
                let killed = tokio::time::timeout(OUTPUT_GRACE, self.child.kill()).await;
                let log = self.log.finish(OUTPUT_GRACE).await;
                return Err(fail(format!(
                    "still running {timeout:?} after SIGTERM (killed: {killed:?}); its log:\n{log}"
                )));
            }
        };
        let (stdout, log) =
            tokio::join!(self.stdout.finish(OUTPUT_GRACE), self.log.finish(OUTPUT_GRACE));
        Ok(Exited { status, stdout, log })
    }
}

/// Reads `pipe` to the end in the background.
fn collect(mut pipe: impl AsyncRead + Unpin + Send + 'static) -> Collected {
    let bytes = Arc::new(Mutex::new(Vec::new()));
    let sink = bytes.clone();
    let task = tokio::spawn(async move {
        let mut chunk = [0u8; 8192];
        // A read error ends the collection: what was read so far is what the test sees.
        while let Ok(read @ 1..) = pipe.read(&mut chunk).await {
            sink.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(&chunk[..read]);
        }
    });
    Collected { bytes, task }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> Command {
        let mut shell = command("sh", "PATH_NOT_", &[("SCRIPT_VALUE", "v".to_owned())]);
        shell.args(["-c", script]);
        shell
    }

    #[tokio::test]
    async fn start_reads_the_address_and_stop_returns_output_and_log() {
        let server = Server::start(shell(
            // The trap is set before the address line: a stop may follow it at once.
            "trap 'echo bye >&2; exit 0' TERM; echo to-stdout; \
             echo \"listening addr=127.0.0.1:1 $SCRIPT_VALUE\" >&2; while :; do sleep 0.1; done",
        ))
        .await
        .expect("it logs an address");
        assert_eq!(server.addr(), "127.0.0.1:1");
        let exited = server.stop().await.expect("it stops on SIGTERM");
        assert!(exited.status.success(), "{:?}", exited.status);
        assert_eq!(exited.stdout, "to-stdout\n");
        assert!(exited.log.contains("addr=127.0.0.1:1 v") && exited.log.ends_with("bye\n"));
    }

    #[tokio::test]
    async fn a_server_that_ignores_sigterm_is_killed_and_its_log_returned() {
        let server = Server::start(shell(
            "trap '' TERM; echo 'still busy' >&2; echo 'listening addr=127.0.0.1:1' >&2; \
             while :; do sleep 0.1; done",
        ))
        .await
        .expect("it logs an address");
        let err =
            server.stop_within(Duration::from_millis(500)).await.expect_err("it ignores TERM");
        let err = err.to_string();
        assert!(err.contains("still running 500ms after SIGTERM"), "{err}");
        assert!(err.contains("still busy"), "the log is in the error: {err}");
    }

    #[tokio::test]
    async fn a_process_left_behind_holding_the_pipes_does_not_hold_up_the_stop() {
        // The shell exits on TERM; the sleep it started keeps stdout and stderr open.
        let server = Server::start(shell(
            "trap 'echo bye >&2; exit 0' TERM; sleep 20 & \
             echo 'listening addr=127.0.0.1:1' >&2; while :; do sleep 0.1; done",
        ))
        .await
        .expect("it logs an address");
        let started = std::time::Instant::now();
        let exited = server.stop().await.expect("it stops on SIGTERM");
        assert!(exited.status.success(), "{:?}", exited.status);
        assert!(exited.log.contains("bye"), "what was written is returned: {}", exited.log);
        assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    }

    #[test]
    fn the_command_drops_the_prefixed_variables_and_sets_the_given_ones() {
        let set = [("IAAS_KEPT", "set".to_owned())];
        let command = command("true", "CARGO_", &set);
        let envs: Vec<_> = command.as_std().get_envs().collect();
        assert!(envs.contains(&(OsStr::new("IAAS_KEPT"), Some(OsStr::new("set")))));
        assert!(envs.contains(&(OsStr::new("CARGO_PKG_NAME"), None)), "cargo sets it for tests");
        assert_eq!(lookup(&set, "IAAS_KEPT").as_deref(), Some("set"));
        assert_eq!(lookup(&set, "IAAS_OTHER"), None);
    }

    #[tokio::test]
    async fn exiting_before_an_address_is_an_error_with_the_log() {
        let err = Server::start(shell("echo broken config >&2; exit 2"))
            .await
            .expect_err("no address was logged");
        let text = err.to_string();
        assert!(text.contains("sh") && text.contains("broken config"), "{text}");
    }
}
