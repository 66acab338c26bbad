//! What can go wrong, and the exit code each failure gives.
//!
//! The exit codes are part of the command-line contract (scripts branch on them), so they are
//! decided here, in one place, by [`CliError::exit_code`].

use std::path::PathBuf;

/// Exit code: the command did what it was asked.
pub const EXIT_OK: u8 = 0;
/// Exit code: the platform refused the request (its JSON error is printed), or the operation
/// did not succeed (an instance ended `failed`, a wait timed out, local credentials are unusable).
pub const EXIT_API: u8 = 1;
/// Exit code: the command line is wrong (clap's own usage errors use it too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the platform cannot be reached (connection refused, unknown host, no answer).
pub const EXIT_CONNECT: u8 = 3;

/// `Result` with [`CliError`].
pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The platform answered with an error (`{"error":{"code","message"}}`).
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The stable machine-readable code.
        code: String,
        /// The platform's message.
        message: String,
    },
    /// No connection to the platform could be made, or it did not answer in time.
    #[error("cannot reach the platform at {url}")]
    Connect {
        /// The URL requested.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The connection broke while a request or its answer was in flight.
    #[error("request to {url} failed")]
    Transport {
        /// The URL requested.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The platform answered something this client does not understand.
    #[error("unexpected answer from {url}: {reason}")]
    UnexpectedResponse {
        /// The URL requested.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
    /// No credentials are stored for this platform.
    #[error("not logged in to {url}; run `iaasctl login USERNAME`")]
    NotLoggedIn {
        /// The platform's URL.
        url: String,
    },
    /// The refresh session ended (expired, revoked, or the password changed).
    #[error("the session at {url} has ended; run `iaasctl login USERNAME` again")]
    SessionEnded {
        /// The platform's URL.
        url: String,
        /// The platform's refusal.
        #[source]
        source: Box<CliError>,
    },
    /// The credentials file could not be read, written or removed.
    #[error("cannot {action} the credentials file {}", path.display())]
    Credentials {
        /// What was being done (`read`, `write`, `remove`).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The credentials file is not what this client writes.
    #[error("the credentials file {} is damaged; delete it and log in again", path.display())]
    CredentialsDamaged {
        /// The file.
        path: PathBuf,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// Neither `XDG_CONFIG_HOME` nor `HOME` is set, so there is nowhere to keep credentials.
    #[error("neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep credentials")]
    NoConfigDir,
    /// The password could not be read.
    #[error("cannot read the password")]
    Password {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An argument is unusable.
    #[error("invalid {argument} {value:?}: {reason}")]
    Usage {
        /// The argument (`--since`).
        argument: &'static str,
        /// Its value.
        value: String,
        /// What is expected.
        reason: String,
    },
    /// A flag was given without another it needs (`--synchronous` without `--ha`).
    #[error("{flag} needs {needs}: {reason}")]
    FlagNeeds {
        /// The flag given (`--synchronous`).
        flag: &'static str,
        /// What it needs (`--ha`).
        needs: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The password cannot be taken the way it was given (no terminal to prompt on, empty,
    /// the two entries differ).
    #[error("{reason}")]
    PasswordRefused {
        /// What is wrong, and what to do instead.
        reason: &'static str,
    },
    /// No instance of the caller has this name.
    #[error("no instance named {name:?}")]
    NoSuchInstance {
        /// The name asked for.
        name: String,
    },
    /// The instance ended `failed` (or was deleted) while the command waited for it.
    #[error("instance {name} ({id}) is {status}{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    InstanceFailed {
        /// Its id.
        id: String,
        /// Its name.
        name: String,
        /// The status it reached.
        status: String,
        /// The reason the platform recorded, when it gave one.
        reason: Option<String>,
    },
    /// The instance did not reach the wanted status in time.
    #[error("instance {name} is still {status} after {waited_secs} s (wanted {wanted})")]
    WaitTimedOut {
        /// Its name.
        name: String,
        /// The status it has.
        status: String,
        /// The status waited for.
        wanted: String,
        /// How long the command waited.
        waited_secs: u64,
    },
    /// The platform did not answer in time a request it carries out before answering (a
    /// switchover, a backup); the operation may still complete.
    #[error(
        "no answer to the {operation} of {name} within {waited_secs} s; it may still complete: \
         `iaasctl instances {check} {name}` shows {shows}"
    )]
    NoAnswer {
        /// What was asked (`switchover`, `backup`).
        operation: &'static str,
        /// The instance's name.
        name: String,
        /// How long the command waited.
        waited_secs: u64,
        /// The `instances` command that shows whether it completed (`info`, `backups`).
        check: &'static str,
        /// What that command shows (`the cluster`, `its backups`).
        shows: &'static str,
    },
    /// A restore asked for a moment the source's backups cannot reach (checked before anything
    /// is created).
    #[error("cannot restore from {source_name}: {reason}")]
    NoRestorePoint {
        /// The source cluster's name.
        source_name: String,
        /// Why, and what can be restored instead.
        reason: String,
    },
    /// Writing to the terminal failed (for example a closed pipe).
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
    /// The async runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl CliError {
    /// The process exit code for this failure (see the `EXIT_*` constants).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Connect { .. } => EXIT_CONNECT,
            CliError::Usage { .. }
            | CliError::FlagNeeds { .. }
            | CliError::PasswordRefused { .. } => EXIT_USAGE,
            CliError::SessionEnded { source, .. } => source.exit_code(),
            _ => EXIT_API,
        }
    }

    /// An [`CliError::Usage`] for `argument`.
    pub(crate) fn usage(
        argument: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        CliError::Usage { argument, value: value.into(), reason: reason.into() }
    }
}

impl From<std::io::Error> for CliError {
    /// I/O errors reaching `?` without more context are terminal writes.
    fn from(err: std::io::Error) -> Self {
        CliError::Output(err)
    }
}

/// `err` and its causes, `: `-separated, as printed after `error: `.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // reqwest repeats its inner error in its own message; print each text once.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_maps_to_its_documented_exit_code() {
        let api = CliError::Api { status: 401, code: "x".into(), message: "no".into() };
        assert_eq!(api.exit_code(), EXIT_API);
        assert_eq!(CliError::usage("--since", "x", "y").exit_code(), EXIT_USAGE);
        let needs = CliError::FlagNeeds { flag: "--synchronous", needs: "--ha", reason: "r" };
        assert_eq!(needs.exit_code(), EXIT_USAGE);
        assert_eq!(CliError::NotLoggedIn { url: "u".into() }.exit_code(), EXIT_API);
        let ended = CliError::SessionEnded { url: "u".into(), source: Box::new(api) };
        assert_eq!(ended.exit_code(), EXIT_API);
    }

    #[test]
    fn an_api_error_prints_the_platforms_message_and_code() {
        let api = CliError::Api {
            status: 401,
            code: "invalid_credentials".into(),
            message: "invalid username or password".into(),
        };
        assert_eq!(
            error_chain(&api),
            "invalid username or password (invalid_credentials, HTTP 401)"
        );
    }

    #[test]
    fn a_failed_instance_names_the_reason() {
        let err = CliError::InstanceFailed {
            id: "1".into(),
            name: "db".into(),
            status: "failed".into(),
            reason: Some("image not found".into()),
        };
        assert_eq!(err.to_string(), "instance db (1) is failed: image not found");
    }
}
