//! The embedded log index: one SQLite file (WAL mode) with an FTS5 full-text table.
//!
//! `log_entries` holds one row per event, `event_id UNIQUE`, written with `INSERT OR IGNORE`, so
//! a redelivered event changes nothing. Two indexes serve the two access paths of the API:
//! `(user_id, ts_us, event_id)` for a user's timeline and `(instance_id, ts_us, event_id)` for
//! one instance. The ids are stored as their 16 bytes (layout 2; see [`layout`], which also
//! upgrades files written with text ids). `log_text` is a contentless FTS5 table over the
//! message and the metadata text whose rowid is the entry's `seq`; it gets a row only when the
//! entry row was really inserted, in the same statement, so text hits never point at a
//! duplicate.
//!
//! Ingest cost: the text row is written by an `AFTER INSERT` trigger (which `INSERT OR IGNORE`
//! does not fire for a duplicate), so a batch is one multi-row `INSERT` per chunk of
//! `INSERT_CHUNK` entries, not two statements per entry: sqlx runs each statement on the
//! connection's worker thread, and the hand-off per statement cost more than SQLite's own work.
//! The trigger builds the metadata text (`key value key value`, as
//! [`LogEntry::metadata_text`] does) from the stored JSON with `json_each`. A batch of one
//! chunk is a single autocommit statement (atomic with its trigger); larger ones share one
//! transaction.
//!
//! Timestamps are stored as whole microseconds since the epoch (the finer part is dropped), the
//! same precision the cursor carries.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use chrono::DateTime;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::LogIndex;
use super::entry::{LogEntry, LogLevel};
use super::error::IndexError;
use super::query::{CountBucket, CountQuery, Counts, LogPage, LogQuery};

mod layout;

const BACKEND: &str = "sqlite";

/// Entries per `INSERT` statement: 9 bound values each, far below SQLite's 32,766 limit, and
/// large enough that the per-statement hand-off is paid rarely.
const INSERT_CHUNK: usize = 500;

/// Default page cache per connection, in KiB. Ingest at 1M entries (10,000 instances) writes
/// one leaf page of the instance index per entry, at a random place: the hot set is about one
/// leaf per instance (10,000 x 4 KiB = 40 MiB) plus the user index's and the FTS segments'.
/// The cache fills only as pages are used, so readers with narrow ranges stay small.
const DEFAULT_CACHE_KIB: u32 = 64 * 1024;

/// Default size of the memory map over the database file: reads of clean pages come straight
/// from the OS page cache instead of a `pread` copy into SQLite's cache. Shared by all
/// connections; 0 turns it off.
const DEFAULT_MMAP_BYTES: u64 = 256 * 1024 * 1024;

/// Default WAL size, in pages, that triggers a checkpoint. SQLite's 1,000 pages (4 MiB) is
/// about one batch of 500 entries at 1M entries, so every batch was copied back into the
/// database right away; with 8,192 pages a leaf written by several batches in a row is
/// copied back once.
const DEFAULT_WAL_AUTOCHECKPOINT_PAGES: u32 = 8_192;

/// The WAL file is cut back to this size after a checkpoint (SQLite otherwise keeps it at its
/// largest).
const JOURNAL_SIZE_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

const COLUMNS: &str =
    "event_id, instance_id, user_id, kind, action, level, message, metadata, ts_us";

/// Where and how to open the embedded index.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqliteIndexConfig {
    /// The database file; created when missing (its directory must exist).
    pub path: PathBuf,
    /// Connections that read concurrently (WAL); writes go through one more, dedicated
    /// connection.
    pub max_connections: u32,
    /// How long a writer waits for another before the call fails as unavailable.
    pub busy_timeout: Duration,
    /// SQLite page cache per connection, in KiB (default 64 MiB, filled on demand).
    pub cache_kib: u32,
    /// Memory map over the database file, in bytes (default 256 MiB; 0: off).
    pub mmap_bytes: u64,
    /// WAL size in pages that triggers a checkpoint (default 8,192, 32 MiB).
    pub wal_autocheckpoint_pages: u32,
}

