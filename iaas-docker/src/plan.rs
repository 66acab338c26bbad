//! What an instance is on the engine, decided before any engine call: its containers (in the
//! order they are created), their names, labels, images, environment, command, published ports,
//! data volume, health check, limits and confinement. No engine call and no I/O: a function
//! of the instance, its secrets and the runtime's settings (only [`postgres_secrets`] draws on
//! the system's randomness, for the passwords the platform makes), so it is unit-tested here;
//! [`crate::engine`] carries it out.
//!
//! Names are derived from the instance id (`iaas-{id}-primary`, volume `iaas-{id}-primary-data`),
//! which is what makes every operation idempotent and lets a retry after a crash find what an
//! earlier attempt created. Labels say what a container is (`iaas.managed`, `iaas.kind`,
//! `iaas.instance`, `iaas.owner`, `iaas.role`) and nothing secret: anyone who may list
//! containers reads them. Secrets go to the environment only.

use std::collections::HashMap;

use bollard::models::HealthConfig;
use iaas_core::runtime::{
    LABEL_INSTANCE, LABEL_KIND, LABEL_MANAGED, LABEL_OWNER, LABEL_ROLE, PRIMARY, Secrets,
    random_password,
};
use iaas_core::{Instance, InstanceId, InstanceSpec, PortMapping, RuntimeError};

use crate::config::DockerRuntimeConfig;
use crate::confinement;

/// Where the PostgreSQL images keep their data (the volume's mount point; `PGDATA` is a
/// directory inside it so the volume's root may hold other files).
const PG_DATA: &str = "/var/lib/postgresql/data";

/// The primary's command: write the script that creates the application role into the
/// entrypoint's init directory, then run the image's entrypoint as usual. The entrypoint sources
/// the script (as the postgres OS user, against its socket-only set-up server) on the first start
/// only; later starts find the data directory initialized and skip it. psql variables carry the
/// names and the password, so nothing is interpolated by the shell or spliced into SQL.
const PRIMARY_COMMAND: &str = r#"set -e
cat > /docker-entrypoint-initdb.d/50-iaas-roles.sh <<'IAAS_SCRIPT'
psql -X -q -v ON_ERROR_STOP=1 --no-password --username "$POSTGRES_USER" --dbname postgres -v app="$IAAS_APP_USER" -v pw="$IAAS_APP_PASSWORD" -v db="$POSTGRES_DB" <<'IAAS_SQL'
CREATE ROLE :"app" LOGIN PASSWORD :'pw';
ALTER DATABASE :"db" OWNER TO :"app";
IAAS_SQL
sed -i '1i host all postgres all reject' "$PGDATA/pg_hba.conf"
IAAS_SCRIPT
exec docker-entrypoint.sh postgres
"#;

/// The superuser of every PostgreSQL instance; it never logs in over TCP.
pub(crate) const SUPERUSER: &str = "postgres";

/// A replica's command: on first start, copy the primary with `pg_basebackup -R` (which writes
/// `primary_conninfo`, naming the replica through `application_name`, and `standby.signal`),
/// then run the server. A restart finds the data and only runs the server.
const REPLICA_SCRIPT: &str = r#"set -e
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pg_basebackup -d "host=$IAAS_PRIMARY_HOST port=5432 user=replicator application_name=$IAAS_NODE_NAME" -D "$PGDATA" -R -X stream -c fast
fi
exec postgres -c cluster_name="$IAAS_NODE_NAME"
"#;

/// One container to create.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// Its role in the instance (`primary`, `replica-1`, ...).
    pub(crate) role: String,
    /// Container name (see [`container_name`]).
    pub(crate) name: String,
    /// Labels of the container and of its volume.
    pub(crate) labels: HashMap<String, String>,
    /// OS user the container's command runs as (`None`: the image's).
    pub(crate) user: Option<String>,
    pub(crate) image: String,
    pub(crate) env: Vec<String>,
    pub(crate) cmd: Option<Vec<String>>,
    pub(crate) ports: Vec<PortMapping>,
    /// The named volume holding its data, if it keeps any.
    pub(crate) volume: Option<Volume>,
    /// A volume it shares with other containers of its instance (a highly available
    /// cluster's backup repository).
    pub(crate) shared_volume: Option<Volume>,
    /// Another instance's volume it reads and never writes (the backup repository a restored
    /// cluster starts from), mounted read-only.
    pub(crate) read_only_volume: Option<Volume>,
    pub(crate) healthcheck: Option<HealthConfig>,
    /// Capabilities added back after all are dropped.
    pub(crate) capabilities: &'static [&'static str],
    /// What the container may use.
    pub(crate) limits: Limits,
}

