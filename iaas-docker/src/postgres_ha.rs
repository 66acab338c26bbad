//! The engine side of highly available PostgreSQL clusters: waiting for the read-write
//! endpoint, reading the members' election, asking Patroni for a switchover, and bringing back
//! containers a cluster lost. What the containers are is decided in [`crate::plan_ha`].
//!
//! Everything is asked from inside the cluster's own containers through the exec API (a member
//! reads its Patroni at `127.0.0.1:8008`, `patronictl` runs in the primary), so the platform
//! needs no route into a tenant's network and no Patroni password leaves the containers that
//! already hold it.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::ContainerSummary;
use bollard::query_parameters::{
    InspectContainerOptions, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
};
use iaas_core::patroni::{LeaderChange, PatroniCluster, PatroniRole};
use iaas_core::pgbackrest::{BackupCatalog, BackupKind, BackupSet};
use iaas_core::runtime::{ENDPOINT, LABEL_ROLE, MEMBER_PREFIX, STORE, member_role};
use iaas_core::{Instance, InstanceId, InstanceSpec, Retired, RuntimeError, Secrets};

use crate::engine::{DockerRuntime, is_not_found};
use crate::error::from_bollard;
use crate::exec;
use crate::plan::volume_name;
use crate::plan_ha::{self, MEMBER_OWN_ENV, PATRONI_PORT, READ_WRITE_PORT};

/// Prints Patroni's `GET /cluster` answer (Python is in the image: Patroni is written in it).
fn cluster_script() -> String {
    format!(
        "exec python3 -c \"import sys, urllib.request; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:{PATRONI_PORT}/cluster', timeout=3).read().decode())\""
    )
}

/// How long a switchover may take once Patroni accepted it (it takes a few seconds; kept below
/// the platform's default request timeout, 30 s, so the caller hears why).
const SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(20);

/// `patronictl` with the member's own configuration (which holds the REST password).
const PATRONICTL: &str = "patronictl -c /var/lib/postgresql/patroni.yml";

/// `pgbackrest` with the member's own configuration (the repository and the stanza's path).
const PGBACKREST: &str =
    "pgbackrest --config=/var/lib/postgresql/pgbackrest.conf --log-level-console=warn";

