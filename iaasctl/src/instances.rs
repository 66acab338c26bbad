//! `iaasctl instances ...`: the provisioning API (`/v1/instances`) from the command line.
//!
//! An instance is named by its id or by its name; a name is looked up in the caller's list
//! (names are unique per owner among the instances that are not deleted).

use std::collections::BTreeMap;
use std::time::Duration;

use iaas_core::{
    BackupSchedule, DockerSpec, Instance, InstanceId, InstanceSpec, InstanceStatus, NginxSpec,
    PortMapping, PostgresSpec, Resources, RestoreSpec,
};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::backups::{self, RestoreSource};
use crate::cli::{
    ActionArgs, BackupScheduleArgs, CreateArgs, CreateCommand, InstancesCommand, PasswordArgs,
    ScaleArgs, SwitchoverArgs,
};
use crate::client::{Client, decode};
use crate::console::Console;
use crate::error::{CliError, Result};
use crate::follow::follow;
use crate::table::Table;
use crate::when::{format_age, parse_time};

/// Runs one `instances` command.
pub(crate) async fn run(
    client: &Client,
    console: &mut Console<'_>,
    command: InstancesCommand,
) -> Result<()> {
    match command {
        InstancesCommand::List(args) => {
            let value = client.send(Method::GET, "/v1/instances", &[], None).await?;
            let mut listing: Listing = decode(client.url(), value)?;
            if !args.all {
                listing.instances.retain(|i| i.status != InstanceStatus::Deleted);
            }
            if args.json {
                Ok(console.print_json(&json!(listing.instances))?)
            } else {
                let now = client.now();
                let mut table = Table::new(&["ID", "NAME", "KIND", "STATUS", "AGE"]);
                for instance in &listing.instances {
                    table.row(vec![
                        instance.id.to_string(),
                        instance.name.to_string(),
                        instance.kind().to_string(),
                        instance.status.to_string(),
                        format_age(instance.created_at, now),
                    ]);
                }
                Ok(table.write_to(console.out)?)
            }
        }
        InstancesCommand::Get(args) => {
            let instance = resolve(client, &args.target.target).await?;
            if args.json {
                return Ok(console.print_json(&json!(instance))?);
            }
            let now = client.now();
            let out = &mut *console.out;
            writeln!(out, "id:         {}", instance.id)?;
            writeln!(out, "name:       {}", instance.name)?;
            writeln!(out, "kind:       {}", instance.kind())?;
            writeln!(out, "status:     {}", instance.status)?;
            let created = instance.created_at.format("%Y-%m-%dT%H:%M:%SZ");
            writeln!(out, "created:    {created} ({} ago)", format_age(instance.created_at, now))?;
            let updated = instance.updated_at.format("%Y-%m-%dT%H:%M:%SZ");
            writeln!(out, "updated:    {updated} ({} ago)", format_age(instance.updated_at, now))?;
            let Resources { millicpus, memory_mib } = instance.resources;
            writeln!(out, "resources:  {millicpus} millicpus, {memory_mib} MiB")?;
            if let InstanceSpec::Postgres(pg) = &instance.spec {
                writeln!(out, "ha:         {}", availability(pg))?;
            }
            writeln!(out, "spec:       {}", json!(instance.spec))?;
            Ok(())
        }
        InstancesCommand::Create(create) => create_instance(client, console, create).await,
        InstancesCommand::Start(args) => {
            act(client, console, &args, "start", InstanceStatus::Running).await
        }
        InstancesCommand::Stop(args) => {
            act(client, console, &args, "stop", InstanceStatus::Stopped).await
        }
        InstancesCommand::Restart(args) => {
            act(client, console, &args, "restart", InstanceStatus::Running).await
        }
        InstancesCommand::Delete(args) => {
            let instance = resolve(client, &args.target.target).await?;
            let path = format!("/v1/instances/{}", instance.id);
            let query: Vec<(&str, String)> =
                if args.purge { vec![("purge", "true".to_owned())] } else { Vec::new() };
            let value = client.send(Method::DELETE, &path, &query, None).await?;
            let deleting: Instance = decode(client.url(), value)?;
            let purged = if args.purge { " and its data" } else { "" };
            writeln!(
                console.out,
                "delete requested for {} ({}){purged}",
                instance.name, instance.id
            )?;
            if !args.follow.no_wait {
                let timeout = Duration::from_secs(args.follow.timeout);
                follow(client, console.out, &deleting, InstanceStatus::Deleted, timeout).await?;
            }
            Ok(())
        }
        InstancesCommand::Info(args) => view(client, console, &args.target.target, "info").await,
        InstancesCommand::Stats(args) => view(client, console, &args.target.target, "stats").await,
        InstancesCommand::Replication(args) => {
            view(client, console, &args.target.target, "replication").await
        }
        InstancesCommand::Switchover(args) => switchover(client, console, args).await,
        InstancesCommand::Scale(args) => scale(client, console, args).await,
        InstancesCommand::Password(args) => password(client, console, args).await,
        InstancesCommand::BackupSchedule(args) => backup_schedule(client, console, args).await,
        InstancesCommand::Backup(args) => backups::backup(client, console, args).await,
        InstancesCommand::Backups(args) => backups::list(client, console, args).await,
    }
}