impl SqliteIndexConfig {
    /// Defaults for the file at `path`: 4 connections, 5 s busy timeout, and the cache, memory
    /// map and checkpoint sizes documented on the fields.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_connections: 4,
            busy_timeout: Duration::from_secs(5),
            cache_kib: DEFAULT_CACHE_KIB,
            mmap_bytes: DEFAULT_MMAP_BYTES,
            wal_autocheckpoint_pages: DEFAULT_WAL_AUTOCHECKPOINT_PAGES,
        }
    }
}

/// The embedded [`LogIndex`]: a real on-disk full-text index in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteLogIndex {
    /// Readers (searches and counts).
    pool: SqlitePool,
    /// The one connection that writes, so its page cache stays warm.
    writer: SqlitePool,
}

impl SqliteLogIndex {
    /// Opens (creating if needed) the index file and its tables.
    pub async fn open(config: &SqliteIndexConfig) -> Result<Self, IndexError> {
        let operation = || format!("opening the log index {}", config.path.display());
        let options = SqliteConnectOptions::new()
            .filename(&config.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode never corrupts; an OS crash may lose the last commits, which
            // the consumer redelivers because their offsets were not stored yet.
            .synchronous(SqliteSynchronous::Normal)
            // A negative `cache_size` is in KiB.
            .pragma("cache_size", format!("-{}", config.cache_kib))
            .pragma("mmap_size", config.mmap_bytes.to_string())
            .pragma("wal_autocheckpoint", config.wal_autocheckpoint_pages.to_string())
            .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT_BYTES.to_string())
            .pragma("temp_store", "memory")
            .busy_timeout(config.busy_timeout);
        // One connection writes, for good: SQLite drops a connection's whole page cache when
        // another connection changed the file, so writes spread over a pool (sqlx hands out
        // its idle connections in turn) each started cold and re-read the hot index pages.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await
            .map_err(|e| unavailable(operation(), e))?;
        layout::prepare(&writer, &config.path).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .connect_with(options)
            .await
            .map_err(|e| unavailable(operation(), e))?;
        Ok(Self { pool, writer })
    }
}

fn unavailable(operation: String, source: sqlx::Error) -> IndexError {
    IndexError::Unavailable { backend: BACKEND, operation, source: Box::new(source) }
}

fn corrupt(operation: &str, reason: String) -> IndexError {
    IndexError::Internal { backend: BACKEND, operation: operation.to_owned(), reason }
}

/// An id as stored: its UUID's 16 bytes (`id.as_uuid().as_bytes()`).
fn id_bytes(uuid_bytes: &[u8; 16]) -> Vec<u8> {
    uuid_bytes.to_vec()
}

/// Reads back an id stored by [`id_bytes`]: the 16 bytes as 32 hex digits, which every id's
/// `FromStr` accepts (this crate does not depend on `uuid` directly).
fn id_from_bytes<T: std::str::FromStr>(bytes: &[u8]) -> Option<T> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if bytes.len() != 16 {
        return None;
    }
    let mut text = String::with_capacity(32);
    for byte in bytes {
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    text.parse().ok()
}

/// The FTS5 expression for `words`: each word a quoted string, all required. Quoting keeps FTS5
/// operators (`OR`, `NEAR`, `*`, `"`) typed by users from being interpreted.
fn fts_expression(words: &[String]) -> String {
    words.iter().map(|w| format!("\"{}\"", w.replace('"', "\"\""))).collect::<Vec<_>>().join(" ")
}

