//! [`ContainerRuntime`] on a Docker engine, through bollard.
//!
//! Names are derived from the instance id (`iaas-{id}-primary`, volume `iaas-{id}-primary-data`)
//! and the owner (network `iaas-user-{owner}`, see [`crate::network`]), which is what makes
//! every operation idempotent and lets a retry after a crash find what an earlier attempt
//! created. Published ports bind to loopback unless
//! configured otherwise, chosen host ports must pass the [`HostPortPolicy`], and every
//! container is confined as [`crate::confinement`] describes.
//!
//! # PostgreSQL roles
//!
//! The tenant gets an application role (`app` unless the `POSTGRES_USER` secret names another)
//! that owns its database and is not a superuser, so `COPY ... FROM PROGRAM`, untrusted
//! languages and server files stay out of its reach. The superuser is `postgres`, with a random
//! password that never leaves the platform, and it cannot log in over the network at all
//! (`pg_hba.conf` rejects it on TCP); the platform reaches it inside the container over the
//! Unix socket. The application role is made while the image's entrypoint initializes the
//! cluster, by a script the container writes into `/docker-entrypoint-initdb.d` at start (no
//! host file is mounted), so the server accepts TCP connections only once the role exists.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Mount, MountType,
    NetworkingConfig, PortBinding, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder, RestartContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use iaas_core::{HostPortPolicy, Instance, InstanceId, InstanceSpec, PortMapping, UserId};

use crate::catalog::ImageCatalog;
use crate::confinement;
use crate::connection::EngineConnection;
use crate::error::from_bollard;
use crate::exec::{self, ExecOutput};
use iaas_core::PrimaryState;
use iaas_core::RuntimeError;
use iaas_core::runtime::{
    ContainerRef, ContainerRuntime, LABEL_INSTANCE, LABEL_KIND, LABEL_MANAGED, LABEL_OWNER,
    LABEL_ROLE, ManagedContainer, Secrets, random_password,
};

use iaas_core::runtime::PRIMARY;

/// Where the PostgreSQL images keep their data (the volume's mount point; `PGDATA` is a
/// directory inside it so the volume's root may hold other files).
const PG_DATA: &str = "/var/lib/postgresql/data";

/// Run on the primary (as the postgres OS user, over the local socket) before replicas are
/// created: the replication role, with its password taken from the environment through a psql
/// variable so it is neither in a command line nor interpolated by the shell, and the
/// `pg_hba.conf` line that lets it stream (`host all` does not cover replication).
const PRIMARY_REPLICATION_SCRIPT: &str = r#"set -e
printf '%s\n' "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'pw';" | psql -X -q -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -v pw="$IAAS_REPLICATION_PASSWORD"
printf '%s\n' 'host replication replicator all scram-sha-256' >> "$PGDATA/pg_hba.conf"
psql -X -q -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -c 'SELECT pg_reload_conf()' >/dev/null
"#;

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

/// What every command the platform runs as the superuser gets in its environment.
const SAFE_SEARCH_PATH: &str = "PGOPTIONS=-c search_path=pg_catalog,pg_temp";

/// The superuser of every PostgreSQL instance; it never logs in over TCP.
const SUPERUSER: &str = "postgres";

/// A replica's command: on first start, copy the primary with `pg_basebackup -R` (which writes
/// `primary_conninfo`, naming the replica through `application_name`, and `standby.signal`),
/// then run the server. A restart finds the data and only runs the server.
const REPLICA_SCRIPT: &str = r#"set -e
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pg_basebackup -d "host=$IAAS_PRIMARY_HOST port=5432 user=replicator application_name=$IAAS_NODE_NAME" -D "$PGDATA" -R -X stream -c fast
fi
exec postgres -c cluster_name="$IAAS_NODE_NAME"
"#;

/// The secrets a PostgreSQL instance is provisioned with: the caller's (`POSTGRES_PASSWORD`,
/// the application role's, is required), plus a random `POSTGRES_SUPERUSER_PASSWORD` and
/// `POSTGRES_REPLICATION_PASSWORD` unless the caller chose them. Neither of those two is ever
/// returned to the tenant.
fn postgres_secrets(secrets: &Secrets) -> Result<Secrets, RuntimeError> {
    let mut completed = secrets.clone();
    for key in ["POSTGRES_SUPERUSER_PASSWORD", "POSTGRES_REPLICATION_PASSWORD"] {
        if secrets.get(key).is_none_or(str::is_empty) {
            let password =
                random_password().map_err(|reason| RuntimeError::InvalidSpec { reason })?;
            completed = completed.with(key, password);
        }
    }
    Ok(completed)
}

