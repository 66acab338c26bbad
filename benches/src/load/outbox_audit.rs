//! `iaas-load outbox-audit`: whether every event a platform's store holds reached the broker,
//! and reached it once.
//!
//! It waits until the platform is at rest (PostgreSQL, `--database-url` or `IAAS_DATABASE_URL`):
//! no job left, no unsent event in the outbox, and no new event for `--quiet` seconds (a job's
//! last status arrives from the engine's events just after it). Then it reads the id of every
//! event there, and every partition of the topic (`--brokers`, `--topic`) from its start,
//! assigned (no consumer group is joined or left behind), up to the end each partition had when
//! the reading began (every stored event was sent, so acknowledged, by then), then `--quiet`
//! seconds more for anything behind it; `--timeout` bounds it all. It reports the events stored,
//! published, **lost** (stored, never published), **duplicated** (published more than once) and
//! unknown (published, not stored: another writer on the topic, or an outbox row pruned after
//! its retention), and fails when any event was lost or duplicated, stayed unsent, when a
//! partition could not be read to its end, or when the store holds no event at all (nothing to
//! audit is not a pass). Meant for a store and a topic of one run (as `scripts/replicas.sh
//! --rolling-restart` makes): on a long-lived pair, pruned rows show as unknown.
//!
//! ```text
//! IAAS_DATABASE_URL=postgres://... iaas-load outbox-audit --brokers 127.0.0.1:9092 \
//!     --topic infrastructure.events
//! ```

#![allow(clippy::print_stdout, reason = "a command-line tool reports on stdout")]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

/// Arguments of `iaas-load outbox-audit`.
#[derive(Debug, clap::Args)]
pub struct OutboxAuditArgs {
    /// The platform's store (PostgreSQL). Better given in the environment: a command line is
    /// readable by every user of the machine, and this URL carries a password.
    #[arg(long, env = "IAAS_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// The broker's bootstrap servers.
    #[arg(long, env = "IAAS_KAFKA_BROKERS")]
    pub brokers: String,
    /// The platform's events topic.
    #[arg(long, env = "IAAS_KAFKA_TOPIC", default_value = "infrastructure.events")]
    pub topic: String,
    /// Seconds to wait for the platform to come to rest and for the topic to show every stored
    /// event.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Seconds without a new event in the store before it is read, and without a message once
    /// every stored event was seen before the topic's reading ends.
    #[arg(long, default_value_t = 5)]
    pub quiet: u64,
}

/// How often the outbox is asked whether it drained.
const POLL: Duration = Duration::from_millis(500);

/// What the audit found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Audit {
    /// Events in the store.
    pub stored: usize,
    /// Messages read from the topic.
    pub published: usize,
    /// Stored events never published.
    pub lost: Vec<String>,
    /// Events published more than once, with how often.
    pub duplicated: Vec<(String, usize)>,
    /// Published events the store does not hold.
    pub unknown: usize,
}

impl Audit {
    /// Compares the `stored` event ids with the `published` ones (in the order read).
    pub fn compare(stored: &BTreeSet<String>, published: &[String]) -> Self {
        let mut times: BTreeMap<&str, usize> = BTreeMap::new();
        for id in published {
            *times.entry(id.as_str()).or_default() += 1;
        }
        Self {
            stored: stored.len(),
            published: published.len(),
            lost: stored.iter().filter(|id| !times.contains_key(id.as_str())).cloned().collect(),
            duplicated: times
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(id, n)| ((*id).to_owned(), *n))
                .collect(),
            unknown: times.keys().filter(|id| !stored.contains(**id)).count(),
        }
    }

    /// Whether every stored event was published exactly once.
    pub fn holds(&self) -> bool {
        self.lost.is_empty() && self.duplicated.is_empty()
    }
}

/// Runs `iaas-load outbox-audit`.
///
/// # Errors
/// The store or the broker cannot be read, the outbox does not drain in time, or an event was
/// lost or duplicated.
pub async fn run(args: OutboxAuditArgs) -> Result<(), String> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&args.database_url)
        .await
        .map_err(|e| format!("connecting to the store: {e}"))?;
    let quiet = Duration::from_secs(args.quiet);
    let mut last: Option<(i64, Instant)> = None;
    loop {
        let (jobs, unsent, events): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM jobs), \
                    (SELECT COUNT(*) FROM outbox WHERE sent_us IS NULL), \
                    (SELECT COUNT(*) FROM outbox)",
        )
        .fetch_one(&pool)
        .await
        .map_err(|e| format!("reading the jobs and the outbox: {e}"))?;
        let steady_since = match last {
            Some((before, since)) if before == events => since,
            _ => Instant::now(),
        };
        last = Some((events, steady_since));
        if jobs == 0 && unsent == 0 && steady_since.elapsed() >= quiet {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "not at rest after {} s: {jobs} jobs left, {unsent} events unsent",
                args.timeout
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    let payloads: Vec<String> = sqlx::query_scalar("SELECT payload FROM outbox")
        .fetch_all(&pool)
        .await
        .map_err(|e| format!("reading the outbox: {e}"))?;
    pool.close().await;
    if payloads.is_empty() {
        return Err("the store holds no event: nothing to audit".to_owned());
    }
    let mut stored = BTreeSet::new();
    for payload in &payloads {
        stored.insert(event_id(payload.as_bytes()).map_err(|e| format!("an outbox row: {e}"))?);
    }
    println!(
        "at rest: no job, outbox drained, {} events stored ({:.1} s)",
        stored.len(),
        started.elapsed().as_secs_f64()
    );

    let published = read_topic(&args, deadline).await?;
    let audit = Audit::compare(&stored, &published);
    println!(
        "topic {}: {} messages read; stored {}, lost {}, duplicated {}, not in the store {} ({:.1} s)",
        args.topic,
        audit.published,
        audit.stored,
        audit.lost.len(),
        audit.duplicated.len(),
        audit.unknown,
        started.elapsed().as_secs_f64()
    );
    if audit.holds() {
        Ok(())
    } else {
        Err(format!(
            "not every stored event was published once: lost {:?}, duplicated {:?}",
            audit.lost, audit.duplicated
        ))
    }
}

