//! The on-disk layout of the embedded index, its version, and the upgrade of older files.
//!
//! The version lives in SQLite's `user_version` header field. Layout 1 (files written before
//! this version existed: `user_version` 0 with a `log_entries` table) stored the three ids as
//! 36-character text; layout 2 stores them as their 16 bytes (`BLOB`), which makes every entry
//! of the two timeline indexes (owner id, timestamp, event id, rowid) about 50 bytes instead of
//! about 90, so the file takes a third fewer pages and an ingested batch compares, copies and
//! writes less (`docs/benchmarks.md` has the measurement). A BLOB
//! compares byte by byte, which is the order of the lowercase hyphenated text, so results, ties
//! and cursors sort exactly as before.
//!
//! Opening a layout-1 file upgrades it in place, in one transaction: the rows are copied with
//! their ids converted and their `seq` kept, so the FTS5 table (whose rowid is `seq`) stays
//! valid and is not rebuilt. A file with a layout newer than this build knows is refused with
//! [`IndexError::InvalidConfig`] rather than guessed at.

use std::path::Path;

use sqlx::SqlitePool;

use super::super::error::IndexError;
use super::unavailable;

/// The layout this build writes and reads.
pub(super) const LAYOUT: i64 = 2;

/// Records [`LAYOUT`] (a literal: sqlx takes only audited SQL text; the upgrade test checks
/// the two agree).
const SET_LAYOUT: &str = "PRAGMA user_version = 2";

/// Layout 2, created on an empty file (every statement also a no-op on a layout-2 file).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log_entries (
    seq         INTEGER PRIMARY KEY,
    event_id    BLOB    NOT NULL UNIQUE,
    instance_id BLOB    NOT NULL,
    user_id     BLOB    NOT NULL,
    kind        TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    level       TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    metadata    TEXT    NOT NULL,
    ts_us       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS log_entries_user_ts ON log_entries (user_id, ts_us, event_id);
CREATE INDEX IF NOT EXISTS log_entries_instance_ts ON log_entries (instance_id, ts_us, event_id);
CREATE VIRTUAL TABLE IF NOT EXISTS log_text USING fts5 (
    message, metadata, content = '', tokenize = 'unicode61'
);
CREATE TRIGGER IF NOT EXISTS log_entries_text AFTER INSERT ON log_entries BEGIN
    INSERT INTO log_text (rowid, message, metadata) VALUES (
        new.seq,
        new.message,
        coalesce((SELECT group_concat(key || ' ' || value, ' ') FROM json_each(new.metadata)), '')
    );
END;
";

/// Layout 1 -> 2: the same rows with their ids as 16 bytes (`unhex` of the text without
/// hyphens; a malformed id becomes NULL and fails the `NOT NULL`, rolling everything back),
/// the same `seq`, then the indexes and the trigger of layout 2. `log_text` is untouched.
const UPGRADE_FROM_1: &str = "
DROP TRIGGER IF EXISTS log_entries_text;
DROP INDEX IF EXISTS log_entries_user_ts;
DROP INDEX IF EXISTS log_entries_instance_ts;
ALTER TABLE log_entries RENAME TO log_entries_layout1;
CREATE TABLE log_entries (
    seq         INTEGER PRIMARY KEY,
    event_id    BLOB    NOT NULL UNIQUE,
    instance_id BLOB    NOT NULL,
    user_id     BLOB    NOT NULL,
    kind        TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    level       TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    metadata    TEXT    NOT NULL,
    ts_us       INTEGER NOT NULL
);
INSERT INTO log_entries
    (seq, event_id, instance_id, user_id, kind, action, level, message, metadata, ts_us)
SELECT seq,
       unhex(replace(event_id, '-', '')),
       unhex(replace(instance_id, '-', '')),
       unhex(replace(user_id, '-', '')),
       kind, action, level, message, metadata, ts_us
FROM log_entries_layout1
ORDER BY seq;
DROP TABLE log_entries_layout1;
";

/// What an opened file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    /// No index yet: the layout is created.
    Empty,
    /// The current layout: nothing to do.
    Current,
    /// Layout 1 (text ids): upgraded in place.
    Layout1,
}

/// Creates, checks or upgrades the layout of the file behind `writer`, in one `IMMEDIATE`
/// transaction, so two processes opening the same old file never both upgrade it.
pub(super) async fn prepare(writer: &SqlitePool, path: &Path) -> Result<Found, IndexError> {
    let operation = |what: &str| format!("{what} the log index {}", path.display());
    let mut tx = writer
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| unavailable(operation("locking"), e))?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| unavailable(operation("reading the layout version of"), e))?;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'log_entries'",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| unavailable(operation("inspecting"), e))?;
    let found = match (version, tables) {
        (0, 0) => Found::Empty,
        (0, _) => Found::Layout1,
        (LAYOUT, _) => Found::Current,
        (newer, _) => {
            return Err(IndexError::InvalidConfig {
                key: "path",
                reason: format!(
                    "{} holds log index layout {newer}, which this build (layout {LAYOUT}) \
                     cannot read: open it with the release that wrote it, or point the index \
                     at a new file",
                    path.display()
                ),
            });
        }
    };
    if found == Found::Layout1 {
        tracing::info!(path = %path.display(), "upgrading the log index from layout 1 to {LAYOUT}");
        sqlx::raw_sql(UPGRADE_FROM_1)
            .execute(&mut *tx)
            .await
            .map_err(|e| unavailable(operation("upgrading (layout 1 -> 2)"), e))?;
    }
    sqlx::raw_sql(SCHEMA)
        .execute(&mut *tx)
        .await
        .map_err(|e| unavailable(operation("creating the tables of"), e))?;
    // `user_version` is part of the transaction: it is set exactly when the layout is.
    sqlx::raw_sql(SET_LAYOUT)
        .execute(&mut *tx)
        .await
        .map_err(|e| unavailable(operation("recording the layout of"), e))?;
    tx.commit().await.map_err(|e| unavailable(operation("committing the layout of"), e))?;
    Ok(found)
}

/// Layout 1 exactly as earlier releases created it, to write old files in tests.
#[cfg(test)]
pub(super) const LAYOUT_1_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log_entries (
    seq         INTEGER PRIMARY KEY,
    event_id    TEXT    NOT NULL UNIQUE,
    instance_id TEXT    NOT NULL,
    user_id     TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    level       TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    metadata    TEXT    NOT NULL,
    ts_us       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS log_entries_user_ts ON log_entries (user_id, ts_us, event_id);
CREATE INDEX IF NOT EXISTS log_entries_instance_ts ON log_entries (instance_id, ts_us, event_id);
CREATE VIRTUAL TABLE IF NOT EXISTS log_text USING fts5 (
    message, metadata, content = '', tokenize = 'unicode61'
);
CREATE TRIGGER IF NOT EXISTS log_entries_text AFTER INSERT ON log_entries BEGIN
    INSERT INTO log_text (rowid, message, metadata) VALUES (
        new.seq,
        new.message,
        coalesce((SELECT group_concat(key || ' ' || value, ' ') FROM json_each(new.metadata)), '')
    );
END;
";
