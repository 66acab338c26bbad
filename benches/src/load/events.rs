//! `iaas-load events`: what the embedded event index costs as it grows, at 100 thousand, 1
//! million and 10 million events.
//!
//! The tool opens the embedded index (`SqliteLogIndex`, the platform's default `events.db`) in a
//! fresh directory and fills it through the consumer path the platform runs
//! (`MonitoringIndexer::handle_batch`, batches of the runner's `max_batch`): events of 10,000
//! instances of 1,000 users, one second apart, the instance of each in turn. At each count it
//! times the last 100,000 events indexed (the ingest rate at that size; fewer when the counts
//! are closer), then random searches of the kinds the monitoring API answers: one instance's
//! latest page, one user's latest page, a text query, and per-hour counts of a user's last day.
//!
//! The text query is `pg N` for a random user and a random `N` below 1,000. Every event of user
//! `u` names container `pg-u`, so the words match a thousandth of all events, and for 999
//! searches in 1,000 none of the searching user's: the page is empty and the cost is that of
//! matching the words over everyone's events before the user filter. A search by instance or
//! by user that finds nothing fails the run. It prints a table and draws two
//! plots (SVG). The index at 10 million events takes some 3-4 GB on disk; the directory is
//! removed at the end.

#![allow(clippy::print_stdout, reason = "a command-line tool reports on stdout")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use iaas_core::{
    EventAction, EventHandler as _, InfrastructureEvent, InstanceId, InstanceKind, UserId,
};
use iaas_events::monitoring::{
    CountQuery, LogIndex, LogQuery, MonitoringIndexer, SqliteIndexConfig, SqliteLogIndex,
};
use plotters::style::{BLACK, BLUE, GREEN, RED, RGBColor};

use super::DataDir;
use super::plot::{Chart, log_log};
use super::report::percentile;

/// Users the events belong to.
const USERS: usize = 1_000;
/// Instances the events are about (10 per user, the default quota).
const INSTANCES: usize = 10_000;
/// Events whose ingest rate is reported at each count.
const RATE_WINDOW: usize = 100_000;
/// The actions the events cycle through.
const ACTIONS: [EventAction; 4] =
    [EventAction::Created, EventAction::Started, EventAction::Stopped, EventAction::Failed];
/// The time of the first event (seconds since the epoch); each next one is a second later.
const FIRST_EVENT_SECS: i64 = 1_750_000_000;

/// Command line of `iaas-load events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Event counts to measure at, rising; the index grows from one to the next.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000,10000000")]
    pub counts: Vec<usize>,
    /// Searches of each kind timed at each count.
    #[arg(long, default_value_t = 1_000)]
    pub queries: usize,
    /// Directory the plots are written to (created if missing).
    #[arg(long, default_value = "target/scale")]
    pub out: PathBuf,
}

/// The figures at one count.
#[derive(Debug, Clone, Default)]
pub(crate) struct Row {
    events: usize,
    /// Events indexed per second over the last [`RATE_WINDOW`] before this count.
    ingest_per_s: f64,
    /// How many events that rate is over ([`RATE_WINDOW`], or fewer after a close count).
    window: usize,
    /// The index's files (database and write-ahead log) per event, bytes.
    bytes_per_event: f64,
    by_instance: (f64, f64),
    by_user: (f64, f64),
    text: (f64, f64),
    counts: (f64, f64),
}

/// The `i`-th event of the run.
fn event(users: &[UserId], instances: &[InstanceId], i: usize) -> InfrastructureEvent {
    let n = i % INSTANCES;
    let at = DateTime::from_timestamp(FIRST_EVENT_SECS + i as i64, 0).unwrap_or_else(Utc::now);
    InfrastructureEvent::new(
        instances[n],
        users[n % USERS],
        InstanceKind::Postgres,
        ACTIONS[i % ACTIONS.len()].clone(),
        at,
    )
    .with_metadata("container", format!("pg-{}", i % 1_000))
    .with_metadata("exit_code", (i % 3).to_string())
}

/// A small deterministic generator of the searches' targets.
struct Picks(u64);

impl Picks {
    fn next(&mut self, below: usize) -> usize {
        self.0 =
            self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % below as u64) as usize
    }
}

