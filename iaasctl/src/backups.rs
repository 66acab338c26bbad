//! A highly available PostgreSQL cluster's base backups (`instances backup`, `instances
//! backups`, over `/v1/instances/{id}/backups`) and the point-in-time restore they make
//! possible (`instances create postgres --restore-from`).
//!
//! A restore is checked here before anything is created. The platform accepts any target
//! time, and one the source's backups cannot reach shows only later, as a copy that never
//! starts and ends `failed` when provisioning gives up. The source's backup list says which
//! moments can be reached: any time after its first backup ended, up to now.

use std::time::Duration;

use chrono::{DateTime, Utc};
use iaas_core::pgbackrest::{BackupCatalog, BackupKind, BackupSet};
use iaas_core::{Instance, InstanceId, InstanceSpec, InstanceStatus, PostgresSpec};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::cli::{BackupArgs, BackupType, BackupsArgs};
use crate::client::{Client, decode};
use crate::console::Console;
use crate::error::{CliError, Result};
use crate::instances::{carry_out, resolve};
use crate::table::Table;

/// How times are printed: RFC 3339 to the second, in UTC, as `events search` prints them.
const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";

/// `POST /v1/instances/{id}/backups` answer.
#[derive(Debug, Deserialize)]
struct Taken {
    backup: BackupSet,
}

impl From<BackupType> for BackupKind {
    fn from(kind: BackupType) -> Self {
        match kind {
            BackupType::Full => BackupKind::Full,
            BackupType::Diff => BackupKind::Diff,
            BackupType::Incr => BackupKind::Incr,
        }
    }
}

/// `instances backup`: the platform takes the backup before it answers.
pub(crate) async fn backup(
    client: &Client,
    console: &mut Console<'_>,
    args: BackupArgs,
) -> Result<()> {
    let instance = resolve(client, &args.target.target).await?;
    let path = format!("/v1/instances/{}/backups", instance.id);
    let body = json!({"type": BackupKind::from(args.kind).as_str()});
    let name = instance.name.to_string();
    let value = carry_out(client, &path, &body, args.timeout, |waited_secs| CliError::NoAnswer {
        operation: "backup",
        name,
        waited_secs,
        check: "backups",
        shows: "its backups",
    })
    .await?;
    let taken: Taken = decode(client.url(), value.clone())?;
    if args.json {
        console.print_json(&value)?;
    } else {
        writeln!(
            console.out,
            "backup {} of {} ({}) taken",
            taken.backup.label, instance.name, instance.id
        )?;
        describe(console.out, &taken.backup)?;
    }
    warn_of_checksum_errors(console.err, std::slice::from_ref(&taken.backup))?;
    Ok(())
}

/// The lines `instances backup` prints under its first.
fn describe(out: &mut dyn std::io::Write, backup: &BackupSet) -> std::io::Result<()> {
    writeln!(out, "type:      {}", backup.kind.as_str())?;
    writeln!(out, "started:   {}", backup.started_at.format(TIME_FORMAT))?;
    let took = format_took(backup.stopped_at - backup.started_at);
    writeln!(out, "finished:  {} (took {took})", backup.stopped_at.format(TIME_FORMAT))?;
    writeln!(
        out,
        "size:      {} ({} in the repository)",
        format_bytes(backup.database_bytes),
        format_bytes(backup.repository_bytes)
    )?;
    writeln!(out, "lsn:       {} .. {}", backup.lsn_start, backup.lsn_stop)?;
    Ok(())
}

fn warn_of_checksum_errors(
    err: &mut dyn std::io::Write,
    backups: &[BackupSet],
) -> std::io::Result<()> {
    for backup in backups.iter().filter(|b| b.checksum_errors) {
        writeln!(
            err,
            "warning: pgBackRest found page checksum errors while copying backup {}; the pages it copied may be damaged",
            backup.label
        )?;
    }
    Ok(())
}