/// The database `instances create postgres` makes when `--database` is not given.
const DEFAULT_DATABASE: &str = "app";

/// How available a PostgreSQL cluster is, as `instances get` shows it.
fn availability(pg: &PostgresSpec) -> &'static str {
    match (pg.ha, pg.synchronous) {
        (false, _) => "no",
        (true, false) => "yes, asynchronous replication",
        (true, true) => "yes, synchronous replication",
    }
}

/// `GET /v1/instances`.
#[derive(Debug, Deserialize)]
struct Listing {
    instances: Vec<Instance>,
}

/// `POST /v1/instances` answer.
#[derive(Debug, Deserialize)]
struct Created {
    instance: Instance,
    #[serde(default)]
    credentials: Option<DatabaseCredentials>,
}

#[derive(Debug, Deserialize)]
struct DatabaseCredentials {
    user: String,
    password: String,
}

/// The caller's instance `target`, an id or a name.
pub(crate) async fn resolve(client: &Client, target: &str) -> Result<Instance> {
    if let Ok(id) = target.parse::<InstanceId>() {
        let value = client.send(Method::GET, &format!("/v1/instances/{id}"), &[], None).await?;
        return decode(client.url(), value);
    }
    let value = client.send(Method::GET, "/v1/instances", &[], None).await?;
    let listing: Listing = decode(client.url(), value)?;
    listing
        .instances
        .into_iter()
        .filter(|i| i.name.as_str() == target)
        // A deleted instance may share its name with a live one: the live one is meant.
        .min_by_key(|i| i.status == InstanceStatus::Deleted)
        .ok_or_else(|| CliError::NoSuchInstance { name: target.to_owned() })
}

/// `POST /v1/instances/{id}/{action}`, then (unless `--no-wait`) the instance followed from
/// the transitional status of the answer until it is `goal`.
async fn act(
    client: &Client,
    console: &mut Console<'_>,
    args: &ActionArgs,
    action: &str,
    goal: InstanceStatus,
) -> Result<()> {
    let instance = resolve(client, &args.target.target).await?;
    let path = format!("/v1/instances/{}/{action}", instance.id);
    let value = client.send(Method::POST, &path, &[], None).await?;
    let accepted: Accepted = decode(client.url(), value)?;
    writeln!(console.out, "{action} requested for {} ({})", instance.name, instance.id)?;
    if !args.follow.no_wait {
        let timeout = Duration::from_secs(args.follow.timeout);
        follow(client, console.out, &accepted.instance, goal, timeout).await?;
    }
    Ok(())
}

/// `POST /v1/instances/{id}/start|stop|restart` answer.
#[derive(Debug, Deserialize)]
struct Accepted {
    instance: Instance,
}