/// Every message's event id on the topic, each partition read from its start to the end it had
/// when the reading began, then `--quiet` seconds more; until `deadline` at most.
async fn read_topic(args: &OutboxAuditArgs, deadline: Instant) -> Result<Vec<String>, String> {
    // Assigned, not subscribed: no group is joined, so none is left on the broker; the id
    // only names the client.
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", "iaas-outbox-audit")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("creating a consumer on {}: {e}", args.brokers))?;
    // The end of each partition now: every stored event was acknowledged before it.
    let wait = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(&args.topic), wait)
        .map_err(|e| format!("reading the partitions of {}: {e}", args.topic))?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for topic in metadata.topics() {
        if let Some(error) = topic.error() {
            return Err(format!("topic {}: {error:?}", args.topic));
        }
        for partition in topic.partitions() {
            let (low, high) =
                consumer.fetch_watermarks(&args.topic, partition.id(), wait).map_err(|e| {
                    format!("reading the end of {} [{}]: {e}", args.topic, partition.id())
                })?;
            assignment
                .add_partition_offset(&args.topic, partition.id(), Offset::Beginning)
                .map_err(|e| format!("assigning {} [{}]: {e}", args.topic, partition.id()))?;
            if high > low {
                ends.insert(partition.id(), high);
            }
        }
    }
    if assignment.count() == 0 {
        return Err(format!("topic {} has no partition", args.topic));
    }
    consumer.assign(&assignment).map_err(|e| format!("assigning {}: {e}", args.topic))?;
    let deadline = tokio::time::Instant::from_std(deadline);
    let mut published = Vec::new();
    let mut quiet_since = ends.is_empty().then(tokio::time::Instant::now);
    loop {
        let until = quiet_since
            .map_or(deadline, |since| (since + Duration::from_secs(args.quiet)).min(deadline));
        let message = match tokio::time::timeout_at(until, consumer.recv()).await {
            Ok(message) => message.map_err(|e| format!("reading {}: {e}", args.topic))?,
            Err(_) => break,
        };
        let id = event_id(message.payload().unwrap_or_default())
            .map_err(|e| format!("a message at offset {}: {e}", message.offset()))?;
        published.push(id);
        if ends.get(&message.partition()).is_some_and(|end| message.offset() + 1 >= *end) {
            ends.remove(&message.partition());
        }
        if ends.is_empty() {
            // Every partition read to its end: `--quiet` past the last message for anything
            // behind it.
            quiet_since = Some(tokio::time::Instant::now());
        }
    }
    if !ends.is_empty() {
        return Err(format!(
            "partitions {:?} of {} not read to their end within {} s",
            ends.keys().collect::<Vec<_>>(),
            args.topic,
            args.timeout
        ));
    }
    Ok(published)
}

/// The `id` of an event in its JSON form.
fn event_id(payload: &[u8]) -> Result<String, String> {
    let event: Value =
        serde_json::from_slice(payload).map_err(|e| format!("not an event (JSON): {e}"))?;
    event
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "an event without an id".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|id| (*id).to_owned()).collect()
    }

    #[test]
    fn each_stored_event_published_once_holds() {
        let stored: BTreeSet<String> = ids(&["a", "b"]).into_iter().collect();
        let audit = Audit::compare(&stored, &ids(&["b", "a"]));
        assert!(audit.holds(), "{audit:?}");
        assert_eq!((audit.stored, audit.published, audit.unknown), (2, 2, 0));
    }

    #[test]
    fn a_lost_and_a_duplicated_event_are_named_and_fail_the_audit() {
        let stored: BTreeSet<String> = ids(&["a", "b", "c"]).into_iter().collect();
        let audit = Audit::compare(&stored, &ids(&["a", "b", "b", "x"]));
        assert!(!audit.holds());
        assert_eq!(audit.lost, ids(&["c"]));
        assert_eq!(audit.duplicated, vec![("b".to_owned(), 2)]);
        assert_eq!(audit.unknown, 1, "x is on the topic and not in the store");
    }

    #[test]
    fn an_event_is_read_by_its_id_and_anything_else_is_refused() {
        assert_eq!(event_id(br#"{"id":"e1","action":"created"}"#), Ok("e1".to_owned()));
        assert!(event_id(b"{}").is_err());
        assert!(event_id(b"not json").is_err());
    }
}