impl Plan {
    /// The container of `instance` playing `role`, with what every container gets (name,
    /// labels, limits, the kind's confinement) and nothing else.
    pub(crate) fn base(config: &DockerRuntimeConfig, instance: &Instance, role: &str) -> Self {
        Self {
            role: role.to_owned(),
            name: container_name(&config.name_prefix, instance.id, role),
            labels: labels(instance, role),
            user: None,
            image: String::new(),
            env: Vec::new(),
            cmd: None,
            ports: Vec::new(),
            volume: None,
            shared_volume: None,
            read_only_volume: None,
            healthcheck: None,
            capabilities: confinement::capabilities(instance.kind(), role == PRIMARY),
            limits: Limits::of(config, instance),
        }
    }
}

/// A named volume and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Volume {
    pub(crate) name: String,
    pub(crate) target: &'static str,
}

impl Volume {
    /// The data volume of the PostgreSQL node of `instance` playing `role`.
    fn of(config: &DockerRuntimeConfig, instance: &Instance, role: &str) -> Self {
        Self { name: volume_name(&config.name_prefix, instance.id, role), target: PG_DATA }
    }
}

/// What one container may use: the instance's resources (each node of a cluster gets all of
/// them) and the runtime's process limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Memory, in bytes; swap is limited to the same, so there is none beyond it.
    pub(crate) memory_bytes: i64,
    /// CPU, in billionths of a core.
    pub(crate) nano_cpus: i64,
    /// Most processes.
    pub(crate) pids: i64,
}

impl Limits {
    fn of(config: &DockerRuntimeConfig, instance: &Instance) -> Self {
        Self {
            memory_bytes: i64::from(instance.resources.memory_mib) * 1024 * 1024,
            nano_cpus: i64::from(instance.resources.millicpus) * 1_000_000,
            pids: config.pids_limit,
        }
    }
}

/// The container of `instance` playing `role`: `{prefix}-{instance}-{role}`.
pub(crate) fn container_name(prefix: &str, instance: InstanceId, role: &str) -> String {
    format!("{prefix}-{instance}-{role}")
}

/// The data volume of the container of `instance` playing `role`.
pub(crate) fn volume_name(prefix: &str, instance: InstanceId, role: &str) -> String {
    format!("{}-data", container_name(prefix, instance, role))
}

/// What a container of `instance` playing `role` is labelled with.
pub(crate) fn labels(instance: &Instance, role: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_KIND.to_owned(), instance.kind().as_str().to_owned()),
        (LABEL_INSTANCE.to_owned(), instance.id.to_string()),
        (LABEL_OWNER.to_owned(), instance.owner.to_string()),
        (LABEL_ROLE.to_owned(), role.to_owned()),
    ])
}

/// The secrets a PostgreSQL instance is provisioned with: the caller's (`POSTGRES_PASSWORD`,
/// the application role's, is required), plus a random `POSTGRES_SUPERUSER_PASSWORD` and
/// `POSTGRES_REPLICATION_PASSWORD` unless the caller chose them, and for a highly available
/// cluster its rewind and Patroni REST passwords too. None of those is ever returned to the
/// tenant.
pub(crate) fn postgres_secrets(secrets: &Secrets, ha: bool) -> Result<Secrets, RuntimeError> {
    let mut completed = secrets.clone();
    let platform: &[&str] = if ha { &crate::plan_ha::PLATFORM_SECRETS } else { &[] };
    for key in ["POSTGRES_SUPERUSER_PASSWORD", "POSTGRES_REPLICATION_PASSWORD"]
        .iter()
        .chain(platform)
        .copied()
    {
        if secrets.get(key).is_none_or(str::is_empty) {
            let password =
                random_password().map_err(|reason| RuntimeError::InvalidSpec { reason })?;
            completed = completed.with(key, password);
        }
    }
    Ok(completed)
}

