//! `iaasctl outbox ...` (administrators): events the bus refused for good, parked so the ones
//! behind them went on; list them, put one back in line, or drop one.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::Deserialize;

use crate::cli::OutboxCommand;
use crate::client::{Client, decode, path_segment};
use crate::console::Console;
use crate::error::Result;
use crate::table::Table;
use crate::when::format_age;

#[derive(Debug, Deserialize)]
struct Event {
    instance_id: String,
}

#[derive(Debug, Deserialize)]
struct Parked {
    seq: u64,
    name: String,
    event: Event,
    attempts: u32,
    error: String,
    parked_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
struct Listed {
    parked: Vec<Parked>,
}

/// Runs one `outbox` command.
pub(crate) async fn run(
    client: &Client,
    console: &mut Console<'_>,
    command: OutboxCommand,
) -> Result<()> {
    match command {
        OutboxCommand::Parked { json } => {
            let value = client.send(Method::GET, "/v1/admin/outbox/parked", &[], None).await?;
            if json {
                return Ok(console.print_json(&value)?);
            }
            let listed: Listed = decode(client.url(), value)?;
            let now = Utc::now();
            let mut table =
                Table::new(&["SEQ", "EVENT", "INSTANCE", "ATTEMPTS", "PARKED", "ERROR"]);
            for parked in listed.parked {
                table.row(vec![
                    parked.seq.to_string(),
                    parked.name,
                    parked.event.instance_id,
                    parked.attempts.to_string(),
                    format!("{} ago", format_age(parked.parked_at, now)),
                    parked.error,
                ]);
            }
            Ok(table.write_to(console.out)?)
        }
        OutboxCommand::Retry { seq } => {
            let path = format!("/v1/admin/outbox/parked/{}/retry", path_segment(&seq));
            client.send(Method::POST, &path, &[], None).await?;
            Ok(writeln!(console.out, "outbox entry {seq} is back in line")?)
        }
        OutboxCommand::Drop { seq } => {
            let path = format!("/v1/admin/outbox/parked/{}", path_segment(&seq));
            client.send(Method::DELETE, &path, &[], None).await?;
            Ok(writeln!(console.out, "outbox entry {seq} dropped")?)
        }
    }
}
