//! What pgBackRest says about a managed PostgreSQL cluster's backups.
//!
//! A highly available cluster archives its WAL and keeps its base backups in a pgBackRest
//! repository (one stanza per cluster). `pgbackrest info --output=json` describes the stanza:
//! each backup set (its label, type, when it ran, its size on the server and in the
//! repository, the WAL it needs) and the range of WAL archived. The platform runs that command
//! inside the cluster and reads its answer here; nothing here performs I/O.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The kind of a base backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    /// Every file of the cluster.
    Full,
    /// What changed since the last full backup.
    Diff,
    /// What changed since the last backup of any kind.
    Incr,
}

impl BackupKind {
    /// pgBackRest's name of the kind (`--type`).
    pub const fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Diff => "diff",
            BackupKind::Incr => "incr",
        }
    }
}

/// One backup set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSet {
    /// pgBackRest's label (`20261207-003130F`), unique in the repository.
    pub label: String,
    /// Its kind.
    pub kind: BackupKind,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended: a restore may target any time from here on.
    pub stopped_at: DateTime<Utc>,
    /// Size of the cluster it copied, bytes.
    pub database_bytes: u64,
    /// Size it takes in the repository (compressed), bytes.
    pub repository_bytes: u64,
    /// The WAL position the backup starts at.
    pub lsn_start: String,
    /// The WAL position it is consistent at.
    pub lsn_stop: String,
    /// Whether pgBackRest found a page checksum error while copying.
    pub checksum_errors: bool,
}

/// A cluster's backups and archived WAL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupCatalog {
    /// Every backup set, oldest first.
    pub backups: Vec<BackupSet>,
    /// The oldest WAL segment archived, if any.
    pub wal_min: Option<String>,
    /// The newest WAL segment archived, if any.
    pub wal_max: Option<String>,
}

impl BackupCatalog {
    /// The newest backup set.
    pub fn newest(&self) -> Option<&BackupSet> {
        self.backups.last()
    }
}

/// A document that is not `pgbackrest info --output=json`'s answer for one stanza.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a pgBackRest info document: {reason}")]
pub struct ParseError {
    reason: String,
}

#[derive(Deserialize)]
struct RawStanza {
    #[serde(default)]
    backup: Vec<RawBackup>,
    #[serde(default)]
    archive: Vec<RawArchive>,
}

#[derive(Deserialize)]
struct RawArchive {
    min: Option<String>,
    max: Option<String>,
}

#[derive(Deserialize)]
struct RawBackup {
    label: String,
    #[serde(rename = "type")]
    kind: BackupKind,
    timestamp: RawTimes,
    info: RawInfo,
    lsn: RawLsn,
    #[serde(default)]
    error: bool,
}

#[derive(Deserialize)]
struct RawTimes {
    start: i64,
    stop: i64,
}

#[derive(Deserialize)]
struct RawInfo {
    size: u64,
    repository: RawRepository,
}

#[derive(Deserialize)]
struct RawRepository {
    size: u64,
}

#[derive(Deserialize)]
struct RawLsn {
    start: String,
    stop: String,
}

