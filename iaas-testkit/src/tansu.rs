//! A tansu broker of a test's own, for fault tests that kill it and start it again.
//!
//! It runs the binary `scripts/services.sh` builds on a free loopback port with its own SQLite
//! storage file, with the script's command line, so the shared broker is never touched.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::error::TestkitError;
use crate::wait::eventually;

/// How long a started broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A private tansu broker on its own port and storage file; killed when dropped.
#[derive(Debug)]
pub struct PrivateBroker {
    bin: PathBuf,
    port: u16,
    storage: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}
impl PrivateBroker {
    /// `~/.cargo/bin/tansu` (as `scripts/services.sh` installs it), else `tansu` on the PATH.
    pub fn binary() -> Option<PathBuf> {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
        let bin = home.join("bin").join("tansu");
        if bin.is_file() {
            return Some(bin);
        }
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|dir| Path::new(dir).join("tansu"))
            .find(|candidate| candidate.is_file())
    }

    /// Starts `bin` on a free port, its storage `dir/tansu.db`, its log `dir/tansu.log`.
    pub async fn start(bin: PathBuf, dir: &Path) -> Result<Self, TestkitError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|err| process_error(&bin, format!("finding a free port: {err}")))?
            .port();
        let mut broker = Self {
            bin,
            port,
            storage: dir.join("tansu.db"),
            log: dir.join("tansu.log"),
            child: None,
        };
        broker.spawn().await?;
        Ok(broker)
    }

    /// Its `host:port`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its storage file (tansu's SQLite schema: the table `consumer_group` lists the groups it
    /// keeps).
    pub fn storage(&self) -> &Path {
        &self.storage
    }

    /// Starts the broker (again) on its port and storage, with the command line of
    /// `scripts/services.sh`, and waits until it accepts connections.
    pub async fn spawn(&mut self) -> Result<(), TestkitError> {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .and_then(|log| Ok((log.try_clone()?, log)))
            .map_err(|err| {
                process_error(&self.bin, format!("opening {}: {err}", self.log.display()))
            })?;
        let child = Command::new(&self.bin)
            .args(["broker", "--listener-url", &listener, "--advertised-listener-url", &listener])
            // tansu 0.6.0 reads sqlite://a/b as the relative path a/b: an absolute path needs a
            // 4th slash (as in scripts/services.sh).
            .args(["--storage-engine", &format!("sqlite:///{}", self.storage.display())])
            .stdin(Stdio::null())
            .stdout(log.0)
            .stderr(log.1)
            .spawn()
            .map_err(|err| process_error(&self.bin, format!("starting: {err}")))?;
        self.child = Some(child);
        let address = self.brokers();
        eventually(START_TIMEOUT, || tokio::net::TcpStream::connect(address.clone()))
            .await
            .map_err(|err| {
                process_error(
                    &self.bin,
                    format!("not accepting on {address}: {err}\n{}", self.log_tail(30)),
                )
            })?;
        Ok(())
    }

    /// SIGKILL: no chance to flush or say goodbye. Nothing happens when it is not running.
    pub fn kill(&mut self) -> Result<(), TestkitError> {
        if let Some(mut child) = self.child.take() {
            child.kill().map_err(|err| process_error(&self.bin, format!("killing: {err}")))?;
            child.wait().map_err(|err| process_error(&self.bin, format!("reaping: {err}")))?;
        }
        Ok(())
    }

    /// The last `lines` lines of its log (empty when it cannot be read).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

fn process_error(bin: &Path, reason: String) -> TestkitError {
    TestkitError::Process { program: bin.display().to_string(), reason }
}
