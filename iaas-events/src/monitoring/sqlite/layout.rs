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
//! Layout 3 adds the owner to the FTS5 table (`owner`, one token `u<hex of the user id>` per
//! row), so a text search names its user in the `MATCH` and FTS5 merges that user's doclist
//! with the words' instead of every user's: at 10 million events a search cost 38 ms (p50)
//! when it matched the words over all users and kept the user's rows after
//! (`docs/benchmarks.md`, "Cost as the events grow").
//!
//! Opening a file of an older layout upgrades it in place, in one transaction. From layout 1
//! the rows are copied with their ids converted and their `seq` kept. From layout 1 or 2 the
//! FTS5 table (contentless: it cannot gain a column) is dropped, created with the owner
//! column and filled again from `log_entries`, its rowid still the entry's `seq`: a one-time
//! cost at the first start of this release, which grows with the index. A file with a layout
//! newer than this build knows is refused with [`IndexError::InvalidConfig`] rather than
//! guessed at.

use std::path::Path;

use sqlx::SqlitePool;

use super::super::error::IndexError;
use super::unavailable;

/// The layout this build writes and reads.
pub(super) const LAYOUT: i64 = 3;

/// Records [`LAYOUT`] (a literal: sqlx takes only audited SQL text; the upgrade test checks
/// the two agree).
const SET_LAYOUT: &str = "PRAGMA user_version = 3";

/// The token of a user in the `owner` column of `log_text`: `u` and the id's 32 hex digits
/// (SQLite's `hex` writes them in upper case; the tokenizer folds case on both sides).
pub(super) fn owner_token(user: iaas_core::UserId) -> String {
    format!("u{}", user.as_uuid().simple())
}

/// Layout 3, created on an empty file (every statement also a no-op on a layout-3 file).
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
    owner, message, metadata, content = '', tokenize = 'unicode61'
);
CREATE TRIGGER IF NOT EXISTS log_entries_text AFTER INSERT ON log_entries BEGIN
    INSERT INTO log_text (rowid, owner, message, metadata) VALUES (
        new.seq,
        'u' || hex(new.user_id),
        new.message,
        coalesce((SELECT group_concat(key || ' ' || value, ' ') FROM json_each(new.metadata)), '')
    );
END;
";

/// Layout 1 or 2 -> 3, before [`SCHEMA`]: the text table of the older layout (no owner
/// column) and the trigger that fills it go; [`SCHEMA`] creates both anew.
const DROP_OLD_TEXT: &str = "
DROP TRIGGER IF EXISTS log_entries_text;
DROP TABLE IF EXISTS log_text;
";

/// Layout 1 or 2 -> 3, after [`SCHEMA`]: the text table filled again from the entries, as the
/// trigger fills it.
const REFILL_TEXT: &str = "
INSERT INTO log_text (rowid, owner, message, metadata)
SELECT seq,
       'u' || hex(user_id),
       message,
       coalesce((SELECT group_concat(key || ' ' || value, ' ') FROM json_each(metadata)), '')
FROM log_entries
ORDER BY seq;
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
    /// Layout 2 (no owner in the text table): its text table rebuilt.
    Layout2,
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
        (2, _) => Found::Layout2,
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
    let rebuild_text = matches!(found, Found::Layout1 | Found::Layout2);
    if rebuild_text {
        tracing::info!(
            path = %path.display(),
            "rebuilding the text table of the log index for layout {LAYOUT} (once; about a minute per million entries)"
        );
        sqlx::raw_sql(DROP_OLD_TEXT)
            .execute(&mut *tx)
            .await
            .map_err(|e| unavailable(operation("dropping the old text table of"), e))?;
    }
    sqlx::raw_sql(SCHEMA)
        .execute(&mut *tx)
        .await
        .map_err(|e| unavailable(operation("creating the tables of"), e))?;
    if rebuild_text {
        sqlx::raw_sql(REFILL_TEXT)
            .execute(&mut *tx)
            .await
            .map_err(|e| unavailable(operation("filling the text table of"), e))?;
    }
    // `user_version` is part of the transaction: it is set exactly when the layout is.
    sqlx::raw_sql(SET_LAYOUT)
        .execute(&mut *tx)
        .await
        .map_err(|e| unavailable(operation("recording the layout of"), e))?;
    tx.commit().await.map_err(|e| unavailable(operation("committing the layout of"), e))?;
    Ok(found)
}

/// Layout 2 exactly as earlier releases created it, to write old files in tests.
#[cfg(test)]
pub(super) const LAYOUT_2_SCHEMA: &str = "
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
PRAGMA user_version = 2;
";

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