/// Settings of the Docker runtime.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DockerRuntimeConfig {
    /// Images per kind.
    pub catalog: ImageCatalog,
    /// Host address published ports bind to (default `127.0.0.1`: nothing is reachable from
    /// other machines unless configured).
    pub publish_host: String,
    /// Grace between SIGTERM and SIGKILL on stop (default 10 s).
    pub stop_timeout: Duration,
    /// Prefix of every container, volume and network name (default `iaas`).
    pub name_prefix: String,
    /// How long provisioning waits for a PostgreSQL primary to accept connections before it
    /// creates the replicas (default 120 s).
    pub ready_timeout: Duration,
    /// How long one command run inside a container (`psql`, `pg_isready`) may take
    /// (default 30 s).
    pub exec_timeout: Duration,
    /// Which host ports a spec may choose (default [`HostPortPolicy::default`]: 20000-29999,
    /// the platform's well-known ports refused).
    pub host_ports: HostPortPolicy,
    /// Most processes one container may run (default 512).
    pub pids_limit: i64,
}

impl Default for DockerRuntimeConfig {
    fn default() -> Self {
        Self {
            catalog: ImageCatalog::default(),
            publish_host: "127.0.0.1".to_owned(),
            stop_timeout: Duration::from_secs(10),
            name_prefix: "iaas".to_owned(),
            ready_timeout: Duration::from_secs(120),
            exec_timeout: Duration::from_secs(30),
            host_ports: HostPortPolicy::default(),
            pids_limit: confinement::DEFAULT_PIDS_LIMIT,
        }
    }
}

/// The Docker engine runtime.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    pub(crate) engine: EngineConnection,
    pub(crate) config: DockerRuntimeConfig,
}

/// One container to create.
struct Plan {
    role: String,
    /// OS user the container's command runs as (`None`: the image's).
    user: Option<String>,
    image: String,
    env: Vec<String>,
    cmd: Option<Vec<String>>,
    ports: Vec<PortMapping>,
    data_dir: Option<&'static str>,
    healthcheck: Option<HealthConfig>,
    /// Capabilities added back after all are dropped.
    capabilities: &'static [&'static str],
}

impl DockerRuntime {
    /// A runtime on `engine`: a bollard client (see `bollard::Docker::connect_with_defaults`,
    /// which honours `DOCKER_HOST`), or an [`EngineConnection`] that connects on first use, so
    /// the runtime can be built before the engine runs.
    pub fn new(engine: impl Into<EngineConnection>, config: DockerRuntimeConfig) -> Self {
        Self { engine: engine.into(), config }
    }

    /// The engine this runtime drives.
    pub fn engine(&self) -> &EngineConnection {
        &self.engine
    }

    /// The engine's client; [`RuntimeError::NoEngine`] while its socket does not exist.
    pub(crate) fn client(&self) -> Result<Docker, RuntimeError> {
        self.engine.client()
    }

    fn container_name(&self, instance: InstanceId, role: &str) -> String {
        format!("{}-{instance}-{role}", self.config.name_prefix)
    }

    fn volume_name(&self, instance: InstanceId, role: &str) -> String {
        format!("{}-data", self.container_name(instance, role))
    }

