//! `iaasctl sessions ...`: your logins (`/v1/auth/sessions`), and ending one you no longer
//! trust.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::Deserialize;

use crate::cli::SessionsCommand;
use crate::client::{Client, decode, path_segment};
use crate::console::Console;
use crate::error::Result;
use crate::table::Table;
use crate::when::format_age;

#[derive(Debug, Deserialize)]
struct Session {
    family: String,
    family_created_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    client: String,
}

#[derive(Debug, Deserialize)]
struct Listed {
    sessions: Vec<Session>,
}

/// Runs one `sessions` command.
pub(crate) async fn run(
    client: &Client,
    console: &mut Console<'_>,
    command: SessionsCommand,
) -> Result<()> {
    match command {
        SessionsCommand::List { json } => {
            let value = client.send(Method::GET, "/v1/auth/sessions", &[], None).await?;
            if json {
                return Ok(console.print_json(&value)?);
            }
            let listed: Listed = decode(client.url(), value)?;
            let now = Utc::now();
            let mut table = Table::new(&["ID", "CLIENT", "LOGGED IN", "LAST REFRESH", "ENDS"]);
            for session in listed.sessions {
                table.row(vec![
                    session.family,
                    session.client,
                    format!("{} ago", format_age(session.family_created_at, now)),
                    format!("{} ago", format_age(session.created_at, now)),
                    session.expires_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                ]);
            }
            Ok(table.write_to(console.out)?)
        }
        SessionsCommand::Revoke { id } => {
            let path = format!("/v1/auth/sessions/{}", path_segment(&id));
            client.send(Method::DELETE, &path, &[], None).await?;
            Ok(writeln!(console.out, "session {id} ended")?)
        }
    }
}
