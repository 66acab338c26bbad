//! The containers of a highly available PostgreSQL cluster, decided before any engine call.
//!
//! One image (the catalog's `postgres_ha`, see `scripts/images/postgres-ha/`) plays three roles,
//! chosen by the command:
//!
//! | role | command | runs as | what it is |
//! |---|---|---|---|
//! | [`STORE`] | `etcd` | `etcd` | the store the members elect their primary through |
//! | `member-0` .. `member-N` | `patroni` | `postgres` | PostgreSQL run by Patroni: one primary, the others replicas |
//! | [`ENDPOINT`] | `haproxy` | `haproxy` | port 5432 reaches the primary, 5433 the replicas |
//!
//! They are created in that order (the endpoint last: the instance is up once it runs). Only
//! the endpoint publishes ports, so clients keep one address across failovers; the members
//! find the store and each other by container name on the owner's network, and the endpoint
//! finds the members through one network alias they all carry ([`members_alias`]), so a
//! member made again, with another address, is found without a reload.
//!
//! Every member mounts its own data volume and the cluster's backup repository (a volume
//! shared by the members: only the primary writes to it, through pgBackRest's
//! `archive_command` and the backups the platform asks for). No container gets a capability:
//! each starts as its own unprivileged user.
//!
//! Secrets: the application role's password (`POSTGRES_PASSWORD`, the tenant's), and the
//! platform's own superuser, replication, rewind and Patroni REST passwords, made by
//! [`postgres_secrets`](crate::plan::postgres_secrets) when not given. Only members get them;
//! the store and the endpoint get none.

use iaas_core::runtime::{ENDPOINT, STORE, Secrets, member_role};
use iaas_core::{Instance, InstanceId, PortMapping, PostgresSpec, RuntimeError};

use crate::config::{DockerRuntimeConfig, S3Repository};
use crate::plan::{Plan, SUPERUSER, Volume, container_name, volume_name};

/// Where a member's data volume is mounted; `PGDATA` is a directory inside it, so Patroni can
/// move a failed bootstrap's directory aside.
const MEMBER_DATA: &str = "/var/lib/postgresql/data";
/// Where the store keeps its data.
const STORE_DATA: &str = "/var/lib/iaas-etcd";
/// Where every member mounts the cluster's backup repository.
pub(crate) const BACKUP_REPOSITORY: &str = "/var/lib/pgbackrest";
/// Where the members of a restored cluster mount, read-only, the repository they start from.
pub(crate) const RESTORE_SOURCE: &str = "/var/lib/pgbackrest-source";
/// The port of the endpoint that reaches the primary.
pub const READ_WRITE_PORT: u16 = 5432;
/// The port of the endpoint that reaches the replicas.
pub const READ_ONLY_PORT: u16 = 5433;
/// Patroni's REST port on every member.
pub(crate) const PATRONI_PORT: u16 = 8008;

/// The passwords only the platform knows, beside the superuser's and replication's.
pub(crate) const PLATFORM_SECRETS: [&str; 3] =
    ["POSTGRES_REWIND_PASSWORD", "POSTGRES_PATRONI_PASSWORD", "POSTGRES_ETCD_PASSWORD"];

/// The cluster's name in Patroni (the key prefix in the store) and its pgBackRest stanza.
pub(crate) fn scope(instance: InstanceId) -> String {
    format!("pg-{instance}")
}

/// The network alias every member of `instance` carries, for the endpoint to find them all.
pub(crate) fn members_alias(instance: &Instance) -> String {
    format!("members.{}", instance.name)
}

/// The backup repository volume of `instance`.
pub(crate) fn backup_volume(config: &DockerRuntimeConfig, instance: InstanceId) -> Volume {
    Volume {
        name: volume_name(&config.name_prefix, instance, "backups"),
        target: BACKUP_REPOSITORY,
    }
}