fn entry_from_row(row: &SqliteRow) -> Result<LogEntry, IndexError> {
    const OP: &str = "reading a log entry";
    fn text(row: &SqliteRow, column: &str) -> Result<String, IndexError> {
        row.try_get(column).map_err(|e| corrupt(OP, format!("column {column}: {e}")))
    }
    fn parsed<T: std::str::FromStr>(row: &SqliteRow, column: &str) -> Result<T, IndexError> {
        let value = text(row, column)?;
        value.parse().map_err(|_| corrupt(OP, format!("column {column} holds {value:?}")))
    }
    fn id<T: std::str::FromStr>(row: &SqliteRow, column: &str) -> Result<T, IndexError> {
        let bytes: &[u8] =
            row.try_get(column).map_err(|e| corrupt(OP, format!("column {column}: {e}")))?;
        id_from_bytes(bytes)
            .ok_or_else(|| corrupt(OP, format!("column {column} holds {} bytes", bytes.len())))
    }
    let level = text(row, "level")?;
    let metadata = text(row, "metadata")?;
    let micros: i64 =
        row.try_get("ts_us").map_err(|e| corrupt(OP, format!("column ts_us: {e}")))?;
    Ok(LogEntry {
        event_id: id(row, "event_id")?,
        instance_id: id(row, "instance_id")?,
        user_id: id(row, "user_id")?,
        kind: parsed(row, "kind")?,
        action: parsed(row, "action")?,
        level: LogLevel::parse(&level)
            .ok_or_else(|| corrupt(OP, format!("column level holds {level:?}")))?,
        message: text(row, "message")?,
        metadata: serde_json::from_str::<BTreeMap<String, String>>(&metadata)
            .map_err(|e| corrupt(OP, format!("column metadata: {e}")))?,
        timestamp: DateTime::from_timestamp_micros(micros)
            .ok_or_else(|| corrupt(OP, format!("column ts_us holds {micros}")))?,
    })
}

