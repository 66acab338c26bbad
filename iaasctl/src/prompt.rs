//! Reading a password: from a terminal prompt with echo turned off, or as one line of standard
//! input (`--password-stdin`, for scripts). A password is never taken from an argument: it
//! would be visible in the process list and the shell history.

use std::io::{BufRead, IsTerminal, Write};

use rustix::termios::{self, LocalModes, OptionalActions, Termios};

use crate::error::{CliError, Result};

/// Reads a password: the first line of standard input with `from_stdin`, else from the
/// terminal after printing `prompt` to standard error, without echoing what is typed.
pub fn read_password(prompt: &str, from_stdin: bool) -> Result<String> {
    let stdin = std::io::stdin();
    let password = if from_stdin {
        read_line(&mut stdin.lock())?
    } else {
        if !stdin.is_terminal() {
            return Err(CliError::PasswordRefused {
                reason: "standard input is not a terminal: pipe the password in with --password-stdin",
            });
        }
        let mut stderr = std::io::stderr();
        write!(stderr, "{prompt}").and_then(|()| stderr.flush()).map_err(password_error)?;
        let line = {
            let _echo_off = EchoOff::new(&stdin)?;
            read_line(&mut stdin.lock())
        };
        // The Enter key was not echoed either: end the prompt's line.
        writeln!(stderr).map_err(password_error)?;
        line?
    };
    if password.is_empty() {
        return Err(CliError::PasswordRefused { reason: "the password is empty" });
    }
    Ok(password)
}

/// The first line of `input`, without its line ending.
fn read_line(input: &mut dyn BufRead) -> Result<String> {
    let mut line = String::new();
    input.read_line(&mut line).map_err(password_error)?;
    let trimmed = line.strip_suffix('\n').unwrap_or(&line);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    Ok(trimmed.to_owned())
}

fn password_error(source: std::io::Error) -> CliError {
    CliError::Password { source }
}

/// Terminal echo switched off until dropped (also on an early return or a panic).
struct EchoOff<'a> {
    stdin: &'a std::io::Stdin,
    saved: Termios,
}

impl<'a> EchoOff<'a> {
    fn new(stdin: &'a std::io::Stdin) -> Result<Self> {
        let saved = termios::tcgetattr(stdin).map_err(|e| password_error(e.into()))?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        termios::tcsetattr(stdin, OptionalActions::Now, &quiet)
            .map_err(|e| password_error(e.into()))?;
        Ok(Self { stdin, saved })
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        // Nothing more can be done if restoring fails; the shell's `reset` fixes the terminal.
        let _ = termios::tcsetattr(self.stdin, OptionalActions::Now, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_line_is_the_password_without_its_line_ending() {
        let mut input: &[u8] = b"s3cret pass\r\nsecond line\n";
        assert_eq!(read_line(&mut input).unwrap(), "s3cret pass");
        let mut input: &[u8] = b"no newline";
        assert_eq!(read_line(&mut input).unwrap(), "no newline");
    }
}
