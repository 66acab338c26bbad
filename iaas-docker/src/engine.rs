//! [`ContainerRuntime`] on a Docker engine, through bollard: the I/O that carries out an
//! instance's [`crate::plan`].
//!
//! What each container is (names derived from the instance id, labels, images, environment,
//! ports, limits) is the plan's; the network is the owner's (`iaas-user-{owner}`, see
//! [`crate::network`]). Together they make every operation idempotent and let a retry after a
//! crash find what an earlier attempt created. Published ports bind to loopback unless
//! configured otherwise, chosen host ports must pass the
//! [`HostPortPolicy`](iaas_core::HostPortPolicy), and every container is confined as
//! [`crate::confinement`] describes.
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
    ContainerCreateBody, EndpointSettings, HostConfig, Mount, MountType, NetworkingConfig,
    PortBinding, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder, RestartContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use iaas_core::runtime::{
    ContainerRef, ContainerRuntime, LABEL_INSTANCE, LABEL_MANAGED, LABEL_OWNER, LABEL_ROLE,
    ManagedContainer, PRIMARY, PrimaryState, RuntimeError, Secrets,
};
use iaas_core::{Instance, InstanceId, InstanceSpec, PortMapping, UserId};

use crate::config::DockerRuntimeConfig;
use crate::confinement;
use crate::connection::EngineConnection;
use crate::error::from_bollard;
use crate::exec::{self, ExecOutput};
use crate::plan::{self, Plan};

/// Run on the primary (as the postgres OS user, over the local socket) before replicas are
/// created: the replication role, with its password taken from the environment through a psql
/// variable so it is neither in a command line nor interpolated by the shell, and the
/// `pg_hba.conf` line that lets it stream (`host all` does not cover replication).
const PRIMARY_REPLICATION_SCRIPT: &str = r#"set -e
printf '%s\n' "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'pw';" | psql -X -q -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -v pw="$IAAS_REPLICATION_PASSWORD"
printf '%s\n' 'host replication replicator all scram-sha-256' >> "$PGDATA/pg_hba.conf"
psql -X -q -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -c 'SELECT pg_reload_conf()' >/dev/null
"#;

/// What every command the platform runs as the superuser gets in its environment.
const SAFE_SEARCH_PATH: &str = "PGOPTIONS=-c search_path=pg_catalog,pg_temp";

/// The Docker engine runtime.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    pub(crate) engine: EngineConnection,
    pub(crate) config: DockerRuntimeConfig,
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

    pub(crate) async fn create_one(
        &self,
        instance: &Instance,
        plan: &Plan,
        network: &str,
    ) -> Result<ContainerRef, RuntimeError> {
        let name = plan.name.clone();
        let labels = plan.labels.clone();
        let mut mounts = Vec::new();
        if let Some(plan::Volume { name: volume, target }) = plan.read_only_volume.clone() {
            mounts.push(Mount {
                target: Some(target.to_owned()),
                source: Some(volume),
                typ: Some(MountType::VOLUME),
                read_only: Some(true),
                ..Default::default()
            });
        }
        for plan::Volume { name: volume, target } in
            plan.volume.iter().chain(&plan.shared_volume).cloned()
        {
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
        let memory = plan.limits.memory_bytes;
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
                nano_cpus: Some(plan.limits.nano_cpus),
                pids_limit: Some(plan.limits.pids),
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
        let primary = plan::volume_name(&self.config.name_prefix, instance, PRIMARY);
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

    fn complete_secrets(
        &self,
        instance: &Instance,
        given: &Secrets,
    ) -> Result<Secrets, RuntimeError> {
        match &instance.spec {
            InstanceSpec::Postgres(pg) => plan::postgres_secrets(given, pg.ha),
            _ => Ok(given.clone()),
        }
    }

    async fn provision(
        &self,
        instance: &Instance,
        secrets: &Secrets,
    ) -> Result<Vec<ContainerRef>, RuntimeError> {
        let completed = self.complete_secrets(instance, secrets)?;
        let secrets = &completed;
        let plans = plan::plan(&self.config, instance, secrets)?;
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
            let highly_available = instance.spec.is_highly_available();
            if highly_available {
                self.prepare_restore(instance).await?;
            }
            for plan in &plans {
                // Replicas (PostgreSQL only) copy the primary, which must first accept
                // connections and have the replication role: prepared once, before the first.
                // The members of a highly available cluster need no help: Patroni bootstraps
                // one and the others copy it.
                if let [primary] = created.as_slice()
                    && plan.role != PRIMARY
                    && !highly_available
                {
                    self.prepare_primary(&primary.id, secrets).await?;
                }
                created.push(self.create_one(instance, plan, &network).await?);
            }
            if highly_available && let Some(endpoint) = created.last() {
                self.wait_read_write(&endpoint.name).await?;
                self.wait_streaming(instance).await?;
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
        plan::check(&self.config, instance)
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

    async fn remove_instance(&self, instance: &Instance, purge: bool) -> Result<(), RuntimeError> {
        self.teardown(instance.id, Some(instance.owner), purge).await
    }

    async fn cluster_members(
        &self,
        instance: InstanceId,
    ) -> Result<Option<iaas_core::patroni::PatroniCluster>, RuntimeError> {
        self.read_members(instance).await
    }

    async fn switchover(
        &self,
        instance: InstanceId,
        candidate: Option<&str>,
    ) -> Result<iaas_core::patroni::LeaderChange, RuntimeError> {
        self.hand_over(instance, candidate).await
    }

    async fn backup(
        &self,
        instance: InstanceId,
        kind: iaas_core::pgbackrest::BackupKind,
        keep_full: Option<u8>,
    ) -> Result<iaas_core::pgbackrest::BackupSet, RuntimeError> {
        self.take_backup(instance, kind, keep_full).await
    }

    async fn backups(
        &self,
        instance: InstanceId,
    ) -> Result<iaas_core::pgbackrest::BackupCatalog, RuntimeError> {
        self.list_backups(instance).await
    }

    async fn repair(
        &self,
        instance: &Instance,
        keep_down: &[String],
        kept: &Secrets,
    ) -> Result<Vec<String>, RuntimeError> {
        self.bring_back(instance, keep_down, kept).await
    }

    async fn change_password(
        &self,
        instance: InstanceId,
        role: &str,
        password: &str,
    ) -> Result<(), RuntimeError> {
        DockerRuntime::change_password(self, instance, role, password).await
    }

    async fn retire_surplus(
        &self,
        instance: &Instance,
    ) -> Result<iaas_core::Retired, RuntimeError> {
        DockerRuntime::retire_surplus(self, instance).await
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