/// The containers of the highly available cluster `instance` (whose spec is `pg`), in the
/// order they are created. `secrets` must hold every password (see the module docs).
pub(crate) fn plan(
    config: &DockerRuntimeConfig,
    instance: &Instance,
    pg: &PostgresSpec,
    secrets: &Secrets,
) -> Result<Vec<Plan>, RuntimeError> {
    let shared = shared_env(config, instance, pg, secrets)?;
    let mut plans = vec![store(config, instance, secret(secrets, "POSTGRES_ETCD_PASSWORD")?)];
    for n in 0..=pg.replicas {
        plans.push(member(config, instance, &member_role(n), &shared));
    }
    plans.push(endpoint(config, instance));
    Ok(plans)
}

/// The password `key` of `secrets`, which a cluster cannot be made without.
fn secret<'a>(secrets: &'a Secrets, key: &str) -> Result<&'a str, RuntimeError> {
    secrets.get(key).filter(|value| !value.is_empty()).ok_or_else(|| RuntimeError::InvalidSpec {
        reason: format!("a PostgreSQL instance needs the {key} secret"),
    })
}

/// What every member of `instance` (whose spec is `pg`) shares: the settings and secrets they
/// are made with. `secrets` must hold every password (see the module docs).
pub(crate) fn shared_env(
    config: &DockerRuntimeConfig,
    instance: &Instance,
    pg: &PostgresSpec,
    secrets: &Secrets,
) -> Result<Vec<String>, RuntimeError> {
    let secret = |key: &str| secret(secrets, key);
    let app_password = secret("POSTGRES_PASSWORD")?;
    let app_user = secrets.get("POSTGRES_USER").unwrap_or("app");
    if app_user == SUPERUSER {
        return Err(RuntimeError::InvalidSpec {
            reason: format!("the application role cannot be {SUPERUSER:?}, the superuser's name"),
        });
    }
    let store_name = container_name(&config.name_prefix, instance.id, STORE);
    let etcd_password = secret("POSTGRES_ETCD_PASSWORD")?;
    let shared = [
        format!("IAAS_SCOPE={}", scope(instance.id)),
        format!("IAAS_ETCD_HOSTS={store_name}:2379"),
        format!("IAAS_SUPERUSER_PASSWORD={}", secret("POSTGRES_SUPERUSER_PASSWORD")?),
        format!("IAAS_REPLICATION_PASSWORD={}", secret("POSTGRES_REPLICATION_PASSWORD")?),
        format!("IAAS_REWIND_PASSWORD={}", secret("POSTGRES_REWIND_PASSWORD")?),
        format!("IAAS_RESTAPI_PASSWORD={}", secret("POSTGRES_PATRONI_PASSWORD")?),
        format!("IAAS_ETCD_PASSWORD={etcd_password}"),
        format!("IAAS_APP_USER={app_user}"),
        format!("IAAS_APP_PASSWORD={app_password}"),
        format!("IAAS_APP_DB={}", pg.database),
        format!("IAAS_SYNCHRONOUS={}", if pg.synchronous { "on" } else { "off" }),
        format!("PGDATA={MEMBER_DATA}/pgdata"),
        // The superuser's name, for the platform's own psql runs over the socket (the
        // connection count and replication views).
        format!("POSTGRES_USER={SUPERUSER}"),
    ];
    let mut shared = shared.to_vec();
    if let Some(s3) = &config.backup_s3 {
        shared.extend(s3_env(s3));
    }
    if let Some(restore) = &pg.restore {
        shared.push(format!("IAAS_RESTORE_STANZA={}", scope(restore.from)));
        // From the bucket every cluster shares, else from the source's volume.
        if config.backup_s3.is_none() {
            shared.push(format!("IAAS_RESTORE_REPO={RESTORE_SOURCE}"));
        }
        if let Some(at) = restore.target_time {
            // PostgreSQL's own timestamp form, in UTC.
            shared.push(format!(
                "IAAS_RESTORE_TARGET_TIME={}",
                at.format("%Y-%m-%d %H:%M:%S%.6f+00")
            ));
        }
    }
    Ok(shared)
}