/// `POST /v1/instances/{id}/switchover` answer.
#[derive(Debug, Deserialize)]
struct Switchover {
    /// `null` when the platform could not tell which member was primary before.
    #[serde(default)]
    old_primary: Option<String>,
    new_primary: String,
    #[serde(default)]
    timeline: Option<u64>,
    took_ms: u64,
}

/// `instances switchover`: the platform carries the switchover out before it answers, so
/// there is nothing to follow afterwards.
async fn switchover(
    client: &Client,
    console: &mut Console<'_>,
    args: SwitchoverArgs,
) -> Result<()> {
    let instance = resolve(client, &args.target.target).await?;
    let path = format!("/v1/instances/{}/switchover", instance.id);
    let body = match &args.member {
        Some(member) => json!({"target": member}),
        None => json!({}),
    };
    let name = instance.name.to_string();
    let value = carry_out(client, &path, &body, args.timeout, |waited_secs| CliError::NoAnswer {
        operation: "switchover",
        name,
        waited_secs,
        check: "info",
        shows: "the cluster",
    })
    .await?;
    let done: Switchover = decode(client.url(), value.clone())?;
    if args.json {
        return Ok(console.print_json(&value)?);
    }
    let out = &mut *console.out;
    writeln!(out, "switchover done for {} ({})", instance.name, instance.id)?;
    writeln!(out, "old primary:  {}", done.old_primary.as_deref().unwrap_or("none"))?;
    writeln!(out, "new primary:  {}", done.new_primary)?;
    if let Some(timeline) = done.timeline {
        writeln!(out, "timeline:     {timeline}")?;
    }
    writeln!(out, "took:         {:.1} s", Duration::from_millis(done.took_ms).as_secs_f64())?;
    Ok(())
}

/// `instances backup-schedule`: stores the schedule (the platform acts on it).
async fn backup_schedule(
    client: &Client,
    console: &mut Console<'_>,
    args: BackupScheduleArgs,
) -> Result<()> {
    let instance = resolve(client, &args.target.target).await?;
    let schedule = match (args.every_hours, args.keep) {
        (Some(every_hours), Some(keep)) if !args.off => {
            json!({"every_hours": every_hours, "keep": keep})
        }
        _ => serde_json::Value::Null,
    };
    let path = format!("/v1/instances/{}", instance.id);
    client.send(Method::PATCH, &path, &[], Some(&json!({"backup_schedule": schedule}))).await?;
    let out = &mut *console.out;
    match (args.every_hours, args.keep) {
        (Some(every), Some(keep)) if !args.off => writeln!(
            out,
            "{} ({}): a full backup every {every} h, {keep} kept",
            instance.name, instance.id
        )?,
        _ => writeln!(out, "{} ({}): no scheduled backups", instance.name, instance.id)?,
    }
    Ok(())
}

/// `POST /v1/instances/{id}/password` answer.
#[derive(Debug, Deserialize)]
struct NewPassword {
    credentials: DatabaseCredentials,
}

/// `instances password`: a new application password, printed once.
async fn password(client: &Client, console: &mut Console<'_>, args: PasswordArgs) -> Result<()> {
    let instance = resolve(client, &args.target.target).await?;
    let path = format!("/v1/instances/{}/password", instance.id);
    let value = client.send(Method::POST, &path, &[], None).await?;
    if args.json {
        return Ok(console.print_json(&value)?);
    }
    let answer: NewPassword = decode(client.url(), value)?;
    writeln!(console.out, "new password for {} ({})", instance.name, instance.id)?;
    writeln!(
        console.out,
        "database user {} password {} (shown once: keep it now)",
        answer.credentials.user, answer.credentials.password
    )?;
    Ok(())
}

/// How often `instances scale` looks at the replication while it follows.
const SCALE_POLL: Duration = Duration::from_secs(1);