/// Runs `iaas-load events`.
pub async fn run(args: EventsArgs) -> Result<(), String> {
    if args.counts.is_empty()
        || args.counts[0] == 0
        || args.counts.windows(2).any(|pair| pair[0] >= pair[1])
    {
        return Err("--counts: a rising list of event counts, each above 0".to_owned());
    }
    if args.queries == 0 {
        return Err("--queries must be above 0".to_owned());
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("creating {}: {e}", args.out.display()))?;
    let dir = DataDir::new("events")?;
    let path = dir.path().join("events.db");
    let index = SqliteLogIndex::open(&SqliteIndexConfig::new(&path))
        .await
        .map_err(|e| format!("opening the index {}: {e}", path.display()))?;
    let indexer = MonitoringIndexer::new(Arc::new(index.clone()));
    let users: Vec<UserId> = (0..USERS).map(|_| UserId::new_random()).collect();
    let instances: Vec<InstanceId> = (0..INSTANCES).map(|_| InstanceId::new_random()).collect();
    let mut rows = Vec::new();
    let mut indexed = 0;
    let mut picks = Picks(42);
    for &count in &args.counts {
        let started = Instant::now();
        let window_from = count.saturating_sub(RATE_WINDOW).max(indexed);
        let mut window_started = started;
        let mut batch = Vec::with_capacity(MonitoringIndexer::MAX_BATCH);
        while indexed < count {
            if indexed == window_from {
                window_started = Instant::now();
            }
            // A batch does not straddle the start of the timed window.
            let stop = if indexed < window_from { window_from } else { count };
            let end = (indexed + MonitoringIndexer::MAX_BATCH).min(stop);
            batch.clear();
            batch.extend((indexed..end).map(|i| event(&users, &instances, i)));
            for result in indexer.handle_batch(&batch).await {
                result.map_err(|e| format!("indexing at {indexed} events: {e}"))?;
            }
            indexed = end;
        }
        let window = (count - window_from) as f64;
        let mut row = Row {
            events: count,
            ingest_per_s: window / window_started.elapsed().as_secs_f64().max(f64::EPSILON),
            window: count - window_from,
            bytes_per_event: files_bytes(&path) as f64 / count as f64,
            ..Row::default()
        };
        println!(
            "{count} events indexed in {:.1?} (the last {} at {:.0}/s)",
            started.elapsed(),
            count - window_from,
            row.ingest_per_s
        );
        row.by_instance = time(
            args.queries,
            || {
                let n = picks.next(INSTANCES.min(count));
                LogQuery::for_user(users[n % USERS]).instance(instances[n])
            },
            &index,
            true,
        )
        .await?;
        // Users with events: every one once there are as many events.
        let with_events = USERS.min(count);
        row.by_user =
            time(args.queries, || LogQuery::for_user(users[picks.next(with_events)]), &index, true)
                .await?;
        row.text = time(
            args.queries,
            || {
                LogQuery::for_user(users[picks.next(USERS)])
                    .text(format!("pg {}", picks.next(1_000)))
            },
            &index,
            false,
        )
        .await?;
        let last =
            DateTime::from_timestamp(FIRST_EVENT_SECS + count as i64, 0).unwrap_or_else(Utc::now);
        let mut counted = Vec::with_capacity(args.queries);
        for _ in 0..args.queries {
            let query = CountQuery::new(
                users[picks.next(USERS)],
                last - chrono::Duration::days(1),
                last,
                Duration::from_secs(3_600),
            );
            let started = Instant::now();
            index.counts(&query).await.map_err(|e| format!("counting at {count} events: {e}"))?;
            counted.push(started.elapsed());
        }
        row.counts = spread(counted);
        rows.push(row);
    }
    print_table(&rows);
    for path in draw(&rows, &args.out)? {
        println!("wrote {}", path.display());
    }
    drop((indexer, index));
    drop(dir);
    Ok(())
}

/// Times `queries` searches, each built by `query`: p50 and p99 in milliseconds.
async fn time(
    queries: usize,
    mut query: impl FnMut() -> LogQuery,
    index: &SqliteLogIndex,
    must_find: bool,
) -> Result<(f64, f64), String> {
    let mut latencies = Vec::with_capacity(queries);
    for _ in 0..queries {
        let query = query();
        let started = Instant::now();
        let page = index.search(&query).await.map_err(|e| format!("searching: {e}"))?;
        latencies.push(started.elapsed());
        if must_find && page.entries.is_empty() {
            return Err(format!("a search that must find entries found none: {query:?}"));
        }
    }
    Ok(spread(latencies))
}

/// p50 and p99 of `latencies`, milliseconds.
fn spread(mut latencies: Vec<Duration>) -> (f64, f64) {
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(percentile(&latencies, 0.5)), ms(percentile(&latencies, 0.99)))
}

/// The bytes of the index's database and write-ahead log.
fn files_bytes(path: &std::path::Path) -> u64 {
    let wal = path.with_extension("db-wal");
    [path.to_path_buf(), wal]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

fn print_table(rows: &[Row]) {
    println!(
        "\n| events | ingest (over the last events of the step) | bytes per event | by instance p50 / p99 | by user p50 / p99 | text p50 / p99 | day's counts p50 / p99 |"
    );
    println!("|---|---|---|---|---|---|---|");
    let pair = |(p50, p99): (f64, f64)| format!("{p50:.2} / {p99:.2} ms");
    for row in rows {
        println!(
            "| {} | {:.0}/s (last {}) | {:.0} | {} | {} | {} | {} |",
            row.events,
            row.ingest_per_s,
            row.window,
            row.bytes_per_event,
            pair(row.by_instance),
            pair(row.by_user),
            pair(row.text),
            pair(row.counts),
        );
    }
}

fn draw(rows: &[Row], dir: &std::path::Path) -> Result<Vec<PathBuf>, String> {
    let events = |row: &Row| row.events as f64;
    let ingest = dir.join("scale-events-ingest.svg");
    log_log(
        rows,
        events,
        Chart {
            path: &ingest,
            title: "Embedded event index: ingest through the consumer path, and size",
            x_desc: "events in the index",
            unit: "events per second / bytes",
        },
        &[
            ("events indexed /s (last 100,000 of each step)", BLUE, |row| row.ingest_per_s),
            ("bytes on disk per event", BLACK, |row| row.bytes_per_event),
        ],
    )?;
    let search = dir.join("scale-events-search.svg");
    log_log(
        rows,
        events,
        Chart {
            path: &search,
            title: "Embedded event index: search latency (page of 50)",
            x_desc: "events in the index",
            unit: "milliseconds",
        },
        &[
            ("by instance p50", BLUE, |row| row.by_instance.0),
            ("by instance p99", RGBColor(120, 160, 255), |row| row.by_instance.1),
            ("by user p99", GREEN, |row| row.by_user.1),
            ("text p50", RED, |row| row.text.0),
            ("text p99", RGBColor(255, 150, 150), |row| row.text.1),
            ("day's counts p99", BLACK, |row| row.counts.1),
        ],
    )?;
    Ok(vec![ingest, search])
}