/// What a member needs to keep its backups and WAL in `s3` (see the image's entrypoint).
fn s3_env(s3: &S3Repository) -> Vec<String> {
    let mut env = vec![
        format!("IAAS_S3_ENDPOINT={}", s3.endpoint),
        format!("IAAS_S3_BUCKET={}", s3.bucket),
        format!("IAAS_S3_REGION={}", s3.region),
        format!("IAAS_S3_PATH={}", s3.path),
        format!("IAAS_S3_KEY={}", s3.key),
        format!("IAAS_S3_SECRET={}", s3.secret),
    ];
    if let Some(port) = s3.port {
        env.push(format!("IAAS_S3_PORT={port}"));
    }
    if let Some(pem) = &s3.ca_pem {
        env.push(format!("IAAS_S3_CA_PEM={pem}"));
    }
    env
}

/// The store of `instance`: a single-member etcd. It holds no data of the tenant's, only the
/// election, so a store made again starts empty and the members register anew (Patroni's
/// failsafe mode keeps the primary serving while it is away). It turns authentication on with
/// `password` at its first start: the tenant's other containers share its network, and must
/// neither read nor rewrite the election and Patroni's configuration.
pub(crate) fn store(config: &DockerRuntimeConfig, instance: &Instance, password: &str) -> Plan {
    let name = container_name(&config.name_prefix, instance.id, STORE);
    Plan {
        user: Some("etcd".to_owned()),
        image: config.catalog.postgres_ha.clone(),
        env: vec![
            format!("IAAS_ETCD_HOST={name}"),
            "IAAS_ETCD_NAME=store".to_owned(),
            format!("IAAS_ETCD_PASSWORD={password}"),
        ],
        cmd: Some(vec!["etcd".to_owned()]),
        volume: Some(Volume {
            name: volume_name(&config.name_prefix, instance.id, STORE),
            target: STORE_DATA,
        }),
        ..Plan::base(config, instance, STORE)
    }
}

/// The endpoint of `instance`: HAProxy publishing the read-write and read-only ports.
pub(crate) fn endpoint(config: &DockerRuntimeConfig, instance: &Instance) -> Plan {
    Plan {
        user: Some("haproxy".to_owned()),
        image: config.catalog.postgres_ha.clone(),
        env: vec![format!("IAAS_MEMBERS_HOST={}", members_alias(instance))],
        cmd: Some(vec!["haproxy".to_owned()]),
        ports: vec![
            PortMapping::ephemeral(READ_WRITE_PORT),
            PortMapping::ephemeral(READ_ONLY_PORT),
        ],
        ..Plan::base(config, instance, ENDPOINT)
    }
}

/// The cluster a restored `instance` starts from.
pub(crate) fn restore_source(instance: &Instance) -> Option<InstanceId> {
    match &instance.spec {
        iaas_core::InstanceSpec::Postgres(pg) => pg.restore.as_ref().map(|r| r.from),
        _ => None,
    }
}

/// What a member's environment holds beside what every member shares: its name and host.
pub(crate) const MEMBER_OWN_ENV: [&str; 2] = ["IAAS_MEMBER=", "IAAS_MEMBER_HOST="];

