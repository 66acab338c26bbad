//! `iaasctl register|login|logout`: the auth API (`/v1/auth/*`) and the stored login.

use crate::cli::{CredentialsArgs, LogoutArgs};
use crate::client::Client;
use crate::console::Console;
use crate::error::{CliError, Result};
use crate::prompt::read_password;

/// `register USERNAME`: asks for the password twice when prompting, so a typo does not lock
/// the user out of a fresh account.
pub(crate) async fn register(
    client: &Client,
    console: &mut Console<'_>,
    args: CredentialsArgs,
) -> Result<()> {
    let password = read_password("Password: ", args.password_stdin)?;
    if !args.password_stdin {
        let again = read_password("Repeat the password: ", false)?;
        if again != password {
            return Err(CliError::PasswordRefused { reason: "the two passwords differ" });
        }
    }
    let account = client.register(&args.username, &password).await?;
    writeln!(console.out, "registered {} ({})", account.username, account.id)?;
    Ok(())
}

/// `login USERNAME`: stores the token pair.
pub(crate) async fn login(
    client: &Client,
    console: &mut Console<'_>,
    args: CredentialsArgs,
) -> Result<()> {
    let password = read_password("Password: ", args.password_stdin)?;
    let credentials = client.login(&args.username, &password).await?;
    writeln!(
        console.out,
        "logged in to {} as {}; session valid until {}",
        credentials.url,
        credentials.username,
        credentials.refresh_expires_at.format("%Y-%m-%dT%H:%M:%SZ")
    )?;
    Ok(())
}

/// `logout [--all]`.
pub(crate) async fn logout(
    client: &Client,
    console: &mut Console<'_>,
    args: LogoutArgs,
) -> Result<()> {
    if client.logout(args.all).await? {
        let scope = if args.all { "every session ended" } else { "session ended" };
        writeln!(console.out, "logged out of {} ({scope})", client.url())?;
    } else {
        writeln!(console.out, "not logged in to {}", client.url())?;
    }
    Ok(())
}