/// A member or candidate name as Patroni writes it: the roles the plan gives members.
fn is_member_name(name: &str) -> bool {
    name.strip_prefix(MEMBER_PREFIX)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn role_of(container: &ContainerSummary) -> &str {
    container.labels.as_ref().and_then(|l| l.get(LABEL_ROLE)).map_or("", String::as_str)
}

fn is_running(container: &ContainerSummary) -> bool {
    container.state.as_ref().is_some_and(|s| s.to_string() == "running")
}

impl DockerRuntime {
    /// Waits until the endpoint in `container` reaches a primary that accepts connections: the
    /// cluster is then bootstrapped, its application role made and its primary elected.
    pub(crate) async fn wait_read_write(&self, container: &str) -> Result<(), RuntimeError> {
        let deadline = tokio::time::Instant::now() + self.config.ready_timeout;
        let probe = format!("pg_isready -q -h 127.0.0.1 -p {READ_WRITE_PORT}");
        loop {
            match self.postgres_exec(container, &probe, Vec::new()).await {
                Ok(output) if output.exit_code == 0 => return Ok(()),
                Ok(_) => {}
                Err(err) => tracing::debug!(%container, error = %err, "waiting for the primary"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RuntimeError::Engine {
                    operation: format!("waiting for the primary behind {container}"),
                    message: format!(
                        "no primary accepted connections within {:?}",
                        self.config.ready_timeout
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until every replica of the cluster `instance` streams from its primary, so the
    /// cluster is reported running only once a failover would lose nothing but the last
    /// moments' writes: a replica that has not started streaming yet knows nothing written
    /// since it was copied.
    pub(crate) async fn wait_streaming(&self, instance: &Instance) -> Result<(), RuntimeError> {
        let InstanceSpec::Postgres(pg) = &instance.spec else { return Ok(()) };
        let deadline = tokio::time::Instant::now() + self.config.ready_timeout;
        let query = "psql -X -A -t -h /var/run/postgresql -U postgres -d postgres -c \"SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'\"";
        loop {
            let leader = self
                .read_members(instance.id)
                .await?
                .and_then(|c| c.leader().map(|l| l.name.clone()))
                .filter(|name| is_member_name(name));
            if let Some(leader) = leader {
                let container =
                    crate::plan::container_name(&self.config.name_prefix, instance.id, &leader);
                match self.postgres_exec(&container, query, Vec::new()).await {
                    Ok(output)
                        if output.exit_code == 0
                            && output
                                .stdout
                                .trim()
                                .parse::<u8>()
                                .is_ok_and(|n| n >= pg.replicas) =>
                    {
                        return Ok(());
                    }
                    Ok(_) | Err(RuntimeError::NotRunning { .. }) => {}
                    Err(err) => return Err(err),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RuntimeError::Engine {
                    operation: format!("waiting for the replicas of instance {}", instance.id),
                    message: format!(
                        "not every replica streamed within {:?}",
                        self.config.ready_timeout
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Before the members of a restored cluster start: the source's repository must exist, and
    /// the source's current WAL segment is archived (when the source runs), so a target time up
    /// to now is covered by the archive.
    pub(crate) async fn prepare_restore(&self, instance: &Instance) -> Result<(), RuntimeError> {
        let Some(source) = plan_ha::restore_source(instance) else { return Ok(()) };
        let volume = plan_ha::backup_volume(&self.config, source).name;
        // In a shared bucket, a source without backups is found by the restore itself.
        let repository = match self.config.backup_s3 {
            Some(_) => Ok(None),
            None => self.client()?.inspect_volume(&volume).await.map(Some),
        };
        match repository {
            Ok(_) => {}
            Err(err) if crate::engine::is_not_found(&err) => {
                return Err(RuntimeError::InvalidSpec {
                    reason: format!(
                        "instance {source} has no backup repository (it was deleted with purge, or is no highly available cluster)"
                    ),
                });
            }
            Err(err) => return Err(from_bollard(format!("inspecting volume {volume}"), err)),
        }
        let Ok(container) = self.leader_container(source).await else {
            // The source is down: what its archive holds is what can be restored.
            return Ok(());
        };
        // Recovery to a target time stops at the first commit after it; a source with no
        // commit since then would end recovery short of its target, and PostgreSQL refuses to
        // start ("recovery ended before configured recovery target was reached"). A
        // transaction that takes an id commits now, after any target up to the request; each
        // `-c` is a transaction of its own.
        let switch = "psql -X -A -t -h /var/run/postgresql -U postgres -d postgres -c 'SELECT pg_current_xact_id()' -c 'SELECT pg_walfile_name(pg_switch_wal())'";
        let output = self
            .postgres_exec(&container, switch, Vec::new())
            .await?
            .success(format!("switching the WAL of instance {source}"))?;
        let segment = output.stdout.lines().last().unwrap_or_default().trim().to_owned();
        let archived = "psql -X -A -t -h /var/run/postgresql -U postgres -d postgres -c 'SELECT coalesce(last_archived_wal, $$$$) FROM pg_stat_archiver'";
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let output = self.postgres_exec(&container, archived, Vec::new()).await?;
            // Segment names of one timeline sort in WAL order.
            if output.exit_code == 0 && output.stdout.trim() >= segment.as_str() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RuntimeError::Engine {
                    operation: format!("archiving the WAL of instance {source}"),
                    message: format!("segment {segment} was not archived within 60 s"),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The running members of `instance`, in member order.
    async fn running_members(
        &self,
        instance: InstanceId,
    ) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let mut members: Vec<ContainerSummary> = self
            .containers_of(instance)
            .await?
            .into_iter()
            .filter(|c| is_running(c) && is_member_name(role_of(c)))
            .collect();
        members.sort_by(|a, b| role_of(a).cmp(role_of(b)));
        Ok(members)
    }

    /// The election as the first running member that answers sees it.
    pub(crate) async fn read_members(
        &self,
        instance: InstanceId,
    ) -> Result<Option<PatroniCluster>, RuntimeError> {
        let script = cluster_script();
        for member in self.running_members(instance).await? {
            let Some(id) = member.id.as_deref() else { continue };
            match self.postgres_exec(id, &script, Vec::new()).await {
                Ok(output) if output.exit_code == 0 => {
                    match PatroniCluster::parse(output.stdout.as_bytes()) {
                        Ok(cluster) => return Ok(Some(cluster)),
                        Err(err) => tracing::warn!(%instance, error = %err, "reading Patroni"),
                    }
                }
                // Patroni starting or stopping in that member: ask the next one.
                Ok(output) => {
                    tracing::debug!(%instance, stderr = %output.stderr.trim(), "Patroni did not answer")
                }
                Err(RuntimeError::NotRunning { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(None)
    }

    /// Asks the primary's Patroni to hand over to `candidate`, and waits until it has.
    pub(crate) async fn hand_over(
        &self,
        instance: InstanceId,
        candidate: Option<&str>,
    ) -> Result<LeaderChange, RuntimeError> {
        let refused =
            |reason: String| RuntimeError::Refused { instance: instance.to_string(), reason };
        let cluster = self.read_members(instance).await?.ok_or_else(|| {
            RuntimeError::NotRunning { operation: format!("switchover of instance {instance}") }
        })?;
        let leader = cluster.leader().ok_or_else(|| {
            refused("the cluster has no primary right now (an election is under way)".to_owned())
        })?;
        let target = match candidate {
            Some(name) => {
                let member = cluster
                    .member(name)
                    .ok_or_else(|| refused(format!("{name:?} is not a member of the cluster")))?;
                if member.name == leader.name {
                    return Err(refused(format!("{name:?} already is the primary")));
                }
                if !(member.role.is_replica() && member.is_up()) {
                    return Err(refused(format!("{name:?} is not a running replica")));
                }
                // In synchronous mode only a synchronous standby has every commit.
                if member.role != PatroniRole::SyncStandby
                    && cluster.members.iter().any(|m| m.role == PatroniRole::SyncStandby)
                {
                    return Err(refused(format!(
                        "{name:?} is not the synchronous standby; in synchronous mode only it may take over"
                    )));
                }
                member
            }
            None => cluster
                .switchover_candidate()
                .ok_or_else(|| refused("no running replica to hand over to".to_owned()))?,
        };
        // Both names are members' (checked above against Patroni's own list, and the plan
        // gives members plain `member-N` names), so they are safe in a command line.
        if !is_member_name(&leader.name) || !is_member_name(&target.name) {
            return Err(refused("unexpected member names".to_owned()));
        }
        let container =
            crate::plan::container_name(&self.config.name_prefix, instance, &leader.name);
        let command = format!(
            "{PATRONICTL} switchover --leader {} --candidate {} --force",
            leader.name, target.name
        );
        let output = self
            .postgres_exec(&container, &command, Vec::new())
            .await?
            .success(format!("switchover of instance {instance} to {}", target.name))?;
        // patronictl reports a switchover Patroni refused (a candidate that is not, or no
        // longer, eligible) on its output, and may still exit 0.
        if let Some(line) = output.stdout.lines().find(|l| l.contains("Switchover failed")) {
            return Err(refused(format!("Patroni refused the switchover: {}", line.trim())));
        }
        let before = cluster.clone();
        let old_timeline = leader.timeline;
        let deadline = tokio::time::Instant::now() + SWITCHOVER_TIMEOUT;
        loop {
            if let Some(now) = self.read_members(instance).await?
                && let Some(change) = iaas_core::patroni::leader_change(&before, &now)
                && now.leader().is_some_and(|l| l.is_up())
                // The new primary's timeline shows a loop after its promotion.
                && change.timeline.is_some_and(|t| old_timeline.is_none_or(|old| t > old))
            {
                return Ok(change);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(refused(format!(
                    "no new primary {} s after Patroni accepted the switchover; it may still complete",
                    SWITCHOVER_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The container of the member the election names primary.
    pub(crate) async fn leader_container(
        &self,
        instance: InstanceId,
    ) -> Result<String, RuntimeError> {
        let leader = self
            .read_members(instance)
            .await?
            .and_then(|c| c.leader().filter(|l| l.is_up()).map(|l| l.name.clone()))
            .filter(|name| is_member_name(name))
            .ok_or_else(|| RuntimeError::Refused {
                instance: instance.to_string(),
                reason: "no primary is elected right now (an election is under way, or every member is down)"
                    .to_owned(),
            })?;
        Ok(crate::plan::container_name(&self.config.name_prefix, instance, &leader))
    }

    /// Takes a `kind` base backup on the primary and returns it; pgBackRest then expires
    /// what is beyond `keep_full` full backups (the image's setting when `None`).
    pub(crate) async fn take_backup(
        &self,
        instance: InstanceId,
        kind: BackupKind,
        keep_full: Option<u8>,
    ) -> Result<BackupSet, RuntimeError> {
        let container = self.leader_container(instance).await?;
        let before = self.read_backups(instance, &container).await?;
        let scope = plan_ha::scope(instance);
        let mut command = format!("{PGBACKREST} --stanza={scope} backup --type={}", kind.as_str());
        if let Some(keep) = keep_full {
            command.push_str(&format!(" --repo1-retention-full={}", keep.max(1)));
        }
        exec::run(
            &self.client()?,
            exec::Command {
                container: &container,
                user: "postgres",
                cmd: vec!["sh".to_owned(), "-c".to_owned(), command],
                env: Vec::new(),
                timeout: self.config.backup_timeout,
            },
        )
        .await?
        .success(format!("{} backup of instance {instance}", kind.as_str()))?;
        let after = self.read_backups(instance, &container).await?;
        after
            .backups
            .into_iter()
            .rev()
            .find(|b| !before.backups.iter().any(|old| old.label == b.label))
            .ok_or_else(|| RuntimeError::Engine {
                operation: format!("backup of instance {instance}"),
                message: "pgBackRest reported success but lists no new backup".to_owned(),
            })
    }

    /// The backups of `instance`, read in its primary (or any running member).
    pub(crate) async fn list_backups(
        &self,
        instance: InstanceId,
    ) -> Result<BackupCatalog, RuntimeError> {
        let container = match self.leader_container(instance).await {
            Ok(container) => container,
            Err(RuntimeError::Refused { .. }) => {
                let members = self.running_members(instance).await?;
                let Some(id) = members.first().and_then(|m| m.id.clone()) else {
                    return Err(RuntimeError::NotRunning {
                        operation: format!("listing the backups of instance {instance}"),
                    });
                };
                id
            }
            Err(err) => return Err(err),
        };
        self.read_backups(instance, &container).await
    }

    async fn read_backups(
        &self,
        instance: InstanceId,
        container: &str,
    ) -> Result<BackupCatalog, RuntimeError> {
        let operation = format!("listing the backups of instance {instance}");
        let command =
            format!("{PGBACKREST} --stanza={} info --output=json", plan_ha::scope(instance));
        let output =
            self.postgres_exec(container, &command, Vec::new()).await?.success(&operation)?;
        BackupCatalog::parse(output.stdout.as_bytes())
            .map_err(|err| RuntimeError::Engine { operation, message: err.to_string() })
    }

    /// Starts the stopped containers of the cluster `instance` and makes again the ones that
    /// were removed, but those of `keep_down`; returns their roles. A member is made with the
    /// settings of a member still there, else with the platform's `kept` secrets, and then
    /// only on the data volume it left and while the store's data is there: a member made
    /// empty with no member and no election left would start a new, empty database behind the
    /// tenant's endpoint. The endpoint is made only while a member is there.
    pub(crate) async fn bring_back(
        &self,
        instance: &Instance,
        keep_down: &[String],
        kept: &Secrets,
    ) -> Result<Vec<String>, RuntimeError> {
        let InstanceSpec::Postgres(pg) = &instance.spec else { return Ok(Vec::new()) };
        if !pg.ha {
            return Ok(Vec::new());
        }
        let containers = self.containers_of(instance.id).await?;
        let by_role: HashMap<&str, &ContainerSummary> =
            containers.iter().map(|c| (role_of(c), c)).collect();
        let mut expected = vec![STORE.to_owned()];
        expected.extend((0..=pg.replicas).map(member_role));
        expected.push(ENDPOINT.to_owned());
        let mut brought = Vec::new();
        // An endpoint with no member behind it would make the cluster look up.
        let mut members_left = containers.iter().any(|c| is_member_name(role_of(c)));
        for role in expected.into_iter().filter(|role| !keep_down.contains(role)) {
            match by_role.get(role.as_str()) {
                Some(container) if is_running(container) => {}
                Some(container) => {
                    let Some(id) = container.id.as_deref() else { continue };
                    match self.client()?.start_container(id, None).await {
                        Ok(()) => brought.push(role),
                        Err(err) => {
                            return Err(from_bollard(format!("starting container {id}"), err));
                        }
                    }
                }
                None => {
                    let plan = if role == ENDPOINT {
                        if !members_left {
                            tracing::warn!(instance = %instance.id, "no member left: the endpoint is not made again (restore the cluster from its backups)");
                            continue;
                        }
                        plan_ha::endpoint(&self.config, instance)
                    } else {
                        let shared = match self.member_env(&containers).await? {
                            Some(shared) => shared,
                            None => {
                                let Some(shared) =
                                    self.kept_member_env(instance, pg, &role, kept).await?
                                else {
                                    continue;
                                };
                                shared
                            }
                        };
                        if role == STORE {
                            // The members' store password, which the new store turns on.
                            let password = shared
                                .iter()
                                .find_map(|e| e.strip_prefix("IAAS_ETCD_PASSWORD="))
                                .unwrap_or_default();
                            plan_ha::store(&self.config, instance, password)
                        } else {
                            plan_ha::member(&self.config, instance, &role, &shared)
                        }
                    };
                    let network = self.ensure_user_network(instance.owner).await?;
                    self.create_one(instance, &plan, &network).await?;
                    members_left |= is_member_name(&role);
                    brought.push(role);
                }
            }
        }
        Ok(brought)
    }

    /// Removes the members of `instance` beyond its replica count (`member-N` with N above
    /// `spec.replicas`), each with its data volume, and returns their roles. Only while the
    /// election has a primary that is up and whose container runs: during an election, or when
    /// no member answers, nothing is removed (`Refused`, tried again at the next look). The
    /// primary is never removed: while it is one of them, the others go first and it hands
    /// over to a member that stays; it is removed at a later call, once it follows. A
    /// synchronous standby beyond the count goes only when a replica that stays is up, which
    /// Patroni then makes the synchronous standby; a member whose role this version does not
    /// know is left alone.
    pub(crate) async fn retire_surplus(
        &self,
        instance: &Instance,
    ) -> Result<Retired, RuntimeError> {
        let mut retired = Retired::default();
        let InstanceSpec::Postgres(pg) = &instance.spec else { return Ok(retired) };
        if !pg.ha {
            return Ok(retired);
        }
        let surplus = |role: &str| {
            role.strip_prefix(MEMBER_PREFIX)
                .and_then(|n| n.parse::<u16>().ok())
                .is_some_and(|n| n > u16::from(pg.replicas))
        };
        let containers = self.containers_of(instance.id).await?;
        if !containers.iter().any(|c| surplus(role_of(c))) {
            return Ok(retired);
        }
        let refused = |reason: &str| RuntimeError::Refused {
            instance: instance.id.to_string(),
            reason: format!("members beyond the replica count wait: {reason}"),
        };
        let election = self
            .read_members(instance.id)
            .await?
            .ok_or_else(|| refused("no member answers, so the election cannot be read"))?;
        let leader = election
            .leader()
            .filter(|l| l.is_up())
            .map(|l| l.name.clone())
            .ok_or_else(|| refused("no primary is elected right now"))?;
        if !containers.iter().any(|c| role_of(c) == leader && is_running(c)) {
            return Err(refused("the primary's container is not running"));
        }
        let staying_replicas_up = election
            .members
            .iter()
            .filter(|m| !surplus(&m.name) && m.role.is_replica() && m.is_up())
            .count();
        // Synchronous standbys last: by then the others are gone.
        let mut doomed: Vec<(&ContainerSummary, bool)> = containers
            .iter()
            .filter(|c| surplus(role_of(c)) && role_of(c) != leader)
            .filter_map(|c| match election.member(role_of(c)).map(|m| &m.role) {
                None | Some(PatroniRole::Replica) => Some((c, false)),
                Some(PatroniRole::SyncStandby) => Some((c, true)),
                Some(PatroniRole::Leader | PatroniRole::Other(_)) => None,
            })
            .collect();
        doomed.sort_by_key(|(_, sync)| *sync);
        // What was removed is reported even when a later step fails (that one is tried again).
        let mut failure = None;
        for (container, sync) in doomed {
            if sync && staying_replicas_up == 0 {
                tracing::info!(instance = %instance.id, role = role_of(container), "a synchronous standby beyond the replica count waits for a replica that stays");
                continue;
            }
            let Some(id) = container.id.as_deref() else { continue };
            match self.remove_member(instance.id, id, role_of(container)).await {
                Ok(()) => retired.removed.push(role_of(container).to_owned()),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        if failure.is_none() && surplus(&leader) {
            let candidate = election
                .members
                .iter()
                .filter(|m| !surplus(&m.name) && m.role.is_replica() && m.is_up())
                .min_by_key(|m| {
                    (m.role != PatroniRole::SyncStandby, m.lag_bytes.unwrap_or(u64::MAX))
                })
                .map(|m| m.name.clone());
            let handed = match candidate {
                Some(candidate) => self.hand_over(instance.id, Some(&candidate)).await,
                None => Err(refused(&format!(
                    "the primary {leader} has no member that stays to hand over to"
                ))),
            };
            match handed {
                Ok(change) => retired.handed_over = Some(change),
                Err(error) => failure = Some(error),
            }
        }
        match failure {
            Some(error) if retired.removed.is_empty() => Err(error),
            Some(error) => {
                tracing::warn!(instance = %instance.id, error = %iaas_core::error_chain(&error), "retiring members beyond the replica count; the rest at the next look");
                Ok(retired)
            }
            None => Ok(retired),
        }
    }

    /// Removes the member container `id` playing `role` and its data volume.
    async fn remove_member(
        &self,
        instance: InstanceId,
        id: &str,
        role: &str,
    ) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        if let Err(err) = self.client()?.remove_container(id, Some(options)).await
            && !is_not_found(&err)
        {
            return Err(from_bollard(format!("removing member container {id}"), err));
        }
        let volume = volume_name(&self.config.name_prefix, instance, role);
        let options = RemoveVolumeOptionsBuilder::new().force(true).build();
        if let Err(err) = self.client()?.remove_volume(&volume, Some(options)).await
            && !is_not_found(&err)
        {
            return Err(from_bollard(format!("removing volume {volume}"), err));
        }
        tracing::info!(%instance, role, "removed a member beyond the replica count");
        Ok(())
    }

    /// What every member shares, made from the platform's `kept` secrets when no member is
    /// left to read it from, for `role` to be made again: `None` (with a warning) when no
    /// secrets were kept, when the store's data volume is gone, or when `role` is a member
    /// whose data volume is gone (nothing would fill it). The tenant's application password is not among the kept secrets: it
    /// counts only when a cluster is first made, which a member on its own data does not do,
    /// so a random one takes its place.
    async fn kept_member_env(
        &self,
        instance: &Instance,
        pg: &iaas_core::PostgresSpec,
        role: &str,
        kept: &Secrets,
    ) -> Result<Option<Vec<String>>, RuntimeError> {
        if kept.get("POSTGRES_ETCD_PASSWORD").is_none() {
            tracing::warn!(instance = %instance.id, %role, "no member left to make a lost container from, and no secrets kept for the cluster");
            return Ok(None);
        }
        // The store's data holds the cluster's initialize key and the last primary's position:
        // with it no member bootstraps a new database, and Patroni promotes no member that
        // lags. Without it (or without the member's own data) nothing is made.
        let mut needed = vec![STORE];
        if is_member_name(role) {
            needed.push(role);
        }
        for part in needed {
            let volume = volume_name(&self.config.name_prefix, instance.id, part);
            match self.client()?.inspect_volume(&volume).await {
                Ok(_) => {}
                Err(err) if is_not_found(&err) => {
                    tracing::warn!(instance = %instance.id, %role, lost = %part, "no member left and the data of a part is gone: not made again (restore the cluster from its backups)");
                    return Ok(None);
                }
                Err(err) => return Err(from_bollard(format!("inspecting volume {volume}"), err)),
            }
        }
        let filler = iaas_core::runtime::random_password()
            .map_err(|reason| RuntimeError::InvalidSpec { reason })?;
        let secrets = kept.clone().with("POSTGRES_PASSWORD", filler);
        tracing::info!(instance = %instance.id, %role, "no member left: making a lost container from the secrets the platform kept");
        plan_ha::shared_env(&self.config, instance, pg, &secrets).map(Some)
    }

    /// What every member shares (the settings and secrets a lost member is made again with),
    /// read from a member still there.
    async fn member_env(
        &self,
        containers: &[ContainerSummary],
    ) -> Result<Option<Vec<String>>, RuntimeError> {
        for container in containers.iter().filter(|c| is_member_name(role_of(c))) {
            let Some(id) = container.id.as_deref() else { continue };
            let inspected = self
                .client()?
                .inspect_container(id, None::<InspectContainerOptions>)
                .await
                .map_err(|err| from_bollard(format!("inspecting container {id}"), err))?;
            if let Some(env) = inspected.config.and_then(|c| c.env) {
                let shared: Vec<String> = env
                    .into_iter()
                    .filter(|e| e.starts_with("IAAS_") || e.starts_with("PGDATA="))
                    .filter(|e| !MEMBER_OWN_ENV.iter().any(|own| e.starts_with(own)))
                    .collect();
                return Ok(Some(shared));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_member_names_pass_into_a_command_line() {
        assert!(is_member_name("member-0"));
        assert!(is_member_name("member-12"));
        for bad in ["member-", "member-1; rm -rf /", "store", "member-a", "xmember-1", ""] {
            assert!(!is_member_name(bad), "{bad:?}");
        }
    }
}