#[async_trait]
impl LogIndex for SqliteLogIndex {
    async fn index(&self, entries: &[LogEntry]) -> Result<(), IndexError> {
        if entries.is_empty() {
            return Ok(());
        }
        let operation = || format!("indexing {} log entries", entries.len());
        let mut rows = Vec::with_capacity(entries.len());
        for entry in entries {
            let metadata = serde_json::to_string(&entry.metadata).map_err(|e| {
                corrupt("encoding metadata", format!("event {}: {e}", entry.event_id))
            })?;
            rows.push((entry, metadata));
        }
        let insert = |chunk: &[(&LogEntry, String)]| {
            let mut sql = QueryBuilder::<Sqlite>::new(format!(
                "INSERT OR IGNORE INTO log_entries ({COLUMNS}) "
            ));
            sql.push_values(chunk, |mut row, (entry, metadata)| {
                row.push_bind(id_bytes(entry.event_id.as_uuid().as_bytes()))
                    .push_bind(id_bytes(entry.instance_id.as_uuid().as_bytes()))
                    .push_bind(id_bytes(entry.user_id.as_uuid().as_bytes()))
                    .push_bind(entry.kind.as_str())
                    .push_bind(entry.action.as_str())
                    .push_bind(entry.level.as_str())
                    .push_bind(entry.message.clone())
                    .push_bind(metadata.clone())
                    .push_bind(entry.timestamp.timestamp_micros());
            });
            sql
        };
        if rows.len() <= INSERT_CHUNK {
            // One statement is atomic with its trigger: no explicit transaction needed.
            insert(&rows)
                .build()
                .execute(&self.writer)
                .await
                .map_err(|e| unavailable(operation(), e))?;
            return Ok(());
        }
        // IMMEDIATE takes the write lock up front: a deferred transaction that upgrades later can
        // fail with SQLITE_BUSY without waiting out the busy timeout.
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| unavailable(operation(), e))?;
        for chunk in rows.chunks(INSERT_CHUNK) {
            insert(chunk)
                .build()
                .execute(&mut *tx)
                .await
                .map_err(|e| unavailable(operation(), e))?;
        }
        tx.commit().await.map_err(|e| unavailable(operation(), e))
    }

    async fn search(&self, query: &LogQuery) -> Result<LogPage, IndexError> {
        query.validate()?;
        let mut sql = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {COLUMNS} FROM log_entries WHERE user_id = "
        ));
        sql.push_bind(id_bytes(query.user.as_uuid().as_bytes()));
        if let Some(instance) = query.instance {
            sql.push(" AND instance_id = ").push_bind(id_bytes(instance.as_uuid().as_bytes()));
        }
        if let Some(kind) = query.kind {
            sql.push(" AND kind = ").push_bind(kind.as_str());
        }
        if let Some(action) = &query.action {
            sql.push(" AND action = ").push_bind(action.as_str().to_owned());
        }
        if let Some(from) = query.from {
            sql.push(" AND ts_us >= ").push_bind(from.timestamp_micros());
        }
        if let Some(to) = query.to {
            sql.push(" AND ts_us < ").push_bind(to.timestamp_micros());
        }
        let words = query.words();
        if !words.is_empty() {
            sql.push(" AND seq IN (SELECT rowid FROM log_text WHERE log_text MATCH ")
                .push_bind(fts_expression(&words))
                .push(")");
        }
        if let Some(cursor) = query.cursor {
            // SQLite range-scans the (user|instance, ts_us, event_id) index on this row value
            // (checked with EXPLAIN QUERY PLAN), so a deep page does not rescan earlier ones.
            sql.push(" AND (ts_us, event_id) < (")
                .push_bind(cursor.timestamp_micros())
                .push(", ")
                .push_bind(id_bytes(cursor.event_id.as_uuid().as_bytes()))
                .push(")");
        }
        // One row more than the page says whether there is a next page.
        sql.push(" ORDER BY ts_us DESC, event_id DESC LIMIT ")
            .push_bind(i64::from(query.limit) + 1);
        let rows =
            sql.build().fetch_all(&self.pool).await.map_err(|e| {
                unavailable(format!("searching the log entries of {}", query.user), e)
            })?;
        let entries = rows.iter().map(entry_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(LogPage::from_fetched(entries, query.limit))
    }

    async fn counts(&self, query: &CountQuery) -> Result<Counts, IndexError> {
        let seconds = query.validate()?;
        let width = i64::try_from(seconds).unwrap_or(i64::MAX).saturating_mul(1_000_000);
        let rows = sqlx::query(
            "SELECT ts_us - (((ts_us % ?1) + ?1) % ?1) AS bucket, kind, action, COUNT(*) AS n
             FROM log_entries
             WHERE user_id = ?2 AND ts_us >= ?3 AND ts_us < ?4
             GROUP BY bucket, kind, action
             ORDER BY bucket",
        )
        .bind(width)
        .bind(id_bytes(query.user.as_uuid().as_bytes()))
        .bind(query.from.timestamp_micros())
        .bind(query.to.timestamp_micros())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| unavailable(format!("counting the log entries of {}", query.user), e))?;

        const OP: &str = "reading log counts";
        let mut counts = Counts::default();
        for row in rows {
            let bucket: i64 = row.try_get("bucket").map_err(|e| corrupt(OP, e.to_string()))?;
            let kind: String = row.try_get("kind").map_err(|e| corrupt(OP, e.to_string()))?;
            let action: String = row.try_get("action").map_err(|e| corrupt(OP, e.to_string()))?;
            let n: i64 = row.try_get("n").map_err(|e| corrupt(OP, e.to_string()))?;
            let n = u64::try_from(n).map_err(|e| corrupt(OP, e.to_string()))?;
            let start = DateTime::from_timestamp_micros(bucket)
                .ok_or_else(|| corrupt(OP, format!("bucket {bucket} out of range")))?;
            if counts.buckets.last().is_none_or(|last| last.start != start) {
                counts.buckets.push(CountBucket {
                    start,
                    total: 0,
                    by_action: BTreeMap::new(),
                    by_type: BTreeMap::new(),
                });
            }
            if let Some(current) = counts.buckets.last_mut() {
                current.total += n;
                *current.by_action.entry(action).or_default() += n;
                *current.by_type.entry(kind).or_default() += n;
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_bundled_sqlite_has_fts5_compiled_in() {
        let pool = SqlitePool::connect("sqlite::memory:").await;
        let Ok(pool) = pool else { panic!("in-memory SQLite: {pool:?}") };
        let created =
            sqlx::query("CREATE VIRTUAL TABLE probe USING fts5 (body)").execute(&pool).await;
        assert!(created.is_ok(), "FTS5 missing from the bundled SQLite: {created:?}");
        let inserted = sqlx::query("INSERT INTO probe (body) VALUES ('postgres started')")
            .execute(&pool)
            .await;
        assert!(inserted.is_ok(), "{inserted:?}");
        let hits: Result<i64, _> =
            sqlx::query_scalar("SELECT count(*) FROM probe WHERE probe MATCH 'started'")
                .fetch_one(&pool)
                .await;
        assert_eq!(hits.ok(), Some(1));
    }

    /// A batch larger than one `INSERT` chunk, replayed with new entries mixed in, leaves one
    /// row and one text row per event: the trigger does not fire for ignored duplicates.
    #[tokio::test]
    async fn a_multi_chunk_batch_replayed_is_indexed_once_with_its_text() {
        use iaas_core::{EventAction, InfrastructureEvent, InstanceId, InstanceKind, UserId};
        let dir =
            std::env::temp_dir().join(iaas_testkit::isolation::unique_name("iaas-sqlite-chunks"));
        std::fs::create_dir_all(&dir).unwrap();
        let index =
            SqliteLogIndex::open(&SqliteIndexConfig::new(dir.join("logs.db"))).await.unwrap();
        let user = UserId::new_random();
        let entries: Vec<LogEntry> = (0..INSERT_CHUNK * 2 + 7)
            .map(|i| {
                let event = InfrastructureEvent::new(
                    InstanceId::new_random(),
                    user,
                    InstanceKind::Postgres,
                    EventAction::Started,
                    chrono::Utc::now(),
                )
                .with_metadata("container", format!("pg-{i}"));
                LogEntry::from_event(&event)
            })
            .collect();
        let (first, _) = entries.split_at(INSERT_CHUNK + 3);
        index.index(first).await.unwrap();
        index.index(&entries).await.unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM log_entries")
            .fetch_one(&index.pool)
            .await
            .unwrap();
        let text_rows: i64 =
            sqlx::query_scalar("SELECT count(*) FROM log_text WHERE log_text MATCH 'container'")
                .fetch_one(&index.pool)
                .await
                .unwrap();
        assert_eq!(rows, i64::try_from(entries.len()).unwrap());
        assert_eq!(text_rows, rows);
        let hits = index.search(&LogQuery::for_user(user).text("pg-1000")).await.unwrap();
        assert_eq!(hits.entries.len(), 1);
        assert_eq!(hits.entries[0].metadata.get("container").map(String::as_str), Some("pg-1000"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn temp_dir(test: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name(test));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A file as releases before layout 2 wrote it: their schema, ids as text, the text row
    /// written by their trigger.
    async fn write_layout_1_file(path: &std::path::Path, entries: &[LogEntry]) {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
        sqlx::raw_sql(layout::LAYOUT_1_SCHEMA).execute(&pool).await.unwrap();
        for entry in entries {
            sqlx::query(
                "INSERT INTO log_entries (event_id, instance_id, user_id, kind, action, level,
                 message, metadata, ts_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(entry.event_id.to_string())
            .bind(entry.instance_id.to_string())
            .bind(entry.user_id.to_string())
            .bind(entry.kind.as_str())
            .bind(entry.action.as_str())
            .bind(entry.level.as_str())
            .bind(entry.message.clone())
            .bind(serde_json::to_string(&entry.metadata).unwrap())
            .bind(entry.timestamp.timestamp_micros())
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
    }

    /// An index written by an earlier release (ids as text) opens, is upgraded in place, and
    /// answers every kind of query with the same entries; a redelivered old event is still a
    /// duplicate, and new entries mix in.
    #[tokio::test]
    async fn a_layout_1_file_is_upgraded_in_place_and_answers_every_query() {
        use iaas_core::{EventAction, InfrastructureEvent, InstanceId, InstanceKind, UserId};
        let dir = temp_dir("iaas-sqlite-layout1");
        let path = dir.join("logs.db");
        let (alice, bob) = (UserId::new_random(), UserId::new_random());
        let (db, web) = (InstanceId::new_random(), InstanceId::new_random());
        let at = |s: i64| DateTime::from_timestamp(1_750_000_000 + s, 0).unwrap();
        let old: Vec<LogEntry> = (0..9_i64)
            .map(|i| {
                let (owner, instance) = if i % 3 == 2 { (bob, web) } else { (alice, db) };
                let event = InfrastructureEvent::new(
                    instance,
                    owner,
                    InstanceKind::Postgres,
                    EventAction::Started,
                    at(i / 2),
                )
                .with_metadata("container", format!("pg-{i}"));
                LogEntry::from_event(&event)
            })
            .collect();
        write_layout_1_file(&path, &old).await;

        let index = SqliteLogIndex::open(&SqliteIndexConfig::new(&path)).await.unwrap();
        let version: i64 =
            sqlx::query_scalar("PRAGMA user_version").fetch_one(&index.pool).await.unwrap();
        assert_eq!(version, layout::LAYOUT);
        let mine = |owner: UserId| {
            let mut want: Vec<LogEntry> =
                old.iter().filter(|e| e.user_id == owner).cloned().collect();
            want.sort_by_key(|e| std::cmp::Reverse((e.timestamp, e.event_id.to_string())));
            want
        };
        // By user, paged by cursor (ties on the timestamp broken by event id as before).
        let mut got = Vec::new();
        let mut cursor = None;
        loop {
            let page = index.search(&LogQuery::for_user(alice).limit(2).after(cursor)).await;
            let page = page.unwrap();
            got.extend(page.entries);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(got, mine(alice));
        let by_instance = index.search(&LogQuery::for_user(bob).instance(web)).await.unwrap();
        assert_eq!(by_instance.entries, mine(bob));
        let other_owner = index.search(&LogQuery::for_user(bob).instance(db)).await.unwrap();
        assert!(other_owner.entries.is_empty(), "the owner filter must hold after the upgrade");
        let text = index.search(&LogQuery::for_user(alice).text("pg-3")).await.unwrap();
        assert_eq!(text.entries.iter().map(|e| e.event_id).collect::<Vec<_>>(), [old[3].event_id]);
        let range = LogQuery::for_user(alice).between(at(1), at(2));
        let want: Vec<_> = mine(alice).into_iter().filter(|e| e.timestamp == at(1)).collect();
        assert_eq!(index.search(&range).await.unwrap().entries, want);

        // Redelivery of an old event adds nothing; a new event is found beside the old ones.
        index.index(&old[..1]).await.unwrap();
        let new = LogEntry::from_event(&InfrastructureEvent::new(
            db,
            alice,
            InstanceKind::Postgres,
            EventAction::Stopped,
            at(100),
        ));
        index.index(std::slice::from_ref(&new)).await.unwrap();
        let all = index.search(&LogQuery::for_user(alice).instance(db).limit(500)).await.unwrap();
        assert_eq!(all.entries.len(), mine(alice).len() + 1);
        assert_eq!(all.entries[0], new);
        drop(index);
        // A second open finds the current layout and changes nothing.
        let reopened = SqliteLogIndex::open(&SqliteIndexConfig::new(&path)).await.unwrap();
        let again = reopened.search(&LogQuery::for_user(alice).limit(500)).await.unwrap();
        assert_eq!(again.entries.len(), mine(alice).len() + 1);
        drop(reopened);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_file_of_a_newer_layout_is_refused_with_what_to_do() {
        let dir = temp_dir("iaas-sqlite-newer");
        let path = dir.join("logs.db");
        let options = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
        sqlx::raw_sql("PRAGMA user_version = 99").execute(&pool).await.unwrap();
        pool.close().await;
        let err = SqliteLogIndex::open(&SqliteIndexConfig::new(&path)).await.unwrap_err();
        assert!(matches!(err, IndexError::InvalidConfig { key: "path", .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("layout 99") && message.contains("new file"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fts_expression_quotes_every_word() {
        let words = vec!["oom".to_owned(), "a\"b".to_owned()];
        assert_eq!(fts_expression(&words), "\"oom\" \"a\"\"b\"");
    }
}