/// `instances backups`: a table on standard output; the archived WAL and the earliest restore
/// point, which are notes rather than rows, on standard error.
pub(crate) async fn list(
    client: &Client,
    console: &mut Console<'_>,
    args: BackupsArgs,
) -> Result<()> {
    let instance = resolve(client, &args.target.target).await?;
    let (catalog, value) = catalog(client, &instance).await?;
    if args.json {
        return Ok(console.print_json(&value)?);
    }
    backups_table(&catalog).write_to(console.out)?;
    for note in notes(&instance.name.to_string(), &catalog) {
        writeln!(console.err, "{note}")?;
    }
    warn_of_checksum_errors(console.err, &catalog.backups)?;
    Ok(())
}

/// `GET /v1/instances/{id}/backups`, read and as the platform sent it.
async fn catalog(
    client: &Client,
    instance: &Instance,
) -> Result<(BackupCatalog, serde_json::Value)> {
    let path = format!("/v1/instances/{}/backups", instance.id);
    let value = client.send(Method::GET, &path, &[], None).await?;
    Ok((decode(client.url(), value.clone())?, value))
}

/// One row per backup, oldest first.
fn backups_table(catalog: &BackupCatalog) -> Table {
    let mut table = Table::new(&["LABEL", "TYPE", "STARTED", "FINISHED", "SIZE", "STORED", "LSN"]);
    for backup in &catalog.backups {
        table.row(vec![
            backup.label.clone(),
            backup.kind.as_str().to_owned(),
            backup.started_at.format(TIME_FORMAT).to_string(),
            backup.stopped_at.format(TIME_FORMAT).to_string(),
            format_bytes(backup.database_bytes),
            format_bytes(backup.repository_bytes),
            format!("{}..{}", backup.lsn_start, backup.lsn_stop),
        ]);
    }
    table
}

/// What the table does not say: the WAL archived, and the moments a restore can reach.
fn notes(name: &str, catalog: &BackupCatalog) -> Vec<String> {
    let mut notes = Vec::new();
    if let (Some(min), Some(max)) = (&catalog.wal_min, &catalog.wal_max) {
        notes.push(format!("WAL archived: {min} .. {max}"));
    }
    match catalog.backups.first() {
        None => notes.push(format!(
            "no backups yet: take one with `iaasctl instances backup {name}`"
        )),
        Some(first) => notes.push(format!(
            "restorable to any time after {}: `iaasctl instances create postgres NAME --restore-from {name} --at TIME`",
            first.stopped_at.format(TIME_FORMAT)
        )),
    }
    notes
}

/// The source of a restore, as `--restore-from` and `--at` name it.
#[derive(Debug, Clone)]
pub(crate) struct RestoreSource {
    /// The source cluster.
    pub(crate) id: InstanceId,
    /// Its name, for messages.
    pub(crate) name: String,
    /// Its spec, when it is PostgreSQL: the copy takes its database and replicas by default.
    pub(crate) spec: Option<PostgresSpec>,
    /// The moment to restore; the latest the archive holds when `None`.
    pub(crate) target_time: Option<DateTime<Utc>>,
    /// The backup the copy will start from, when the source could be asked (it runs).
    pub(crate) backup: Option<BackupSet>,
}

/// Looks the source up and, when it runs, checks that its backups reach `target_time`. A
/// source that does not run (stopped, or deleted without purge) cannot list its backups; the
/// platform then restores whatever its repository holds.
pub(crate) async fn restore_source(
    client: &Client,
    from: &str,
    target_time: Option<DateTime<Utc>>,
) -> Result<RestoreSource> {
    let source = resolve(client, from).await?;
    let spec = match &source.spec {
        InstanceSpec::Postgres(pg) => Some(pg.clone()),
        _ => None,
    };
    let mut backup = None;
    // Anything else is the platform's to refuse, with its own reason.
    if source.status == InstanceStatus::Running && source.spec.is_highly_available() {
        let (catalog, _) = catalog(client, &source).await?;
        backup =
            Some(restore_point(&source.name.to_string(), &catalog, target_time, client.now())?);
    }
    Ok(RestoreSource { id: source.id, name: source.name.to_string(), spec, target_time, backup })
}

