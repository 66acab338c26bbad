//! `iaasctl`: the command-line client of an iaas-rs platform.
//!
//! It speaks the platform's HTTP API: the auth routes to register and log in (the token pair
//! is kept in `~/.config/iaasctl/credentials`, mode 0600, and the access token is refreshed
//! transparently when it expires), the provisioning routes to list, create and operate
//! instances (with progress output from the live WebSocket while an instance provisions), and
//! the monitoring routes to search and count the event log. `docs/cli.md` shows every command
//! with its output.
//!
//! The binary only parses the command line and calls [`execute`]; everything else is here, so
//! another program can run a command against any output:
//!
//! ```no_run
//! use clap::Parser;
//! # async fn demo() -> Result<(), iaasctl::CliError> {
//! let cli = iaasctl::Cli::parse_from(["iaasctl", "--url", "http://127.0.0.1:8080", "instances", "list"]);
//! let client = iaasctl::Client::new(
//!     &cli.url,
//!     iaasctl::CredentialStore::default_location()?,
//!     std::sync::Arc::new(iaas_core::SystemClock),
//!     iaasctl::ClientConfig::default(),
//! )?;
//! let (mut out, mut err) = (Vec::new(), Vec::new());
//! iaasctl::run(cli.command, &client, &mut iaasctl::Console::new(&mut out, &mut err)).await?;
//! print!("{}", String::from_utf8_lossy(&out));
//! # Ok(()) }
//! ```
//!
//! Exit codes: [`EXIT_OK`] 0, [`EXIT_API`] 1 (the platform refused, or the operation failed),
//! [`EXIT_USAGE`] 2 (bad arguments), [`EXIT_CONNECT`] 3 (the platform cannot be reached).

mod account;
mod backups;
mod cli;
mod client;
mod console;
mod credentials;
mod error;
mod events;
mod follow;
mod instances;
mod outbox;
mod prompt;
mod quota;
mod sessions;
mod table;
mod when;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

pub use cli::{
    ActionArgs, BackupArgs, BackupType, BackupsArgs, Cli, Command, CreateArgs, CreateCommand,
    CredentialsArgs, DeleteArgs, EventsCommand, GetArgs, InstancesCommand, ListArgs, LogoutArgs,
    OutboxCommand, QuotaCommand, QuotaSetArgs, QuotaShowArgs, SearchArgs, SessionsCommand,
    StatsArgs, SwitchoverArgs, TargetArgs, ViewArgs,
};
pub use client::{Account, Client, ClientConfig, DEFAULT_URL};
pub use console::Console;
pub use credentials::{CredentialStore, Credentials, REFRESH_MARGIN_SECS};
pub use error::{CliError, EXIT_API, EXIT_CONNECT, EXIT_OK, EXIT_USAGE, Result, error_chain};
pub use prompt::read_password;
pub use table::Table;
pub use when::{format_age, parse_time};

/// Runs `command` with `client`, writing to `console`.
pub async fn run(command: Command, client: &Client, console: &mut Console<'_>) -> Result<()> {
    match command {
        Command::Register(args) => account::register(client, console, args).await,
        Command::Login(args) => account::login(client, console, args).await,
        Command::Logout(args) => account::logout(client, console, args).await,
        Command::Instances(command) => instances::run(client, console, command).await,
        Command::Events(command) => events::run(client, console, command).await,
        Command::Quota(command) => quota::run(client, console, command).await,
        Command::Sessions(command) => sessions::run(client, console, command).await,
        Command::Outbox(command) => outbox::run(client, console, command).await,
    }
}

/// Runs a parsed command line against the process's standard output and error, with the
/// credentials at their default place; prints a failure as `error: ...` and returns the
/// documented exit code.
pub fn execute(cli: Cli) -> ExitCode {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let (mut out, mut err) = (stdout.lock(), stderr.lock());
    let result = (|| {
        // One command at a time: a current-thread runtime is all a CLI needs.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CliError::Runtime)?;
        let store = CredentialStore::default_location()?;
        let client = Client::new(
            &cli.url,
            store,
            Arc::new(iaas_core::SystemClock),
            ClientConfig::default(),
        )?;
        let mut console = Console::new(&mut out, &mut err);
        runtime.block_on(run(cli.command, &client, &mut console))
    })();
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(error) => {
            // Nothing is left to report to if standard error itself is closed.
            let _ = writeln!(err, "error: {}", error_chain(&error));
            ExitCode::from(error.exit_code())
        }
    }
}
