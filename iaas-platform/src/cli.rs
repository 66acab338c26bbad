//! What every binary of the platform does before it builds anything: read the command line
//! (`--help`, `--version`, `--config <file>`), load and validate the layered configuration, and
//! install the log subscriber with the configured filter. Shared by `iaas-platform` and the
//! single-service examples, so they accept the same file, the same variables and the same
//! arguments.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use crate::config::{Command, Config, settings_help};
use crate::error::StartError;

/// Exit code of a rejected command line or configuration.
pub const EXIT_CONFIG: u8 = 2;

/// A binary's name, what it is, and where it listens unless configured otherwise.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Program {
    /// The binary's name, as in `--help` and `--version`.
    pub name: &'static str,
    /// What it is, one line.
    pub about: &'static str,
    /// Its default `listen` address.
    pub listen: SocketAddr,
    /// Extra text `--help` prints after the settings (endpoints, notes).
    pub more_help: &'static str,
}

impl Program {
    /// A program listening on `127.0.0.1:port` by default.
    pub const fn new(name: &'static str, about: &'static str, port: u16) -> Self {
        Self {
            name,
            about,
            listen: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), port),
            more_help: "",
        }
    }

    /// The same with `text` appended to `--help`.
    pub const fn with_help(mut self, text: &'static str) -> Self {
        self.more_help = text;
        self
    }

    /// The `--help` text: usage, every setting with its file key, variable and default.
    pub fn help(&self) -> String {
        format!(
            "{name}: {about}\n\nUSAGE:\n    {name} [--config <file.toml>] [--help] [--version]\n\n\
             CONFIGURATION: built-in defaults < the TOML file (--config, or IAAS_CONFIG) < the environment.\n\
             Every setting has a file key and an environment variable (docs/configuration.md);\n\
             listen defaults to {listen} here.\n\n{settings}{more}",
            name = self.name,
            about = self.about,
            listen = self.listen,
            settings = settings_help(),
            more = self.more_help,
        )
    }

    /// Reads the process's arguments and environment. `Ok` with the configuration to run with
    /// and the guard of the log writer (the log subscriber is installed by then); `Err` with
    /// the exit code when the process should end now: after `--help` or `--version` (0), or a
    /// rejected command line or configuration (2, the reason on stderr).
    ///
    /// Bind the guard to a name that lives to the end of `main` (`let (config, _logs) = ...`):
    /// `let (config, _) = ...` drops it at once, and nothing logged after that is written.
    pub fn configure(&self) -> Result<(Config, LogGuard), ExitCode> {
        let config_file = match Command::parse(std::env::args().skip(1)) {
            Ok(Command::Run { config_file }) => config_file,
            Ok(Command::Help) => return Err(print(&self.help())),
            Ok(Command::Version) => {
                return Err(print(&format!("{} {}\n", self.name, env!("CARGO_PKG_VERSION"))));
            }
            Err(err) => {
                eprintln!("{}: {err}", self.name);
                return Err(ExitCode::from(EXIT_CONFIG));
            }
        };
        let defaults = Config { listen: self.listen, ..Config::default() };
        // The log filter is a setting too, so errors up to here go to stderr directly.
        let config = Config::load_with_defaults(
            config_file.as_deref(),
            |key| std::env::var(key).ok(),
            defaults,
        )
        .map_err(|err| {
            eprintln!("{}: configuration rejected: {err}", self.name);
            ExitCode::from(EXIT_CONFIG)
        })?;
        // Lines are written by a thread of their own, in batches: a request's log line costs
        // no write to stderr on the request's path. Never dropped: a full queue (128 Ki lines)
        // makes loggers wait instead.
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .thread_name("log-writer")
            .finish(std::io::BufWriter::new(std::io::stderr()));
        tracing_subscriber::fmt()
            .with_env_filter(
                // Validated while loading; the fallback is never taken.
                EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info")),
            )
            .with_writer(writer)
            // Colours for a terminal only (and not when NO_COLOR is set): a log file or
            // collector gets plain text.
            .with_ansi(
                std::io::stderr().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty()),
            )
            .init();
        Ok((config, LogGuard { _writer: guard }))
    }
}

/// The thread writing the log: dropping it writes out the lines still queued (waiting up to
/// about a second), so keep it until the end of `main`. Lines logged after it is dropped, or
/// while a panic's message goes straight to stderr, can be lost or come out of order.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: tracing_appender::non_blocking::WorkerGuard,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogGuard")
    }
}

/// Binds `config.listen`, logs the bound address (`listening addr=...`), serves `router` until
/// SIGINT/SIGTERM (and `config.drain` after it, answering `/readyz` with 503 `draining`
/// meanwhile) and lets in-flight requests finish; the exit code says how it ended.
pub async fn listen_and_serve(config: &Config, router: axum::Router) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(%err, listen = %config.listen, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, "listening"),
        Err(err) => tracing::warn!(%err, "listening on an address the OS will not report"),
    }
    let shutdown = crate::server::shutdown_after_drain(config.drain);
    match crate::server::serve(listener, router, config, shutdown).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(%err, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// Logs why a service could not start; exit code 2 when a setting is missing, else 1.
pub fn start_failed(err: &StartError) -> ExitCode {
    tracing::error!(err = %iaas_core::error_chain(err), "cannot start");
    match err {
        StartError::Unconfigured { .. } => ExitCode::from(EXIT_CONFIG),
        _ => ExitCode::FAILURE,
    }
}

/// Writes `text` to stdout and flushes it (stdout is for people; logs go to stderr).
pub fn write_stdout(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

fn print(text: &str) -> ExitCode {
    match write_stdout(text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use iaas_core::error_chain;

    use super::*;

    #[test]
    fn help_names_the_program_its_default_address_and_every_setting() {
        let help =
            Program::new("demo-service", "a demo", 8099).with_help("\nENDPOINTS: x\n").help();
        assert!(help.starts_with("demo-service: a demo"));
        assert!(help.contains("listen defaults to 127.0.0.1:8099"));
        assert!(help.ends_with("ENDPOINTS: x\n"));
        for setting in crate::config::SETTINGS {
            assert!(help.contains(setting.env), "{}", setting.env);
        }
    }

    #[test]
    fn an_error_chain_lists_every_cause() {
        let inner = std::io::Error::other("disk full");
        let outer = crate::error::StartError::DataDir { path: "/d".into(), source: inner };
        assert_eq!(error_chain(&outer), "cannot create the data directory /d: disk full");
    }
}