/// The backup a restore of `name` to `target` (the latest when `None`) starts from: the newest
/// one that ended before `target`.
fn restore_point(
    name: &str,
    catalog: &BackupCatalog,
    target: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<BackupSet> {
    let refuse = |reason: String| CliError::NoRestorePoint { source_name: name.to_owned(), reason };
    let Some(first) = catalog.backups.first() else {
        return Err(refuse(format!(
            "it has no backups yet; take one with `iaasctl instances backup {name}`"
        )));
    };
    let Some(target) = target else {
        return Ok(catalog.backups.last().unwrap_or(first).clone());
    };
    if target > now {
        return Err(refuse(format!(
            "--at {} is in the future; leave --at out to restore the latest the archive holds",
            target.format(TIME_FORMAT)
        )));
    }
    // pgBackRest records whole seconds, truncated: a target in the very second a backup
    // stopped may precede the moment it is consistent at, so that second does not count.
    catalog
        .backups
        .iter()
        .rev()
        .find(|b| target.timestamp() > b.stopped_at.timestamp())
        .cloned()
        .ok_or_else(|| {
            let earliest = first.stopped_at + chrono::Duration::seconds(1);
            refuse(format!(
                "--at {} is before its first backup ended ({}); the earliest time it can be restored to is {}",
                target.format(TIME_FORMAT),
                first.stopped_at.format(TIME_FORMAT),
                earliest.format(TIME_FORMAT)
            ))
        })
}

/// The line `instances create` prints about a restore under way.
pub(crate) fn restore_line(source: &RestoreSource) -> String {
    let from = match &source.backup {
        Some(backup) => format!("backup {}", backup.label),
        None => "its newest backup".to_owned(),
    };
    let to = match source.target_time {
        Some(at) => format!("WAL replayed up to {}", at.format(TIME_FORMAT)),
        None => "all the WAL archived replayed".to_owned(),
    };
    format!("restoring {} ({}) from {from}, {to}", source.name, source.id)
}

/// `bytes` in the largest binary unit that keeps it at 1 or more, one decimal (`30.1 MiB`).
fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // One decimal is shown: f64's precision is more than enough.
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// How long a backup took, in whole seconds and the units above them (`7 s`, `2 min 5 s`).
fn format_took(took: chrono::TimeDelta) -> String {
    let secs = took.to_std().unwrap_or(Duration::ZERO).as_secs();
    match secs {
        0..60 => format!("{secs} s"),
        60..3_600 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3_600, secs % 3_600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn backup(label: &str, started: &str, stopped: &str) -> BackupSet {
        BackupSet {
            label: label.to_owned(),
            kind: BackupKind::Full,
            started_at: at(started),
            stopped_at: at(stopped),
            database_bytes: 31_562_138,
            repository_bytes: 4_194_304,
            lsn_start: "0/2000028".to_owned(),
            lsn_stop: "0/2000100".to_owned(),
            checksum_errors: false,
        }
    }

    fn catalog() -> BackupCatalog {
        BackupCatalog {
            backups: vec![
                backup("20261207-003130F", "2026-12-07T00:31:30Z", "2026-12-07T00:31:37Z"),
                backup("20261207-010000F", "2026-12-07T01:00:00Z", "2026-12-07T01:00:09Z"),
            ],
            wal_min: Some("000000010000000000000001".to_owned()),
            wal_max: Some("000000010000000000000007".to_owned()),
        }
    }

    const NOW: &str = "2026-12-07T02:00:00Z";

    #[test]
    fn a_restore_starts_from_the_newest_backup_that_ended_before_the_target() {
        let catalog = catalog();
        let point = |target: &str| restore_point("orders", &catalog, Some(at(target)), at(NOW));
        assert_eq!(point("2026-12-07T00:45:00Z").unwrap().label, "20261207-003130F");
        assert_eq!(point("2026-12-07T01:00:10Z").unwrap().label, "20261207-010000F");
        // The second a backup stopped in is not after it.
        assert_eq!(point("2026-12-07T01:00:09.900Z").unwrap().label, "20261207-003130F");
        let latest = restore_point("orders", &catalog, None, at(NOW)).unwrap();
        assert_eq!(latest.label, "20261207-010000F");
    }

    #[test]
    fn a_target_before_the_first_backup_names_the_earliest_time_there_is() {
        let err = restore_point("orders", &catalog(), Some(at("2026-12-07T00:31:37Z")), at(NOW))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot restore from orders: --at 2026-12-07T00:31:37Z is before its first backup \
             ended (2026-12-07T00:31:37Z); the earliest time it can be restored to is \
             2026-12-07T00:31:38Z"
        );
        assert_eq!(err.exit_code(), crate::EXIT_API);
    }

    #[test]
    fn a_target_in_the_future_or_a_source_without_backups_is_refused() {
        let err = restore_point("orders", &catalog(), Some(at("2026-12-07T02:00:01Z")), at(NOW))
            .unwrap_err();
        assert!(err.to_string().contains("is in the future"), "{err}");
        let empty = BackupCatalog::default();
        let err = restore_point("orders", &empty, None, at(NOW)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot restore from orders: it has no backups yet; take one with \
             `iaasctl instances backup orders`"
        );
    }

    #[test]
    fn the_backup_table_has_one_row_per_backup_with_sizes_people_read() {
        let mut out = Vec::new();
        backups_table(&catalog()).write_to(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\
LABEL             TYPE  STARTED               FINISHED              SIZE      STORED   LSN
20261207-003130F  full  2026-12-07T00:31:30Z  2026-12-07T00:31:37Z  30.1 MiB  4.0 MiB  0/2000028..0/2000100
20261207-010000F  full  2026-12-07T01:00:00Z  2026-12-07T01:00:09Z  30.1 MiB  4.0 MiB  0/2000028..0/2000100
"
        );
        assert_eq!(
            notes("orders", &catalog()),
            [
                "WAL archived: 000000010000000000000001 .. 000000010000000000000007",
                "restorable to any time after 2026-12-07T00:31:37Z: `iaasctl instances create \
                 postgres NAME --restore-from orders --at TIME`"
            ]
        );
        assert_eq!(
            notes("orders", &BackupCatalog::default()),
            ["no backups yet: take one with `iaasctl instances backup orders`"]
        );
    }

    #[test]
    fn a_taken_backup_is_described_line_by_line() {
        let mut out = Vec::new();
        describe(&mut out, &catalog().backups[0]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\
type:      full
started:   2026-12-07T00:31:30Z
finished:  2026-12-07T00:31:37Z (took 7 s)
size:      30.1 MiB (4.0 MiB in the repository)
lsn:       0/2000028 .. 0/2000100
"
        );
    }

    #[test]
    fn sizes_and_durations_read_in_their_largest_unit() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(4_194_304), "4.0 MiB");
        assert_eq!(format_bytes(3 << 30), "3.0 GiB");
        assert_eq!(format_bytes(u64::MAX), "16384.0 PiB");
        assert_eq!(format_took(chrono::TimeDelta::seconds(7)), "7 s");
        assert_eq!(format_took(chrono::TimeDelta::seconds(125)), "2 min 5 s");
        assert_eq!(format_took(chrono::TimeDelta::seconds(3_725)), "1 h 2 min");
        assert_eq!(format_took(chrono::TimeDelta::seconds(-3)), "0 s", "clocks may disagree");
    }

    #[test]
    fn the_backup_type_is_sent_as_pgbackrest_names_it() {
        assert_eq!(BackupKind::from(BackupType::Full).as_str(), "full");
        assert_eq!(BackupKind::from(BackupType::Diff).as_str(), "diff");
        assert_eq!(BackupKind::from(BackupType::Incr).as_str(), "incr");
    }
}