impl BackupCatalog {
    /// Reads the answer of `pgbackrest --stanza=<one> info --output=json` (a list of one
    /// stanza).
    pub fn parse(document: &[u8]) -> Result<Self, ParseError> {
        let fail = |reason: String| ParseError { reason };
        let stanzas: Vec<RawStanza> =
            serde_json::from_slice(document).map_err(|err| fail(err.to_string()))?;
        let [stanza] = <[RawStanza; 1]>::try_from(stanzas)
            .map_err(|s| fail(format!("expected one stanza, found {}", s.len())))?;
        let time = |secs: i64| {
            DateTime::from_timestamp(secs, 0)
                .ok_or_else(|| fail(format!("time {secs} out of range")))
        };
        let mut backups = Vec::with_capacity(stanza.backup.len());
        for raw in stanza.backup {
            backups.push(BackupSet {
                started_at: time(raw.timestamp.start)?,
                stopped_at: time(raw.timestamp.stop)?,
                label: raw.label,
                kind: raw.kind,
                database_bytes: raw.info.size,
                repository_bytes: raw.info.repository.size,
                lsn_start: raw.lsn.start,
                lsn_stop: raw.lsn.stop,
                checksum_errors: raw.error,
            });
        }
        backups.sort_by(|a, b| (a.stopped_at, &a.label).cmp(&(b.stopped_at, &b.label)));
        let wal_min = stanza.archive.iter().filter_map(|a| a.min.clone()).min();
        let wal_max = stanza.archive.iter().filter_map(|a| a.max.clone()).max();
        Ok(Self { backups, wal_min, wal_max })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pgBackRest 2.45's answer for a stanza with one full backup, as read from a cluster.
    const ONE_FULL: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000005","min":"000000010000000000000001"}],"backup":[{"archive":{"start":"000000010000000000000005","stop":"000000010000000000000005"},"backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},"error":false,"info":{"delta":30517558,"repository":{"delta":4080171,"size":4080171},"size":30517558},"label":"20261207-003130F","lsn":{"start":"0/5000028","stop":"0/5000100"},"prior":null,"reference":null,"timestamp":{"start":1796603490,"stop":1796603496},"type":"full"}],"cipher":"none","db":[{"id":1,"repo-key":1,"system-id":7716353142369058862,"version":"15"}],"name":"hademo","repo":[{"cipher":"none","key":1,"status":{"code":0,"message":"ok"}}],"status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]"#;

    /// The same stanza before its first backup.
    const NONE_YET: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000003","min":"000000010000000000000001"}],"backup":[],"cipher":"none","name":"hademo","status":{"code":2,"message":"no valid backups"}}]"#;

    #[test]
    fn reads_each_backup_set_and_the_archived_wal() {
        let catalog = BackupCatalog::parse(ONE_FULL.as_bytes()).expect("a catalog");
        let backup = catalog.newest().expect("one backup");
        assert_eq!(backup.label, "20261207-003130F");
        assert_eq!(backup.kind, BackupKind::Full);
        assert_eq!(backup.database_bytes, 30_517_558);
        assert_eq!(backup.repository_bytes, 4_080_171);
        assert_eq!(
            (backup.lsn_start.as_str(), backup.lsn_stop.as_str()),
            ("0/5000028", "0/5000100")
        );
        assert_eq!(backup.stopped_at.timestamp() - backup.started_at.timestamp(), 6);
        assert!(!backup.checksum_errors);
        assert_eq!(catalog.wal_min.as_deref(), Some("000000010000000000000001"));
        assert_eq!(catalog.wal_max.as_deref(), Some("000000010000000000000005"));
    }

    #[test]
    fn a_stanza_without_backups_is_an_empty_catalog_with_its_wal() {
        let catalog = BackupCatalog::parse(NONE_YET.as_bytes()).expect("a catalog");
        assert!(catalog.backups.is_empty());
        assert_eq!(catalog.wal_max.as_deref(), Some("000000010000000000000003"));
    }

    #[test]
    fn anything_else_is_an_error() {
        assert!(BackupCatalog::parse(b"ERROR: [055]: unable to load info file").is_err());
        assert!(BackupCatalog::parse(b"[]").is_err(), "no stanza");
        assert!(BackupCatalog::parse(b"[{},{}]").is_err(), "two stanzas");
        assert!(
            BackupCatalog::parse(br#"[{"backup":[{"label":"x","type":"weekly"}]}]"#).is_err(),
            "an unknown kind"
        );
    }

    #[test]
    fn kinds_have_pgbackrests_names() {
        for kind in [BackupKind::Full, BackupKind::Diff, BackupKind::Incr] {
            let json = serde_json::to_string(&kind).expect("serializes");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }
}
