//! `iaasctl events ...`: the monitoring API (`/v1/events`, `/v1/events/stats`).
//!
//! Search pages are newest first; each page but the last carries a cursor. Without `--all` the
//! command prints one page and, on standard error, the flag that fetches the next one; with
//! `--all` it follows the cursor to the end.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use iaas_core::InstanceId;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::{EventsCommand, SearchArgs, StatsArgs};
use crate::client::{Client, decode};
use crate::console::Console;
use crate::error::Result;
use crate::instances::resolve;
use crate::table::Table;
use crate::when::parse_time;

/// One entry of the event log, as `/v1/events` returns it. Type, action and level stay text so
/// an action or level added to the platform later still prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LogEntry {
    event_id: String,
    instance_id: String,
    #[serde(rename = "type")]
    kind: String,
    action: String,
    message: String,
    level: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    timestamp: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
struct Page {
    entries: Vec<LogEntry>,
    #[serde(default)]
    next_cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Bucket {
    start: DateTime<Utc>,
    total: u64,
    #[serde(default)]
    by_action: BTreeMap<String, u64>,
    #[serde(default)]
    by_type: BTreeMap<String, u64>,
}

#[derive(Debug, Deserialize)]
struct Stats {
    buckets: Vec<Bucket>,
}

/// Runs one `events` command.
pub(crate) async fn run(
    client: &Client,
    console: &mut Console<'_>,
    command: EventsCommand,
) -> Result<()> {
    match command {
        EventsCommand::Search(args) => search(client, console, args).await,
        EventsCommand::Stats(args) => stats(client, console, args).await,
    }
}

async fn search(client: &Client, console: &mut Console<'_>, args: SearchArgs) -> Result<()> {
    let now = client.now();
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(target) = &args.instance {
        let id = match target.parse::<InstanceId>() {
            Ok(id) => id,
            Err(_) => resolve(client, target).await?.id,
        };
        query.push(("instance", id.to_string()));
    }
    if let Some(kind) = args.kind {
        query.push(("type", kind));
    }
    if let Some(action) = args.action {
        query.push(("action", action));
    }
    if let Some(since) = &args.since {
        query.push(("from", parse_time("--since", since, now)?.to_rfc3339()));
    }
    if let Some(until) = &args.until {
        query.push(("to", parse_time("--until", until, now)?.to_rfc3339()));
    }
    if let Some(text) = args.text {
        query.push(("q", text));
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    let mut cursor = args.cursor;
    let mut entries = Vec::new();
    let next_cursor = loop {
        let mut page_query = query.clone();
        if let Some(cursor) = &cursor {
            page_query.push(("cursor", cursor.clone()));
        }
        let value = client.send(Method::GET, "/v1/events", &page_query, None).await?;
        let page: Page = decode(client.url(), value)?;
        entries.extend(page.entries);
        match page.next_cursor {
            Some(next) if args.all => cursor = Some(next),
            other => break other,
        }
    };
    if args.json {
        let value = json!({"entries": entries, "next_cursor": next_cursor});
        return Ok(console.print_json(&value)?);
    }
    if entries.is_empty() {
        writeln!(console.err, "no events found")?;
        return Ok(());
    }
    let mut table = Table::new(&["TIME", "EVENT", "INSTANCE", "LEVEL", "DETAILS"]);
    for entry in &entries {
        let details: Vec<String> =
            entry.metadata.iter().map(|(key, value)| format!("{key}={value}")).collect();
        table.row(vec![
            entry.timestamp.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            format!("{}.{}", entry.kind, entry.action),
            entry.instance_id.clone(),
            entry.level.clone(),
            details.join(" "),
        ]);
    }
    table.write_to(console.out)?;
    if let Some(next) = next_cursor {
        writeln!(console.err, "more entries: repeat with --cursor {next} (or use --all)")?;
    }
    Ok(())
}

async fn stats(client: &Client, console: &mut Console<'_>, args: StatsArgs) -> Result<()> {
    let now = client.now();
    let mut query: Vec<(&str, String)> = vec![("bucket", args.bucket.to_string())];
    if let Some(since) = &args.since {
        query.push(("from", parse_time("--since", since, now)?.to_rfc3339()));
    }
    if let Some(until) = &args.until {
        query.push(("to", parse_time("--until", until, now)?.to_rfc3339()));
    }
    let value = client.send(Method::GET, "/v1/events/stats", &query, None).await?;
    if args.json {
        return Ok(console.print_json(&value)?);
    }
    let stats: Stats = decode(client.url(), value)?;
    let counts = |map: &BTreeMap<String, u64>| {
        map.iter().map(|(key, n)| format!("{key}={n}")).collect::<Vec<_>>().join(" ")
    };
    let mut table = Table::new(&["START", "TOTAL", "BY ACTION", "BY TYPE"]);
    for bucket in stats.buckets.iter().filter(|b| b.total > 0) {
        table.row(vec![
            bucket.start.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            bucket.total.to_string(),
            counts(&bucket.by_action),
            counts(&bucket.by_type),
        ]);
    }
    table.write_to(console.out)?;
    let total: u64 = stats.buckets.iter().map(|b| b.total).sum();
    let buckets = stats.buckets.len();
    writeln!(console.out, "total {total} events in {buckets} buckets of {} s", args.bucket)?;
    Ok(())
}