/// `instances scale`: stores the count, then (unless `--no-wait`) follows the replication
/// view until exactly that many replicas stream.
async fn scale(client: &Client, console: &mut Console<'_>, args: ScaleArgs) -> Result<()> {
    let instance = resolve(client, &args.target.target).await?;
    let path = format!("/v1/instances/{}", instance.id);
    let body = json!({"replicas": args.replicas});
    client.send(Method::PATCH, &path, &[], Some(&body)).await?;
    let out = &mut *console.out;
    writeln!(out, "{} ({}): {} replicas asked", instance.name, instance.id, args.replicas)?;
    if args.follow.no_wait {
        return Ok(());
    }
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(args.follow.timeout);
    let replication = format!("/v1/instances/{}/replication", instance.id);
    let mut last = None;
    loop {
        // A hand-over or a member starting makes the view unavailable for a moment.
        let streaming = match client.send(Method::GET, &replication, &[], None).await {
            Ok(view) => Some(streaming_replicas(&view)),
            Err(CliError::Api { status, .. }) if status >= 500 || status == 409 => None,
            Err(other) => return Err(other),
        };
        if let Some(now) = streaming.filter(|now| last.as_ref() != Some(now)) {
            writeln!(
                out,
                "streaming: {}",
                if now.is_empty() { "none".to_owned() } else { now.join(", ") }
            )?;
            last = Some(now);
        }
        if last.as_ref().is_some_and(|now| now.len() == usize::from(args.replicas)) {
            writeln!(out, "done in {:.1} s", started.elapsed().as_secs_f64())?;
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let streaming = last.as_ref().map_or(0, Vec::len);
            return Err(CliError::WaitTimedOut {
                name: instance.name.to_string(),
                status: format!("{streaming} streaming replicas"),
                wanted: format!("{} streaming replicas", args.replicas),
                waited_secs: args.follow.timeout,
            });
        }
        tokio::time::sleep(SCALE_POLL).await;
    }
}