    fn labels(instance: &Instance, role: &str) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_KIND.to_owned(), instance.kind().as_str().to_owned()),
            (LABEL_INSTANCE.to_owned(), instance.id.to_string()),
            (LABEL_OWNER.to_owned(), instance.owner.to_string()),
            (LABEL_ROLE.to_owned(), role.to_owned()),
        ])
    }

    /// The checks [`ContainerRuntime::admit`] makes, without any engine call.
    fn check(&self, instance: &Instance) -> Result<(), RuntimeError> {
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
        self.config.host_ports.check(&instance.spec).map_err(|err| match err {
            iaas_core::Error::PortNotAllowed { port, reason } => {
                RuntimeError::PortNotAllowed { port, reason }
            }
            other => RuntimeError::InvalidSpec { reason: other.to_string() },
        })
    }

    fn plan(&self, instance: &Instance, secrets: &Secrets) -> Result<Vec<Plan>, RuntimeError> {
        self.check(instance)?;
        let plan = match &instance.spec {
            InstanceSpec::Postgres(pg) => {
                let password =
                    secrets.get("POSTGRES_PASSWORD").ok_or_else(|| RuntimeError::InvalidSpec {
                        reason: "a PostgreSQL instance needs the POSTGRES_PASSWORD secret"
                            .to_owned(),
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
                    role: PRIMARY.to_owned(),
                    user: None,
                    image: self.config.catalog.postgres.clone(),
                    env: primary_env,
                    cmd: Some(vec!["sh".to_owned(), "-c".to_owned(), PRIMARY_COMMAND.to_owned()]),
                    ports: vec![PortMapping::ephemeral(5432)],
                    data_dir: Some(PG_DATA),
                    healthcheck: Some(healthcheck.clone()),
                    capabilities: confinement::capabilities(instance.kind(), true),
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
                        self.container_name(instance.id, PRIMARY)
                    ));
                    plans.push(Plan {
                        role,
                        // Both the official image and the local one run a non-`postgres`
                        // command as given, so the replica's script runs as the postgres OS
                        // user without gosu/su/runuser.
                        user: Some("postgres".to_owned()),
                        image: self.config.catalog.postgres.clone(),
                        env,
                        cmd: Some(vec![
                            "sh".to_owned(),
                            "-c".to_owned(),
                            REPLICA_SCRIPT.to_owned(),
                        ]),
                        ports: vec![PortMapping::ephemeral(5432)],
                        data_dir: Some(PG_DATA),
                        healthcheck: Some(healthcheck.clone()),
                        capabilities: confinement::capabilities(instance.kind(), false),
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
                    role: PRIMARY.to_owned(),
                    user: None,
                    image: self.config.catalog.nginx.clone(),
                    env,
                    cmd,
                    ports: vec![PortMapping::ephemeral(80)],
                    data_dir: None,
                    healthcheck: None,
                    capabilities: confinement::capabilities(instance.kind(), true),
                }
            }
            InstanceSpec::Docker(docker) => Plan {
                role: PRIMARY.to_owned(),
                user: None,
                image: docker.image.clone(),
                env: docker.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                cmd: docker.command.clone(),
                ports: docker.ports.clone(),
                data_dir: None,
                healthcheck: None,
                capabilities: confinement::capabilities(instance.kind(), true),
            },
            InstanceSpec::K8s => {
                return Err(RuntimeError::Unsupported {
                    what: "k8s instances need a Kubernetes runtime".to_owned(),
                });
            }
        };
        Ok(vec![plan])
    }

    pub(crate) async fn containers_of(
        &self,
        instance: InstanceId,
    ) -> Result<Vec<bollard::models::ContainerSummary>, RuntimeError> {
        let label = format!("{LABEL_INSTANCE}={instance}");
        let filters = HashMap::from([("label", vec![label.as_str()])]);
        self.client()?
            .list_containers(Some(
                ListContainersOptionsBuilder::new().all(true).filters(&filters).build(),
            ))
            .await
            .map_err(|err| from_bollard(format!("listing containers of instance {instance}"), err))
    }

    async fn create_one(
        &self,
        instance: &Instance,
        plan: &Plan,
        network: &str,
    ) -> Result<ContainerRef, RuntimeError> {
        let name = self.container_name(instance.id, &plan.role);
        let labels = Self::labels(instance, &plan.role);
        let mut mounts = Vec::new();
        if let Some(target) = plan.data_dir {
            let volume = self.volume_name(instance.id, &plan.role);
            self.client()?
                .create_volume(VolumeCreateRequest {
                    name: Some(volume.clone()),
                    labels: Some(labels.clone()),
                    ..Default::default()
                })
                .await
                .map_err(|err| from_bollard(format!("creating volume {volume}"), err))?;
            mounts.push(Mount {
                target: Some(target.to_owned()),
                source: Some(volume),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            });
        }
        let port_bindings = plan
            .ports
            .iter()
            .map(|port| {
                let binding = PortBinding {
                    host_ip: Some(self.config.publish_host.clone()),
                    host_port: port.host.map(|host| host.to_string()),
                };
                (format!("{}/tcp", port.container), Some(vec![binding]))
            })
            .collect();
        let memory = i64::from(instance.resources.memory_mib) * 1024 * 1024;
        let body = ContainerCreateBody {
            image: Some(plan.image.clone()),
            user: plan.user.clone(),
            env: Some(plan.env.clone()),
            cmd: plan.cmd.clone(),
            labels: Some(labels),
            exposed_ports: Some(
                plan.ports.iter().map(|p| format!("{}/tcp", p.container)).collect(),
            ),
            healthcheck: plan.healthcheck.clone(),
            host_config: Some(HostConfig {
                memory: Some(memory),
                // No swap beyond the memory limit.
                memory_swap: Some(memory),
                nano_cpus: Some(i64::from(instance.resources.millicpus) * 1_000_000),
                pids_limit: Some(self.config.pids_limit),
                privileged: Some(false),
                cap_drop: Some(vec!["ALL".to_owned()]),
                cap_add: Some(plan.capabilities.iter().map(|cap| (*cap).to_owned()).collect()),
                security_opt: Some(
                    confinement::SECURITY_OPTIONS.iter().map(|opt| (*opt).to_owned()).collect(),
                ),
                sysctls: Some(
                    confinement::SYSCTLS
                        .iter()
                        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                        .collect(),
                ),
                port_bindings: Some(port_bindings),
                mounts: Some(mounts),
                network_mode: Some(network.to_owned()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.to_owned(),
                    EndpointSettings {
                        aliases: Some(crate::network::aliases(instance, &plan.role)),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let mut created =
            self.client()?.create_container(Some(options.clone()), body.clone()).await;
        if let Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, message }) =
            &created
            && message.contains(network)
        {
            // The user's last other instance was removed between `ensure_user_network` and
            // here, and its network with it: once more, with the network made again.
            self.ensure_user_network(instance.owner).await?;
            created = self.client()?.create_container(Some(options), body).await;
        }
        let created = created.map_err(|err| {
            match from_bollard(format!("creating container {name}"), err) {
                RuntimeError::Engine { message, .. } if message.contains("already in use") => {
                    RuntimeError::NameConflict { what: "container", name: name.clone() }
                }
                other => other,
            }
        })?;
        self.client()?.start_container(&created.id, None).await.map_err(|err| {
            port_taken_of(from_bollard(format!("starting container {name}"), err), &plan.ports)
        })?;
        Ok(ContainerRef { id: created.id, name, role: plan.role.clone() })
    }

    /// Removes everything of the instance, reporting the first failure after trying it all.
    /// `owner` names the user whose network may go too when the containers do not (a
    /// provisioning rolled back before its first container).
    async fn teardown(
        &self,
        instance: InstanceId,
        owner: Option<UserId>,
        purge: bool,
    ) -> Result<(), RuntimeError> {
        let mut first_error = None;
        let containers = self.containers_of(instance).await?;
        let owner = owner.or_else(|| {
            containers
                .iter()
                .find_map(|c| c.labels.as_ref()?.get(LABEL_OWNER)?.parse::<UserId>().ok())
        });
        for container in containers {
            let Some(id) = container.id else { continue };
            let removed = self
                .client()?
                .remove_container(
                    &id,
                    Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                )
                .await;
            // 409: another removal of it is under way (a delete racing the provisioning task
            // that cleans up after it); the container goes either way.
            if let Err(err) = removed
                && !is_not_found(&err)
                && !is_removal_in_progress(&err)
            {
                first_error.get_or_insert(from_bollard(format!("removing container {id}"), err));
            }
        }
        if let Err(err) = self.release_networks(instance, owner).await {
            first_error.get_or_insert(err);
        }
        if purge {
            for volume in self.volumes_of(instance).await? {
                let removed = self
                    .client()?
                    .remove_volume(
                        &volume,
                        Some(RemoveVolumeOptionsBuilder::new().force(true).build()),
                    )
                    .await;
                if let Err(err) = removed
                    && !is_not_found(&err)
                {
                    first_error
                        .get_or_insert(from_bollard(format!("removing volume {volume}"), err));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Names of the instance's volumes: the one of each role, and any other carrying its label.
    async fn volumes_of(&self, instance: InstanceId) -> Result<Vec<String>, RuntimeError> {
        let label = format!("{LABEL_INSTANCE}={instance}");
        let filters = HashMap::from([("label", vec![label.as_str()])]);
        let listed = self
            .client()?
            .list_volumes(Some(ListVolumesOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(|err| from_bollard(format!("listing volumes of instance {instance}"), err))?;
        let mut names: Vec<String> =
            listed.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect();
        let primary = self.volume_name(instance, PRIMARY);
        if !names.contains(&primary) {
            names.push(primary);
        }
        Ok(names)
    }

    /// Runs `script` with `sh -c` in `container` as the postgres OS user.
    pub(crate) async fn postgres_exec(
        &self,
        container: &str,
        script: &str,
        env: Vec<String>,
    ) -> Result<ExecOutput, RuntimeError> {
        // The superuser resolves names in the system catalog only: a function or operator a
        // tenant put in a schema it owns can never stand in for a built-in one the platform
        // calls (`pg_backend_pid()`, say), whatever search_path the tenant set on a database.
        let mut env = env;
        env.push(SAFE_SEARCH_PATH.to_owned());
        exec::run(
            &self.client()?,
            exec::Command {
                container,
                user: "postgres",
                cmd: vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()],
                env,
                timeout: self.config.exec_timeout,
            },
        )
        .await
    }

    /// Waits until the PostgreSQL server in `container` accepts TCP connections (the images'
    /// set-up server listens on the Unix socket only, so this is the final server).
    async fn wait_postgres_ready(&self, container: &str) -> Result<(), RuntimeError> {
        let deadline = tokio::time::Instant::now() + self.config.ready_timeout;
        loop {
            let probe = self
                .postgres_exec(container, "pg_isready -q -h 127.0.0.1 -p 5432", Vec::new())
                .await;
            match probe {
                Ok(output) if output.exit_code == 0 => return Ok(()),
                Ok(_) => {}
                // The container may still be starting; anything else shows at the deadline.
                Err(err) => tracing::debug!(%container, error = %err, "waiting for PostgreSQL"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RuntimeError::Engine {
                    operation: format!("waiting for PostgreSQL in {container}"),
                    message: format!(
                        "it did not accept connections within {:?}",
                        self.config.ready_timeout
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Lets replicas stream from the primary: a replication role and its `pg_hba.conf` entry.
    async fn prepare_primary(&self, primary: &str, secrets: &Secrets) -> Result<(), RuntimeError> {
        self.wait_postgres_ready(primary).await?;
        let password = secrets.get("POSTGRES_REPLICATION_PASSWORD").unwrap_or_default();
        self.postgres_exec(
            primary,
            PRIMARY_REPLICATION_SCRIPT,
            vec![format!("IAAS_REPLICATION_PASSWORD={password}")],
        )
        .await?
        .success(format!("creating the replication role on {primary}"))?;
        Ok(())
    }

    async fn each_container(
        &self,
        instance: InstanceId,
        operation: &'static str,
    ) -> Result<Vec<String>, RuntimeError> {
        let ids: Vec<String> =
            self.containers_of(instance).await?.into_iter().filter_map(|c| c.id).collect();
        if ids.is_empty() {
            return Err(RuntimeError::NotFound { instance: instance.to_string() });
        }
        tracing::debug!(%instance, operation, containers = ids.len(), "container operation");
        Ok(ids)
    }
}

/// A port-taken refusal names the host port: the engine's message usually does, and when it
/// does not, the one host port the container asked for is the culprit.
fn port_taken_of(err: RuntimeError, ports: &[PortMapping]) -> RuntimeError {
    match err {
        RuntimeError::PortTaken { port: 0 } => {
            let mut chosen = ports.iter().filter_map(|p| p.host);
            match (chosen.next(), chosen.next()) {
                (Some(port), None) => RuntimeError::PortTaken { port },
                _ => RuntimeError::PortTaken { port: 0 },
            }
        }
        other => other,
    }
}

pub(crate) fn is_removal_in_progress(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError { status_code: 409, message }
            if message.contains("already in progress")
    )
}

pub(crate) fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

/// 304 Not Modified: the container already is in the requested state.
fn is_not_modified(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code: 304, .. })
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    async fn ready(&self) -> Result<(), RuntimeError> {
        self.engine.ping().await
    }

    async fn provision(
        &self,
        instance: &Instance,
        secrets: &Secrets,
    ) -> Result<Vec<ContainerRef>, RuntimeError> {
        let completed;
        let secrets = match &instance.spec {
            InstanceSpec::Postgres(_) => {
                completed = postgres_secrets(secrets)?;
                &completed
            }
            _ => secrets,
        };
        let plans = self.plan(instance, secrets)?;
        let existing = self.containers_of(instance.id).await?;
        if !existing.is_empty() {
            return Ok(existing
                .into_iter()
                .map(|c| ContainerRef {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .names
                        .and_then(|n| n.first().map(|n| n.trim_start_matches('/').to_owned()))
                        .unwrap_or_default(),
                    role: c.labels.and_then(|l| l.get(LABEL_ROLE).cloned()).unwrap_or_default(),
                })
                .collect());
        }
        let outcome = async {
            let network = self.ensure_user_network(instance.owner).await?;
            let mut created: Vec<ContainerRef> = Vec::with_capacity(plans.len());
            for plan in &plans {
                // Replicas (PostgreSQL only) copy the primary, which must first accept
                // connections and have the replication role: prepared once, before the first.
                if let [primary] = created.as_slice()
                    && plan.role != PRIMARY
                {
                    self.prepare_primary(&primary.id, secrets).await?;
                }
                created.push(self.create_one(instance, plan, &network).await?);
            }
            Ok::<_, RuntimeError>(created)
        }
        .await;
        match outcome {
            Ok(created) => Ok(created),
            Err(err) => {
                // Leave nothing half-created: the volume goes too, it holds no data yet.
                if let Err(cleanup) = self.teardown(instance.id, Some(instance.owner), true).await {
                    tracing::error!(instance = %instance.id, error = %cleanup, "rolling back a failed provisioning");
                }
                Err(err)
            }
        }
    }

    fn admit(&self, instance: &Instance) -> Result<(), RuntimeError> {
        self.check(instance)
    }

    async fn start(&self, instance: InstanceId) -> Result<(), RuntimeError> {
        for id in self.each_container(instance, "start").await? {
            match self.client()?.start_container(&id, None).await {
                Ok(()) => {}
                Err(err) if is_not_modified(&err) => {}
                Err(err) => {
                    return Err(from_bollard(format!("starting container {id}"), err));
                }
            }
        }
        Ok(())
    }

    async fn stop(&self, instance: InstanceId) -> Result<(), RuntimeError> {
        let timeout = i32::try_from(self.config.stop_timeout.as_secs()).unwrap_or(i32::MAX);
        for id in self.each_container(instance, "stop").await? {
            match self
                .client()?
                .stop_container(&id, Some(StopContainerOptionsBuilder::new().t(timeout).build()))
                .await
            {
                Ok(()) => {}
                Err(err) if is_not_modified(&err) => {}
                Err(err) => {
                    return Err(from_bollard(format!("stopping container {id}"), err));
                }
            }
        }
        Ok(())
    }

    async fn restart(&self, instance: InstanceId) -> Result<(), RuntimeError> {
        let timeout = i32::try_from(self.config.stop_timeout.as_secs()).unwrap_or(i32::MAX);
        for id in self.each_container(instance, "restart").await? {
            self.client()?
                .restart_container(
                    &id,
                    Some(RestartContainerOptionsBuilder::new().t(timeout).build()),
                )
                .await
                .map_err(|err| from_bollard(format!("restarting container {id}"), err))?;
        }
        Ok(())
    }

    async fn remove(&self, instance: InstanceId, purge: bool) -> Result<(), RuntimeError> {
        self.teardown(instance, None, purge).await
    }

    async fn primary_state(&self, instance: InstanceId) -> Result<PrimaryState, RuntimeError> {
        let containers = self.containers_of(instance).await?;
        crate::watch::observe(self.engine(), &containers).await
    }

    async fn list_managed(&self) -> Result<Vec<ManagedContainer>, RuntimeError> {
        list_managed(self.engine()).await
    }
}

/// Every container labelled managed, as the port describes it.
pub(crate) async fn list_managed(
    engine: &EngineConnection,
) -> Result<Vec<ManagedContainer>, RuntimeError> {
    let label = format!("{LABEL_MANAGED}=true");
    let filters = HashMap::from([("label", vec![label.as_str()])]);
    let containers = engine
        .client()?
        .list_containers(Some(
            ListContainersOptionsBuilder::new().all(true).filters(&filters).build(),
        ))
        .await
        .map_err(|err| from_bollard("listing managed containers", err))?;
    Ok(containers
        .into_iter()
        .filter_map(|c| {
            let labels = c.labels.unwrap_or_default();
            // A container carrying our label but no parsable instance id is not ours to touch.
            let instance: InstanceId = labels.get(LABEL_INSTANCE)?.parse().ok()?;
            Some(ManagedContainer {
                id: c.id?,
                name: c
                    .names
                    .and_then(|n| n.first().map(|n| n.trim_start_matches('/').to_owned()))
                    .unwrap_or_default(),
                instance,
                owner: labels.get(LABEL_OWNER).and_then(|o| o.parse::<UserId>().ok()),
                role: labels.get(LABEL_ROLE).cloned().unwrap_or_default(),
                running: c.state.is_some_and(|s| s.to_string() == "running"),
            })
        })
        .collect())
}