/// The checks `ContainerRuntime::admit` makes, without any engine call: the spec and the
/// resources are valid, the kind is one this runtime runs, chosen host ports pass the policy.
pub(crate) fn check(config: &DockerRuntimeConfig, instance: &Instance) -> Result<(), RuntimeError> {
    instance.spec.validate().map_err(|err| match err {
        iaas_core::Error::Unsupported { what } => RuntimeError::Unsupported { what },
        other => RuntimeError::InvalidSpec { reason: other.to_string() },
    })?;
    // Checked here too: an instance may come from storage or a caller that skipped
    // `Instance::new`, and the engine would accept limits PostgreSQL cannot start under.
    instance
        .resources
        .validate()
        .map_err(|err| RuntimeError::InvalidSpec { reason: err.to_string() })?;
    config.host_ports.check(&instance.spec).map_err(|err| match err {
        iaas_core::Error::PortNotAllowed { port, reason } => {
            RuntimeError::PortNotAllowed { port, reason }
        }
        other => RuntimeError::InvalidSpec { reason: other.to_string() },
    })
}

/// The containers `instance` needs, in the order they are created (a PostgreSQL primary
/// before its replicas), with `secrets` completed by [`postgres_secrets`] for PostgreSQL.
/// Refused before anything is created: what [`check`] refuses, and a PostgreSQL instance
/// without its passwords or whose application role would be the superuser.
pub(crate) fn plan(
    config: &DockerRuntimeConfig,
    instance: &Instance,
    secrets: &Secrets,
) -> Result<Vec<Plan>, RuntimeError> {
    check(config, instance)?;
    let plan = match &instance.spec {
        InstanceSpec::Postgres(pg) if pg.ha => {
            return crate::plan_ha::plan(config, instance, pg, secrets);
        }
        InstanceSpec::Postgres(pg) => {
            let password =
                secrets.get("POSTGRES_PASSWORD").ok_or_else(|| RuntimeError::InvalidSpec {
                    reason: "a PostgreSQL instance needs the POSTGRES_PASSWORD secret".to_owned(),
                })?;
            let user = secrets.get("POSTGRES_USER").unwrap_or("app");
            if user == SUPERUSER {
                return Err(RuntimeError::InvalidSpec {
                    reason: format!(
                        "the application role cannot be {SUPERUSER:?}, the superuser's name"
                    ),
                });
            }
            let missing = |key: &str| RuntimeError::InvalidSpec {
                reason: format!("a PostgreSQL instance needs the {key} secret"),
            };
            let superuser_password = secrets
                .get("POSTGRES_SUPERUSER_PASSWORD")
                .ok_or_else(|| missing("POSTGRES_SUPERUSER_PASSWORD"))?;
            let replication_password = secrets
                .get("POSTGRES_REPLICATION_PASSWORD")
                .ok_or_else(|| missing("POSTGRES_REPLICATION_PASSWORD"))?;
            // What every node shares; the stats and replication views run psql as
            // `$POSTGRES_USER` over the socket.
            let env = vec![
                format!("POSTGRES_USER={SUPERUSER}"),
                format!("POSTGRES_DB={}", pg.database),
                format!("PGDATA={PG_DATA}/pgdata"),
            ];
            let mut primary_env = env.clone();
            primary_env.extend([
                format!("POSTGRES_PASSWORD={superuser_password}"),
                format!("IAAS_APP_USER={user}"),
                format!("IAAS_APP_PASSWORD={password}"),
            ]);
            let healthcheck = HealthConfig {
                test: Some(vec![
                    "CMD-SHELL".into(),
                    format!("pg_isready -U {SUPERUSER} -d {}", pg.database),
                ]),
                interval: Some(2_000_000_000),
                timeout: Some(2_000_000_000),
                retries: Some(30),
                ..Default::default()
            };
            let mut plans = vec![Plan {
                user: None,
                image: config.catalog.postgres.clone(),
                env: primary_env,
                cmd: Some(vec!["sh".to_owned(), "-c".to_owned(), PRIMARY_COMMAND.to_owned()]),
                ports: vec![PortMapping::ephemeral(5432)],
                volume: Some(Volume::of(config, instance, PRIMARY)),
                healthcheck: Some(healthcheck.clone()),
                ..Plan::base(config, instance, PRIMARY)
            }];
            for n in 1..=pg.replicas {
                let role = format!("replica-{n}");
                let mut env = env.clone();
                env.push(format!("PGPASSWORD={replication_password}"));
                env.push(format!("IAAS_NODE_NAME={role}"));
                // The primary's container name: unique on the user's network, where
                // another cluster's primary may be up beside it.
                env.push(format!(
                    "IAAS_PRIMARY_HOST={}",
                    container_name(&config.name_prefix, instance.id, PRIMARY)
                ));
                plans.push(Plan {
                    // Both the official image and the local one run a non-`postgres`
                    // command as given, so the replica's script runs as the postgres OS
                    // user without gosu/su/runuser.
                    user: Some("postgres".to_owned()),
                    image: config.catalog.postgres.clone(),
                    env,
                    cmd: Some(vec!["sh".to_owned(), "-c".to_owned(), REPLICA_SCRIPT.to_owned()]),
                    ports: vec![PortMapping::ephemeral(5432)],
                    volume: Some(Volume::of(config, instance, &role)),
                    healthcheck: Some(healthcheck.clone()),
                    ..Plan::base(config, instance, &role)
                });
            }
            return Ok(plans);
        }
        InstanceSpec::Nginx(nginx) => {
            let (env, cmd) = match &nginx.site_config {
                // The site is handed over in an environment variable and written by the
                // container's shell at start, so no file is copied in and no host path is
                // mounted.
                Some(site) => (
                    vec![format!("IAAS_SITE_CONFIG={site}")],
                    Some(vec![
                        "sh".to_owned(),
                        "-c".to_owned(),
                        "printf '%s\\n' \"$IAAS_SITE_CONFIG\" > /etc/nginx/conf.d/default.conf && exec nginx -g 'daemon off;'"
                            .to_owned(),
                    ]),
                ),
                None => (Vec::new(), None),
            };
            Plan {
                image: config.catalog.nginx.clone(),
                env,
                cmd,
                ports: vec![PortMapping::ephemeral(80)],
                ..Plan::base(config, instance, PRIMARY)
            }
        }
        InstanceSpec::Docker(docker) => Plan {
            image: docker.image.clone(),
            env: docker.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cmd: docker.command.clone(),
            ports: docker.ports.clone(),
            ..Plan::base(config, instance, PRIMARY)
        },
        InstanceSpec::K8s => {
            return Err(RuntimeError::Unsupported {
                what: "k8s instances need a Kubernetes runtime".to_owned(),
            });
        }
    };
    Ok(vec![plan])
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use iaas_core::{DockerSpec, InstanceName, NginxSpec, PostgresSpec, Resources, UserId};

    use super::*;

    const APP_PASSWORD: &str = "app-pw-4f9a";
    const SUPERUSER_PASSWORD: &str = "super-pw-77c1";
    const REPLICATION_PASSWORD: &str = "repl-pw-0b3e";

    fn instance(spec: InstanceSpec) -> Instance {
        Instance::new(
            UserId::new_random(),
            InstanceName::new("orders").expect("a valid name"),
            spec,
            Resources { millicpus: 500, memory_mib: 256 },
            Utc::now(),
        )
        .expect("a valid instance")
    }

    fn postgres(replicas: u8) -> Instance {
        instance(InstanceSpec::Postgres(PostgresSpec::new("orders", replicas)))
    }

    fn all_postgres_secrets() -> Secrets {
        Secrets::new()
            .with("POSTGRES_PASSWORD", APP_PASSWORD)
            .with("POSTGRES_SUPERUSER_PASSWORD", SUPERUSER_PASSWORD)
            .with("POSTGRES_REPLICATION_PASSWORD", REPLICATION_PASSWORD)
    }

    fn config() -> DockerRuntimeConfig {
        let mut config = DockerRuntimeConfig::default();
        config.catalog.postgres = "pg:test".into();
        config.catalog.nginx = "nginx:test".into();
        config
    }

    fn has(plan: &Plan, var: &str) -> bool {
        plan.env.iter().any(|e| e == var)
    }

    #[test]
    fn a_postgres_cluster_is_its_primary_then_each_replica_in_order() {
        let pg = postgres(2);
        let plans = plan(&config(), &pg, &all_postgres_secrets()).expect("a plan");
        let roles: Vec<&str> = plans.iter().map(|p| p.role.as_str()).collect();
        assert_eq!(roles, ["primary", "replica-1", "replica-2"]);
        for p in &plans {
            assert_eq!(p.name, format!("iaas-{}-{}", pg.id, p.role));
            assert_eq!(
                p.volume,
                Some(Volume {
                    name: format!("iaas-{}-{}-data", pg.id, p.role),
                    target: "/var/lib/postgresql/data",
                })
            );
            assert_eq!(p.image, "pg:test");
            assert_eq!(p.ports, [PortMapping::ephemeral(5432)]);
            assert!(p.healthcheck.is_some(), "{}: no health check", p.role);
            assert!(has(p, "POSTGRES_USER=postgres"), "{}: {:?}", p.role, p.env);
            assert!(has(p, "POSTGRES_DB=orders"));
            assert!(has(p, "PGDATA=/var/lib/postgresql/data/pgdata"));
        }
        let (primary, replicas) = (&plans[0], &plans[1..]);
        assert_eq!(primary.user, None, "the image's entrypoint picks its user");
        assert!(has(primary, &format!("POSTGRES_PASSWORD={SUPERUSER_PASSWORD}")));
        assert!(has(primary, "IAAS_APP_USER=app"));
        assert!(has(primary, &format!("IAAS_APP_PASSWORD={APP_PASSWORD}")));
        assert_eq!(primary.capabilities, confinement::capabilities(pg.kind(), true));
        for replica in replicas {
            assert_eq!(replica.user.as_deref(), Some("postgres"));
            assert!(has(replica, &format!("PGPASSWORD={REPLICATION_PASSWORD}")));
            assert!(has(replica, &format!("IAAS_NODE_NAME={}", replica.role)));
            assert!(has(replica, &format!("IAAS_PRIMARY_HOST={}", primary.name)));
            assert!(
                !replica
                    .env
                    .iter()
                    .any(|e| e.contains(APP_PASSWORD) || e.contains(SUPERUSER_PASSWORD)),
                "a replica needs only the replication password: {:?}",
                replica.env
            );
            assert_eq!(replica.capabilities, confinement::capabilities(pg.kind(), false));
        }
    }

    #[test]
    fn a_single_postgres_node_is_its_primary_alone() {
        let plans = plan(&config(), &postgres(0), &all_postgres_secrets()).expect("a plan");
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].role, PRIMARY);
    }

    #[test]
    fn the_application_role_is_the_callers_choice_but_never_the_superuser() {
        let secrets = all_postgres_secrets().with("POSTGRES_USER", "shop");
        let plans = plan(&config(), &postgres(0), &secrets).expect("a plan");
        assert!(has(&plans[0], "IAAS_APP_USER=shop"));

        let secrets = all_postgres_secrets().with("POSTGRES_USER", "postgres");
        let refused = plan(&config(), &postgres(0), &secrets);
        assert!(
            matches!(&refused, Err(RuntimeError::InvalidSpec { reason }) if reason.contains("superuser")),
            "{refused:?}"
        );
    }

    #[test]
    fn postgres_without_its_passwords_is_refused() {
        for missing in
            ["POSTGRES_PASSWORD", "POSTGRES_SUPERUSER_PASSWORD", "POSTGRES_REPLICATION_PASSWORD"]
        {
            let mut secrets = Secrets::new();
            for key in [
                "POSTGRES_PASSWORD",
                "POSTGRES_SUPERUSER_PASSWORD",
                "POSTGRES_REPLICATION_PASSWORD",
            ] {
                if key != missing {
                    secrets = secrets.with(key, "pw");
                }
            }
            let refused = plan(&config(), &postgres(1), &secrets);
            assert!(
                matches!(&refused, Err(RuntimeError::InvalidSpec { reason }) if reason.contains(missing)),
                "without {missing}: {refused:?}"
            );
        }
    }

    #[test]
    fn a_highly_available_cluster_also_gets_its_rewind_and_patroni_passwords() {
        let given = Secrets::new().with("POSTGRES_PASSWORD", APP_PASSWORD);
        let plain = postgres_secrets(&given, false).expect("randomness");
        assert_eq!(plain.get("POSTGRES_REWIND_PASSWORD"), None);
        let ha = postgres_secrets(&given, true).expect("randomness");
        let rewind = ha.get("POSTGRES_REWIND_PASSWORD").expect("made");
        let api = ha.get("POSTGRES_PATRONI_PASSWORD").expect("made");
        assert_ne!(rewind, api);
        assert_eq!(rewind.len(), 24);
    }

    #[test]
    fn the_platforms_own_postgres_passwords_are_made_unless_given() {
        let given = Secrets::new().with("POSTGRES_PASSWORD", APP_PASSWORD);
        let completed = postgres_secrets(&given, false).expect("randomness");
        assert_eq!(completed.get("POSTGRES_PASSWORD"), Some(APP_PASSWORD));
        let superuser = completed.get("POSTGRES_SUPERUSER_PASSWORD").expect("made");
        let replication = completed.get("POSTGRES_REPLICATION_PASSWORD").expect("made");
        assert_eq!(superuser.len(), 24);
        assert_ne!(superuser, replication);
        assert_ne!(superuser, APP_PASSWORD);

        let kept = postgres_secrets(&all_postgres_secrets(), false).expect("randomness");
        assert_eq!(kept, all_postgres_secrets(), "chosen passwords are kept");
    }

    #[test]
    fn secrets_are_never_in_labels() {
        let plans = plan(&config(), &postgres(1), &all_postgres_secrets()).expect("a plan");
        for p in &plans {
            for value in p.labels.values() {
                for secret in [APP_PASSWORD, SUPERUSER_PASSWORD, REPLICATION_PASSWORD] {
                    assert!(!value.contains(secret), "{}: label {value:?} holds a secret", p.role);
                }
            }
        }
    }

    #[test]
    fn every_container_is_labelled_with_what_it_is() {
        let pg = postgres(1);
        let plans = plan(&config(), &pg, &all_postgres_secrets()).expect("a plan");
        for p in &plans {
            let expected: HashMap<String, String> = [
                (LABEL_MANAGED, "true".to_owned()),
                (LABEL_KIND, "postgres".to_owned()),
                (LABEL_INSTANCE, pg.id.to_string()),
                (LABEL_OWNER, pg.owner.to_string()),
                (LABEL_ROLE, p.role.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            assert_eq!(p.labels, expected);
        }
    }

    #[test]
    fn every_node_gets_the_instances_resources_and_the_process_limit() {
        let mut config = config();
        config.pids_limit = 64;
        let plans = plan(&config, &postgres(1), &all_postgres_secrets()).expect("a plan");
        for p in &plans {
            assert_eq!(
                p.limits,
                Limits { memory_bytes: 256 * 1024 * 1024, nano_cpus: 500_000_000, pids: 64 }
            );
        }
    }

    #[test]
    fn nginx_serves_port_80_and_its_site_from_the_environment() {
        let plain =
            plan(&config(), &instance(InstanceSpec::Nginx(NginxSpec::default())), &Secrets::new())
                .expect("a plan");
        assert_eq!(plain.len(), 1);
        let p = &plain[0];
        assert_eq!((p.role.as_str(), p.image.as_str()), (PRIMARY, "nginx:test"));
        assert_eq!(p.ports, [PortMapping::ephemeral(80)]);
        assert_eq!((p.volume.clone(), p.cmd.clone(), p.healthcheck.clone()), (None, None, None));
        assert!(p.env.is_empty());
        assert_eq!(p.capabilities, confinement::capabilities(iaas_core::InstanceKind::Nginx, true));

        let site = "server { listen 80; }";
        let nginx = instance(InstanceSpec::Nginx(NginxSpec { site_config: Some(site.into()) }));
        let with_site = plan(&config(), &nginx, &Secrets::new()).expect("a plan");
        assert_eq!(with_site[0].env, [format!("IAAS_SITE_CONFIG={site}")]);
        let cmd = with_site[0].cmd.clone().expect("a command that writes the site");
        assert!(cmd.last().is_some_and(|script| script.contains("$IAAS_SITE_CONFIG")), "{cmd:?}");
    }

    #[test]
    fn a_generic_container_runs_its_spec_as_given() {
        let spec = DockerSpec {
            image: "busybox:1.36".into(),
            env: [("MODE".to_owned(), "batch".to_owned())].into(),
            ports: vec![PortMapping::ephemeral(8080)],
            command: Some(vec!["sleep".into(), "60".into()]),
        };
        let plans = plan(&config(), &instance(InstanceSpec::Docker(spec)), &Secrets::new())
            .expect("a plan");
        let p = &plans[0];
        assert_eq!(p.image, "busybox:1.36");
        assert_eq!(p.env, ["MODE=batch"]);
        assert_eq!(p.ports, [PortMapping::ephemeral(8080)]);
        assert_eq!(p.cmd.as_deref(), Some(&["sleep".to_owned(), "60".to_owned()][..]));
        assert_eq!(p.volume, None);
        assert!(p.capabilities.is_empty(), "a tenant's own image gets no capability back");
    }

    #[test]
    fn a_host_port_outside_the_policy_is_refused() {
        let spec = DockerSpec {
            image: "busybox:1.36".into(),
            env: Default::default(),
            ports: vec![PortMapping { container: 80, host: Some(8080) }],
            command: None,
        };
        let refused = plan(&config(), &instance(InstanceSpec::Docker(spec)), &Secrets::new());
        assert!(
            matches!(refused, Err(RuntimeError::PortNotAllowed { port: 8080, .. })),
            "{refused:?}"
        );
    }

    #[test]
    fn resources_postgres_cannot_start_under_are_refused() {
        let mut pg = postgres(0);
        pg.resources.memory_mib = 1;
        let refused = plan(&config(), &pg, &all_postgres_secrets());
        assert!(matches!(refused, Err(RuntimeError::InvalidSpec { .. })), "{refused:?}");
    }

    #[test]
    fn kubernetes_instances_are_left_to_another_runtime() {
        let refused = plan(&config(), &instance_unchecked(InstanceSpec::K8s), &Secrets::new());
        assert!(matches!(refused, Err(RuntimeError::Unsupported { .. })), "{refused:?}");
    }

    /// An instance as storage may hold it, whether or not `Instance::new` would accept it.
    fn instance_unchecked(spec: InstanceSpec) -> Instance {
        let mut made = postgres(0);
        made.spec = spec;
        made
    }

    #[test]
    fn names_follow_the_prefix_the_instance_and_the_role() {
        let id = postgres(0).id;
        assert_eq!(container_name("iaas", id, "replica-1"), format!("iaas-{id}-replica-1"));
        assert_eq!(volume_name("edge", id, "primary"), format!("edge-{id}-primary-data"));
        let mut config = config();
        config.name_prefix = "edge".into();
        let pg = postgres(1);
        let plans = plan(&config, &pg, &all_postgres_secrets()).expect("a plan");
        assert!(plans.iter().all(|p| p.name.starts_with(&format!("edge-{}-", pg.id))));
        assert!(has(&plans[1], &format!("IAAS_PRIMARY_HOST=edge-{}-primary", pg.id)));
    }
}