/// The names of the replicas a replication view shows streaming, sorted.
fn streaming_replicas(view: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = view["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] == "streaming")
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// `POST path` with `body` for an operation the platform carries out before it answers (a
/// switchover, a backup), waiting up to `timeout_secs`. A late answer becomes `late(waited)`:
/// the request went out, so the operation may be under way, and "cannot reach the platform"
/// would mislead.
pub(crate) async fn carry_out(
    client: &Client,
    path: &str,
    body: &serde_json::Value,
    timeout_secs: u64,
    late: impl FnOnce(u64) -> CliError,
) -> Result<serde_json::Value> {
    let timeout = Duration::from_secs(timeout_secs);
    match client.send_waiting(Method::POST, path, &[], Some(body), timeout).await {
        Err(CliError::Connect { source, .. }) if source.is_timeout() && !source.is_connect() => {
            Err(late(timeout_secs))
        }
        other => other,
    }
}

async fn view(client: &Client, console: &mut Console<'_>, target: &str, part: &str) -> Result<()> {
    let instance = resolve(client, target).await?;
    let path = format!("/v1/instances/{}/{part}", instance.id);
    let value = client.send(Method::GET, &path, &[], None).await?;
    Ok(console.print_json(&value)?)
}

async fn create_instance(
    client: &Client,
    console: &mut Console<'_>,
    create: CreateCommand,
) -> Result<()> {
    // The flags are checked before any request; a restore's source is looked up after.
    let restore = match &create {
        CreateCommand::Postgres { restore_from: Some(from), at, .. } => {
            let at = at.as_deref().map(|at| parse_time("--at", at, client.now())).transpose()?;
            spec_of(create.clone(), None)?;
            Some(backups::restore_source(client, from, at).await?)
        }
        _ => None,
    };
    let (common, spec) = spec_of(create, restore.as_ref())?;
    let mut body = json!({"name": common.name, "spec": spec});
    if common.millicpus.is_some() || common.memory_mib.is_some() {
        let defaults = Resources::default();
        body["resources"] = json!(Resources {
            millicpus: common.millicpus.unwrap_or(defaults.millicpus),
            memory_mib: common.memory_mib.unwrap_or(defaults.memory_mib),
        });
    }
    let value = client.send(Method::POST, "/v1/instances", &[], Some(&body)).await?;
    let created: Created = decode(client.url(), value.clone())?;
    let instance = &created.instance;
    if common.json {
        console.print_json(&value)?;
    } else {
        writeln!(console.out, "created {} {} ({})", instance.kind(), instance.name, instance.id)?;
        if let Some(credentials) = &created.credentials {
            writeln!(
                console.out,
                "database user {} password {} (shown once: keep it now)",
                credentials.user, credentials.password
            )?;
        }
    }
    if let Some(source) = &restore {
        writeln!(console.progress(common.json), "{}", backups::restore_line(source))?;
    }
    if common.no_wait {
        return Ok(());
    }
    let timeout = Duration::from_secs(common.timeout);
    let progress = console.progress(common.json);
    follow(client, progress, instance, InstanceStatus::Running, timeout).await?;
    writeln!(progress, "{} is running", instance.name)?;
    Ok(())
}

/// The common arguments and the spec of `instances create KIND`. `restore` is what
/// `--restore-from` names; without it the flags are checked against the defaults, which is how
/// they are checked before the source is looked up.
fn spec_of(
    create: CreateCommand,
    restore: Option<&RestoreSource>,
) -> Result<(CreateArgs, InstanceSpec)> {
    Ok(match create {
        CreateCommand::Postgres {
            common,
            database,
            replicas,
            ha,
            synchronous,
            restore_from,
            at: _,
            backup_every_hours,
            backup_keep,
        } => {
            // A copy is shaped like its source unless the flags say otherwise; it is highly
            // available, as only such clusters are restored.
            let source = restore.and_then(|r| r.spec.as_ref());
            let restoring = restore_from.is_some();
            if restoring && replicas == Some(0) {
                return Err(CliError::FlagNeeds {
                    flag: "--restore-from",
                    needs: "--replicas 1 or more",
                    reason: "a restored cluster is highly available, and a failover promotes a replica",
                });
            }
            let ha = ha || restoring;
            let database = database
                .or_else(|| source.map(|s| s.database.clone()))
                .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
            let replicas = replicas
                .or_else(|| source.map(|s| s.replicas).filter(|r| *r > 0))
                .unwrap_or(if restoring { 1 } else { 0 });
            // The platform refuses these too; refusing here says it in terms of the flags.
            if synchronous && !ha {
                return Err(CliError::FlagNeeds {
                    flag: "--synchronous",
                    needs: "--ha",
                    reason: "synchronous replication is offered on highly available clusters",
                });
            }
            if ha && replicas == 0 {
                return Err(CliError::FlagNeeds {
                    flag: "--ha",
                    needs: "--replicas 1 or more",
                    reason: "a failover promotes a replica",
                });
            }
            let mut spec = PostgresSpec::new(database, replicas);
            if ha {
                spec = spec.highly_available();
            }
            if synchronous {
                spec = spec.synchronous();
            }
            if let Some(source) = restore {
                spec.restore =
                    Some(RestoreSpec { from: source.id, target_time: source.target_time });
            }
            if let (Some(every_hours), Some(keep)) = (backup_every_hours, backup_keep) {
                if !ha {
                    return Err(CliError::FlagNeeds {
                        flag: "--backup-every-hours",
                        needs: "--ha",
                        reason: "only highly available clusters are backed up",
                    });
                }
                spec.backup_schedule = Some(BackupSchedule { every_hours, keep });
            }
            (common, InstanceSpec::Postgres(spec))
        }
        CreateCommand::Nginx { common, site_config } => {
            let site_config = match site_config {
                None => None,
                Some(path) => Some(std::fs::read_to_string(&path).map_err(|err| {
                    CliError::usage(
                        "--site-config",
                        path.display().to_string(),
                        format!("cannot read it: {err}"),
                    )
                })?),
            };
            (common, InstanceSpec::Nginx(NginxSpec { site_config }))
        }
        CreateCommand::Docker { common, image, env, ports, command } => {
            let env = parse_env(&env)?;
            let ports = ports.iter().map(|port| parse_port(port)).collect::<Result<_>>()?;
            let command = if command.is_empty() { None } else { Some(command) };
            (common, InstanceSpec::Docker(DockerSpec { image, env, ports, command }))
        }
    })
}

/// `KEY=VALUE` pairs; the value may be empty and may contain `=`.
/// `PORT` (published on a free host port) or `HOST_PORT:PORT`.
fn parse_port(text: &str) -> Result<PortMapping> {
    let invalid =
        || CliError::usage("--port", text, "expected PORT or HOST_PORT:PORT, each from 1 to 65535");
    let number = |part: &str| part.parse::<u16>().ok().filter(|port| *port > 0).ok_or_else(invalid);
    match text.split_once(':') {
        None => Ok(PortMapping::ephemeral(number(text)?)),
        Some((host, container)) => Ok(PortMapping::on_host(number(container)?, number(host)?)),
    }
}

fn parse_env(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => Err(CliError::usage("--env", pair.clone(), "expected KEY=VALUE")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_pairs_split_at_the_first_equals_sign() {
        let env = parse_env(&["A=1".into(), "URL=a=b".into(), "EMPTY=".into()]).unwrap();
        assert_eq!(env["A"], "1");
        assert_eq!(env["URL"], "a=b");
        assert_eq!(env["EMPTY"], "");
        for bad in ["NOVALUE", "=x"] {
            let err = parse_env(&[bad.into()]).unwrap_err();
            assert!(matches!(err, CliError::Usage { argument: "--env", .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn ports_are_published_on_a_free_or_a_chosen_host_port() {
        assert_eq!(parse_port("80").unwrap(), PortMapping::ephemeral(80));
        assert_eq!(parse_port("18080:80").unwrap(), PortMapping::on_host(80, 18080));
        for bad in ["", "0", "http", "80:", ":80", "70000", "1:2:3"] {
            let err = parse_port(bad).unwrap_err();
            assert!(matches!(err, CliError::Usage { argument: "--port", .. }), "{bad}: {err}");
        }
    }

    fn create(args: &[&str]) -> CreateCommand {
        let line = ["iaasctl", "instances", "create"].iter().chain(args);
        let cli = <crate::Cli as clap::Parser>::try_parse_from(line).unwrap();
        let crate::Command::Instances(InstancesCommand::Create(create)) = cli.command else {
            panic!("not a create: {:?}", cli.command);
        };
        create
    }

    #[test]
    fn a_highly_available_postgres_create_becomes_the_documented_spec() {
        let (_, spec) =
            spec_of(create(&["postgres", "db", "--replicas", "2", "--ha", "--synchronous"]), None)
                .unwrap();
        assert_eq!(
            json!(spec),
            json!({"kind": "postgres", "database": "app", "replicas": 2, "ha": true, "synchronous": true})
        );
        let (_, spec) =
            spec_of(create(&["postgres", "db", "--replicas", "1", "--ha"]), None).unwrap();
        assert_eq!(
            json!(spec),
            json!({"kind": "postgres", "database": "app", "replicas": 1, "ha": true})
        );
        let (_, spec) = spec_of(create(&["postgres", "db"]), None).unwrap();
        assert_eq!(json!(spec), json!({"kind": "postgres", "database": "app", "replicas": 0}));
    }

    #[test]
    fn synchronous_without_ha_is_refused_before_any_request() {
        let err = spec_of(create(&["postgres", "db", "--replicas", "1", "--synchronous"]), None)
            .unwrap_err();
        assert!(
            matches!(err, CliError::FlagNeeds { flag: "--synchronous", needs: "--ha", .. }),
            "{err}"
        );
        assert_eq!(err.exit_code(), crate::EXIT_USAGE);
        assert_eq!(
            err.to_string(),
            "--synchronous needs --ha: synchronous replication is offered on highly available clusters"
        );
    }

    #[test]
    fn ha_without_a_replica_is_refused_before_any_request() {
        let err = spec_of(create(&["postgres", "db", "--ha"]), None).unwrap_err();
        assert!(matches!(err, CliError::FlagNeeds { flag: "--ha", .. }), "{err}");
        assert_eq!(err.exit_code(), crate::EXIT_USAGE);
    }

    fn source(spec: Option<PostgresSpec>) -> RestoreSource {
        RestoreSource {
            id: "0190a0a0-0000-7000-8000-000000000001".parse().unwrap(),
            name: "orders".to_owned(),
            spec,
            target_time: Some("2026-12-07T00:39:12.5Z".parse().unwrap()),
            backup: None,
        }
    }

    #[test]
    fn a_restored_copy_is_shaped_like_its_source_unless_the_flags_say_otherwise() {
        let orders = source(Some(PostgresSpec::new("ledger", 2).highly_available().synchronous()));
        let restore = ["postgres", "copy", "--restore-from", "orders", "--at", "5m"];
        let (_, spec) = spec_of(create(&restore), Some(&orders)).unwrap();
        assert_eq!(
            json!(spec),
            json!({"kind": "postgres", "database": "ledger", "replicas": 2, "ha": true,
                   "restore": {"from": "0190a0a0-0000-7000-8000-000000000001",
                               "target_time": "2026-12-07T00:39:12.500Z"}})
        );
        let flags = [
            "postgres",
            "copy",
            "--restore-from",
            "orders",
            "--database",
            "app",
            "--replicas",
            "1",
            "--synchronous",
        ];
        let (_, spec) = spec_of(create(&flags), Some(&orders)).unwrap();
        let InstanceSpec::Postgres(pg) = spec else { panic!("not postgres: {spec:?}") };
        assert_eq!(
            (pg.database.as_str(), pg.replicas, pg.ha, pg.synchronous),
            ("app", 1, true, true)
        );
        // Before the source is looked up the flags are checked against the defaults.
        let (_, spec) = spec_of(create(&restore), None).unwrap();
        assert_eq!(
            json!(spec),
            json!({"kind": "postgres", "database": "app", "replicas": 1, "ha": true})
        );
    }

    #[test]
    fn a_restore_without_a_replica_is_refused_before_any_request() {
        let create = create(&["postgres", "copy", "--restore-from", "orders", "--replicas", "0"]);
        let err = spec_of(create, None).unwrap_err();
        assert!(
            matches!(
                err,
                CliError::FlagNeeds { flag: "--restore-from", needs: "--replicas 1 or more", .. }
            ),
            "{err}"
        );
        assert_eq!(err.exit_code(), crate::EXIT_USAGE);
    }

    #[test]
    fn at_needs_restore_from() {
        let line = ["iaasctl", "instances", "create", "postgres", "db", "--at", "5m"];
        let err = <crate::Cli as clap::Parser>::try_parse_from(line).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(err.to_string().contains("--restore-from"), "{err}");
    }

    #[test]
    fn get_shows_how_available_a_cluster_is() {
        let plain = PostgresSpec::new("app", 1);
        assert_eq!(availability(&plain), "no");
        assert_eq!(
            availability(&plain.clone().highly_available()),
            "yes, asynchronous replication"
        );
        assert_eq!(
            availability(&plain.highly_available().synchronous()),
            "yes, synchronous replication"
        );
    }

    #[test]
    fn a_docker_create_becomes_the_documented_spec() {
        let cli = <crate::Cli as clap::Parser>::try_parse_from([
            "iaasctl",
            "instances",
            "create",
            "docker",
            "worker",
            "--image",
            "busybox:1",
            "-p",
            "8080",
            "-p",
            "18081:81",
            "--",
            "sleep",
            "60",
        ])
        .unwrap();
        let crate::Command::Instances(InstancesCommand::Create(create)) = cli.command else {
            panic!("not a create: {:?}", cli.command);
        };
        let (common, spec) = spec_of(create, None).unwrap();
        assert_eq!(common.name, "worker");
        assert_eq!(
            json!(spec),
            json!({"kind": "docker", "image": "busybox:1", "env": {}, "ports": [8080, {"container": 81, "host": 18081}],
                   "command": ["sleep", "60"]})
        );
    }
}
