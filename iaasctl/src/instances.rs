//! `iaasctl instances ...`: the provisioning API (`/v1/instances`) from the command line.
//!
//! An instance is named by its id or by its name; a name is looked up in the caller's list
//! (names are unique per owner among the instances that are not deleted).

use std::collections::BTreeMap;
use std::time::Duration;

use iaas_core::{
    DockerSpec, Instance, InstanceId, InstanceSpec, InstanceStatus, NginxSpec, PortMapping,
    PostgresSpec, Resources,
};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::cli::{ActionArgs, CreateArgs, CreateCommand, InstancesCommand, SwitchoverArgs};
use crate::client::{Client, decode};
use crate::console::Console;
use crate::error::{CliError, Result};
use crate::follow::follow;
use crate::table::Table;
use crate::when::format_age;

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
        InstancesCommand::Switchover(args) => switchover(client, console, args).await,
    }
}

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
    let timeout = Duration::from_secs(args.timeout);
    let value = match client.send_waiting(Method::POST, &path, &[], Some(&body), timeout).await {
        // The request went out and the answer is late: the switchover may be under way, so
        // "cannot reach the platform" would mislead.
        Err(CliError::Connect { source, .. }) if source.is_timeout() && !source.is_connect() => {
            return Err(CliError::NoAnswer {
                operation: "switchover",
                name: instance.name.to_string(),
                waited_secs: args.timeout,
            });
        }
        other => other?,
    };
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
    let (common, spec) = spec_of(create)?;
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
    if common.no_wait {
        return Ok(());
    }
    let timeout = Duration::from_secs(common.timeout);
    let progress = console.progress(common.json);
    follow(client, progress, instance, InstanceStatus::Running, timeout).await?;
    writeln!(progress, "{} is running", instance.name)?;
    Ok(())
}

/// The common arguments and the spec of `instances create KIND`.
fn spec_of(create: CreateCommand) -> Result<(CreateArgs, InstanceSpec)> {
    Ok(match create {
        CreateCommand::Postgres { common, database, replicas, ha, synchronous } => {
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
            spec_of(create(&["postgres", "db", "--replicas", "2", "--ha", "--synchronous"]))
                .unwrap();
        assert_eq!(
            json!(spec),
            json!({"kind": "postgres", "database": "app", "replicas": 2, "ha": true, "synchronous": true})
        );
        let (_, spec) = spec_of(create(&["postgres", "db", "--replicas", "1", "--ha"])).unwrap();
        assert_eq!(
            json!(spec),
            json!({"kind": "postgres", "database": "app", "replicas": 1, "ha": true})
        );
        let (_, spec) = spec_of(create(&["postgres", "db"])).unwrap();
        assert_eq!(json!(spec), json!({"kind": "postgres", "database": "app", "replicas": 0}));
    }

    #[test]
    fn synchronous_without_ha_is_refused_before_any_request() {
        let err =
            spec_of(create(&["postgres", "db", "--replicas", "1", "--synchronous"])).unwrap_err();
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
        let err = spec_of(create(&["postgres", "db", "--ha"])).unwrap_err();
        assert!(matches!(err, CliError::FlagNeeds { flag: "--ha", .. }), "{err}");
        assert_eq!(err.exit_code(), crate::EXIT_USAGE);
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
        let (common, spec) = spec_of(create).unwrap();
        assert_eq!(common.name, "worker");
        assert_eq!(
            json!(spec),
            json!({"kind": "docker", "image": "busybox:1", "env": {}, "ports": [8080, {"container": 81, "host": 18081}],
                   "command": ["sleep", "60"]})
        );
    }
}