/// Member `role` of `instance`, with the environment every member shares.
pub(crate) fn member(
    config: &DockerRuntimeConfig,
    instance: &Instance,
    role: &str,
    shared: &[String],
) -> Plan {
    let name = container_name(&config.name_prefix, instance.id, role);
    let mut env = shared.to_vec();
    env.push(format!("IAAS_MEMBER={role}"));
    env.push(format!("IAAS_MEMBER_HOST={name}"));
    Plan {
        user: Some("postgres".to_owned()),
        image: config.catalog.postgres_ha.clone(),
        env,
        cmd: Some(vec!["patroni".to_owned()]),
        volume: Some(Volume {
            name: volume_name(&config.name_prefix, instance.id, role),
            target: MEMBER_DATA,
        }),
        shared_volume: Some(backup_volume(config, instance.id)),
        read_only_volume: restore_source(instance)
            .filter(|_| config.backup_s3.is_none())
            .map(|from| Volume { target: RESTORE_SOURCE, ..backup_volume(config, from) }),
        ..Plan::base(config, instance, role)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use iaas_core::{InstanceName, InstanceSpec, Resources, UserId};

    use super::*;

    const SECRETS: [(&str, &str); 6] = [
        ("POSTGRES_PASSWORD", "app-pw-1"),
        ("POSTGRES_SUPERUSER_PASSWORD", "su-pw-2"),
        ("POSTGRES_REPLICATION_PASSWORD", "repl-pw-3"),
        ("POSTGRES_REWIND_PASSWORD", "rewind-pw-4"),
        ("POSTGRES_PATRONI_PASSWORD", "api-pw-5"),
        ("POSTGRES_ETCD_PASSWORD", "etcd-pw-6"),
    ];

    fn secrets() -> Secrets {
        SECRETS.iter().fold(Secrets::new(), |s, (k, v)| s.with(*k, *v))
    }

    fn cluster(replicas: u8, synchronous: bool) -> (Instance, PostgresSpec) {
        let mut spec = PostgresSpec::new("orders", replicas).highly_available();
        spec.synchronous = synchronous;
        let instance = Instance::new(
            UserId::new_random(),
            InstanceName::new("ledger").expect("a valid name"),
            InstanceSpec::Postgres(spec.clone()),
            Resources { millicpus: 500, memory_mib: 256 },
            Utc::now(),
        )
        .expect("a valid instance");
        (instance, spec)
    }

    fn config() -> DockerRuntimeConfig {
        let mut config = DockerRuntimeConfig::default();
        config.catalog.postgres_ha = "pg-ha:test".into();
        config
    }

    fn env<'a>(plan: &'a Plan, key: &str) -> Option<&'a str> {
        plan.env.iter().find_map(|e| e.strip_prefix(key)?.strip_prefix('='))
    }

    #[test]
    fn a_cluster_is_its_store_then_each_member_then_its_endpoint() {
        let (instance, spec) = cluster(2, false);
        let plans = plan(&config(), &instance, &spec, &secrets()).expect("a plan");
        let roles: Vec<&str> = plans.iter().map(|p| p.role.as_str()).collect();
        assert_eq!(roles, ["store", "member-0", "member-1", "member-2", "endpoint"]);
        let users: Vec<Option<&str>> = plans.iter().map(|p| p.user.as_deref()).collect();
        assert_eq!(
            users,
            [Some("etcd"), Some("postgres"), Some("postgres"), Some("postgres"), Some("haproxy")]
        );
        for p in &plans {
            assert_eq!(p.image, "pg-ha:test");
            assert!(p.capabilities.is_empty(), "{} gets no capability", p.role);
        }
    }

    #[test]
    fn only_the_endpoint_publishes_and_it_publishes_both_ports() {
        let (instance, spec) = cluster(1, false);
        let plans = plan(&config(), &instance, &spec, &secrets()).expect("a plan");
        for p in &plans[..plans.len() - 1] {
            assert!(p.ports.is_empty(), "{} publishes {:?}", p.role, p.ports);
        }
        let endpoint = plans.last().expect("an endpoint");
        assert_eq!(endpoint.ports, [PortMapping::ephemeral(5432), PortMapping::ephemeral(5433)]);
        assert_eq!(env(endpoint, "IAAS_MEMBERS_HOST"), Some("members.ledger"));
    }

    #[test]
    fn members_share_the_store_scope_and_backup_repository_and_differ_by_name() {
        let (instance, spec) = cluster(2, true);
        let plans = plan(&config(), &instance, &spec, &secrets()).expect("a plan");
        let store = &plans[0];
        for (n, member) in plans[1..4].iter().enumerate() {
            assert_eq!(env(member, "IAAS_MEMBER"), Some(format!("member-{n}").as_str()));
            assert_eq!(env(member, "IAAS_MEMBER_HOST"), Some(member.name.as_str()));
            assert_eq!(
                env(member, "IAAS_ETCD_HOSTS"),
                Some(format!("{}:2379", store.name).as_str())
            );
            assert_eq!(env(member, "IAAS_SCOPE"), Some(format!("pg-{}", instance.id).as_str()));
            assert_eq!(env(member, "IAAS_APP_DB"), Some("orders"));
            assert_eq!(env(member, "IAAS_SYNCHRONOUS"), Some("on"));
            assert_eq!(env(member, "PGDATA"), Some("/var/lib/postgresql/data/pgdata"));
            assert_eq!(member.shared_volume, Some(backup_volume(&config(), instance.id)));
            let volume = member.volume.as_ref().expect("a data volume");
            assert_eq!(volume.name, format!("iaas-{}-member-{n}-data", instance.id));
        }
    }

    #[test]
    fn with_a_bucket_members_archive_there_and_a_restore_reads_its_source_from_it() {
        let mut config = config();
        let mut s3 = S3Repository::new("s3.example.test", "pg-backups", "AKIAEXAMPLE", "s3-secret");
        s3.port = Some(8443);
        s3.ca_pem = Some("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----".into());
        config.backup_s3 = Some(s3);
        let (mut instance, mut spec) = cluster(1, false);
        let source = InstanceId::new_random();
        spec.restore = Some(iaas_core::RestoreSpec { from: source, target_time: None });
        instance.spec = InstanceSpec::Postgres(spec.clone());
        let plans = plan(&config, &instance, &spec, &secrets()).expect("a plan");
        for member in plans.iter().filter(|p| p.cmd.as_deref() == Some(&["patroni".to_owned()][..]))
        {
            for wanted in [
                "IAAS_S3_ENDPOINT=s3.example.test",
                "IAAS_S3_BUCKET=pg-backups",
                "IAAS_S3_PORT=8443",
                "IAAS_S3_KEY=AKIAEXAMPLE",
                "IAAS_S3_SECRET=s3-secret",
                "IAAS_S3_PATH=/",
            ] {
                assert!(member.env.iter().any(|e| e == wanted), "{wanted} missing");
            }
            assert!(member.env.iter().any(|e| e.starts_with("IAAS_S3_CA_PEM=-----BEGIN")));
            assert!(member.env.contains(&format!("IAAS_RESTORE_STANZA={}", scope(source))));
            assert!(!member.env.iter().any(|e| e.starts_with("IAAS_RESTORE_REPO=")));
            assert_eq!(member.read_only_volume, None, "nothing mounted from the source");
        }
        assert!(format!("{:?}", config.backup_s3).contains("<redacted>"));
        assert!(!format!("{:?}", config.backup_s3).contains("s3-secret"));
    }

    #[test]
    fn only_members_get_secrets_the_store_its_own_and_no_label_carries_one() {
        let (instance, spec) = cluster(1, false);
        let plans = plan(&config(), &instance, &spec, &secrets()).expect("a plan");
        for p in &plans {
            let member = p.role.starts_with("member-");
            for (key, value) in SECRETS {
                let expected = member || (p.role == STORE && key == "POSTGRES_ETCD_PASSWORD");
                assert_eq!(p.env.iter().any(|e| e.contains(value)), expected, "{} {key}", p.role);
                assert!(p.labels.values().all(|l| !l.contains(value)), "{}", p.role);
            }
        }
    }

    #[test]
    fn a_missing_platform_secret_or_the_superuser_as_application_role_is_refused() {
        let (instance, spec) = cluster(1, false);
        for (missing, _) in SECRETS {
            let partial = SECRETS
                .iter()
                .filter(|(k, _)| *k != missing)
                .fold(Secrets::new(), |s, (k, v)| s.with(*k, *v));
            let refused = plan(&config(), &instance, &spec, &partial);
            assert!(
                matches!(&refused, Err(RuntimeError::InvalidSpec { reason }) if reason.contains(missing)),
                "without {missing}: {refused:?}"
            );
        }
        let refused =
            plan(&config(), &instance, &spec, &secrets().with("POSTGRES_USER", "postgres"));
        assert!(matches!(refused, Err(RuntimeError::InvalidSpec { .. })));
    }
}
