//! [`ClusterSource`] on the Docker engine: what the cluster cache loads.
//!
//! - `cluster_info`: one node per container (role from the `iaas.role` label), and the published
//!   loopback ports as endpoints. The primary's are named after the container port
//!   (`5432/tcp`), a replica's are prefixed with its role (`replica-1:5432/tcp`). Its status
//!   is the primary's (a replica that is down shows as a node with `running: false`; see
//!   [`role_decides_status`](crate::role_decides_status)).
//! - `cluster_stats`: CPU % and memory from the engine's stats (computed as `docker stats`
//!   does), summed over the running nodes; for PostgreSQL the servers' own count of client
//!   connections, read with `psql` through the exec API.
//! - `replication_status`: `pg_stat_replication` read on the primary.
//!
//! Stats and replication are read from running servers. When the primary container is not
//! running they fail with [`Error::Conflict`] on the instance (the API answers 409
//! `not_running`: retrying does not help until someone starts it). When it runs but PostgreSQL
//! does not accept connections yet (or any more), `psql` exits with status 2 (psql(1): "the
//! connection to the server went bad"): that is transient, [`Error::Unavailable`] (503 with
//! `Retry-After`). Any other failure of `psql` is [`Error::Internal`].
//!
//! # Why `running` does not wait for PostgreSQL to accept connections
//!
//! The PostgreSQL containers have a health check (`pg_isready`), and the engine reports
//! `health_status: healthy` as an event, so the watcher could hold an instance in
//! `provisioning` until then. It does not, because the status follows the container's life
//! cycle everywhere else: after a user `start` or `restart` (and after the engine itself
//! restarts) the instance goes from `stopped` to `running` on the `start` event, and the core
//! life cycle has no `starting` status to hold it in meanwhile, so `running` would mean "ready"
//! only after the first provisioning and not after any later start. The window is a few
//! seconds and reads in it answer 503 with `Retry-After`, which is what a client of a server
//! still starting needs to know; the container's health is kept in the engine, where
//! `docker inspect` shows it.

use async_trait::async_trait;
use bollard::models::{ContainerStatsResponse, ContainerSummary};
use bollard::query_parameters::StatsOptionsBuilder;
use futures_util::StreamExt;
use iaas_core::{
    ClusterInfo, ClusterSource, ClusterStats, Endpoint, Error, InstanceId, InstanceKind, NodeInfo,
    NodeRole, ReplicaState, ReplicationStatus,
};

use crate::engine::DockerRuntime;
use crate::error::from_bollard;
use crate::exec::ExecOutput;
use crate::mapping::status_for_state;
use iaas_core::RuntimeError;
use iaas_core::runtime::{ENDPOINT, MEMBER_PREFIX, PRIMARY, STORE};
use iaas_core::runtime::{LABEL_KIND, LABEL_ROLE};
use iaas_core::runtime::{role_decides_status, status_without_primary};

/// Client connections, not counting the `psql` that asks.
const CONNECTIONS_SQL: &str = "psql -X -A -t -U \"$POSTGRES_USER\" -d postgres -c \"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()\"";

/// One line per replica: `name|state|lag bytes|lag seconds` (seconds empty when unknown).
const REPLICATION_SQL: &str = "psql -X -A -t -F '|' -U \"$POSTGRES_USER\" -d postgres -c \"SELECT application_name, state, pg_wal_lsn_diff(pg_current_wal_lsn(), COALESCE(replay_lsn, '0/0'))::bigint, EXTRACT(EPOCH FROM replay_lag) FROM pg_stat_replication ORDER BY application_name\"";

/// psql's exit status when it could not connect or lost the connection (psql(1), EXIT STATUS).
const PSQL_CONNECTION_FAILED: i64 = 2;

/// The output of a `psql` run for `operation` if it succeeded; a server that does not accept
/// connections is [`Error::Unavailable`] (transient), any other failure [`Error::Internal`].
pub(crate) fn psql_result(output: ExecOutput, operation: String) -> iaas_core::Result<ExecOutput> {
    if output.exit_code == PSQL_CONNECTION_FAILED {
        return Err(Error::unavailable(
            "postgres",
            operation,
            format!("the server does not accept connections (yet): {}", output.stderr.trim()),
        ));
    }
    Ok(output.success(operation)?)
}

/// The error of a view that needs the primary's server running.
fn primary_not_running(instance: InstanceId, primary: &Node) -> Error {
    Error::conflict(
        "instance",
        instance,
        format!("its primary container {} is not running", primary.name),
    )
}

/// A container of an instance, as listed.
struct Node {
    id: String,
    name: String,
    role: String,
    running: bool,
    kind: Option<String>,
}

impl Node {
    fn from_summary(summary: ContainerSummary) -> Option<Self> {
        let labels = summary.labels.unwrap_or_default();
        Some(Self {
            id: summary.id?,
            name: summary
                .names
                .and_then(|n| n.first().map(|n| n.trim_start_matches('/').to_owned()))
                .unwrap_or_default(),
            role: labels.get(LABEL_ROLE).cloned().unwrap_or_default(),
            running: summary.state.is_some_and(|s| s.to_string() == "running"),
            kind: labels.get(LABEL_KIND).cloned(),
        })
    }

    fn is_postgres(&self) -> bool {
        self.kind.as_deref() == Some(InstanceKind::Postgres.as_str())
    }

    /// Whether it runs a PostgreSQL server (a highly available cluster's endpoint and store
    /// belong to a PostgreSQL instance but run none).
    fn is_server(&self) -> bool {
        self.is_postgres() && self.role != ENDPOINT && self.role != STORE
    }
}

/// CPU use in percent of one core between the sample and the one before it, as `docker stats`
/// computes it: the container's share of the host's CPU time, times the number of CPUs.
pub(crate) fn cpu_percent(stats: &ContainerStatsResponse) -> f64 {
    let (Some(cpu), Some(pre)) = (&stats.cpu_stats, &stats.precpu_stats) else {
        return 0.0;
    };
    let total = |s: &bollard::models::ContainerCpuStats| {
        s.cpu_usage.as_ref().and_then(|u| u.total_usage).unwrap_or(0)
    };
    let cpu_delta = total(cpu).saturating_sub(total(pre));
    let system_delta =
        cpu.system_cpu_usage.unwrap_or(0).saturating_sub(pre.system_cpu_usage.unwrap_or(0));
    let online = cpu.online_cpus.filter(|n| *n > 0).map_or_else(
        || {
            cpu.cpu_usage
                .as_ref()
                .and_then(|u| u.percpu_usage.as_ref())
                .map_or(1, |per_cpu| per_cpu.len().max(1))
        },
        |n| n as usize,
    );
    if cpu_delta == 0 || system_delta == 0 {
        return 0.0;
    }
    #[expect(clippy::cast_precision_loss, reason = "a percentage needs no 64-bit precision")]
    let percent = cpu_delta as f64 / system_delta as f64 * online as f64 * 100.0;
    percent
}

/// Memory in use and the limit, as `docker stats` reports them: usage minus the inactive page
/// cache (`inactive_file` on cgroup v2, `total_inactive_file` on v1), which the kernel reclaims
/// before the limit bites.
pub(crate) fn memory(stats: &ContainerStatsResponse) -> (u64, u64) {
    let Some(memory) = &stats.memory_stats else { return (0, 0) };
    let usage = memory.usage.unwrap_or(0);
    let cache = memory
        .stats
        .as_ref()
        .and_then(|s| s.get("inactive_file").or_else(|| s.get("total_inactive_file")).copied())
        .filter(|cache| *cache < usage)
        .unwrap_or(0);
    (usage - cache, memory.limit.unwrap_or(0))
}

/// Parses [`REPLICATION_SQL`]'s output.
pub(crate) fn parse_replication(output: &str) -> Result<Vec<ReplicaState>, String> {
    output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.trim().split('|').collect();
            let [name, state, bytes, seconds] = fields.as_slice() else {
                return Err(format!("unexpected pg_stat_replication row {line:?}"));
            };
            let lag_bytes = bytes
                .parse::<i64>()
                .map_err(|err| format!("lag {bytes:?} in row {line:?}: {err}"))?;
            let lag_seconds = if seconds.is_empty() {
                None
            } else {
                Some(
                    seconds
                        .parse::<f64>()
                        .map_err(|err| format!("lag {seconds:?} in row {line:?}: {err}"))?,
                )
            };
            Ok(ReplicaState {
                name: (*name).to_owned(),
                state: (*state).to_owned(),
                lag_bytes: u64::try_from(lag_bytes).unwrap_or(0),
                lag_seconds,
            })
        })
        .collect()
}

impl DockerRuntime {
    async fn nodes(&self, instance: InstanceId) -> Result<Vec<Node>, RuntimeError> {
        let nodes: Vec<Node> = self
            .containers_of(instance)
            .await?
            .into_iter()
            .filter_map(Node::from_summary)
            .collect();
        if nodes.is_empty() {
            return Err(RuntimeError::NotFound { instance: instance.to_string() });
        }
        Ok(nodes)
    }

    /// CPU %, memory used and memory limit of one container. `stream=false` without
    /// `one-shot` makes the engine take two samples about a second apart, which is what the CPU
    /// percentage is computed from.
    async fn node_stats(&self, node: &Node) -> Result<(f64, u64, u64), RuntimeError> {
        let operation = format!("reading stats of container {}", node.name);
        let mut samples = self.client()?.stats(
            &node.id,
            Some(StatsOptionsBuilder::new().stream(false).one_shot(false).build()),
        );
        let sample = samples
            .next()
            .await
            .ok_or_else(|| RuntimeError::Engine {
                operation: operation.clone(),
                message: "the engine sent no sample".to_owned(),
            })?
            .map_err(|err| from_bollard(operation, err))?;
        let (used, limit) = memory(&sample);
        Ok((cpu_percent(&sample), used, limit))
    }

    /// Client connections of one PostgreSQL node, counted by the server itself.
    async fn node_connections(&self, node: &Node) -> Result<u64, RuntimeError> {
        let operation = format!("counting connections in {}", node.name);
        let output =
            self.postgres_exec(&node.id, CONNECTIONS_SQL, Vec::new()).await?.success(&operation)?;
        output.stdout.trim().parse().map_err(|err| RuntimeError::Engine {
            operation,
            message: format!("unexpected psql output {:?}: {err}", output.stdout.trim()),
        })
    }
}

#[async_trait]
impl ClusterSource for DockerRuntime {
    async fn cluster_info(&self, instance: InstanceId) -> iaas_core::Result<ClusterInfo> {
        let mut nodes = Vec::new();
        let mut endpoints = Vec::new();
        // No primary left (removed behind the platform's back): what the others say, as the
        // watcher reports too.
        let mut status = None;
        let mut others = Vec::new();
        let listed = self.nodes(instance).await?;
        // The members of a highly available cluster take turns as primary: the election says
        // which one is now (unknown while no member answers: all show as replicas).
        let leader = if listed.iter().any(|n| n.role.starts_with(MEMBER_PREFIX)) {
            self.read_members(instance).await?.and_then(|c| c.leader().map(|l| l.name.clone()))
        } else {
            None
        };
        for node in listed {
            let inspected =
                self.client()?.inspect_container(&node.id, None).await.map_err(|err| {
                    from_bollard(format!("inspecting container {}", node.name), err)
                })?;
            let state = inspected.state.clone().unwrap_or_default();
            let running = state.running.unwrap_or(false);
            if role_decides_status(&node.role) {
                status = Some(status_for_state(&state));
            } else {
                others.push((node.role.clone(), running));
            }
            let ports = inspected.network_settings.and_then(|n| n.ports).unwrap_or_default();
            for (container_port, bindings) in ports {
                for binding in bindings.unwrap_or_default() {
                    let Some(port) = binding.host_port.and_then(|p| p.parse().ok()) else {
                        continue;
                    };
                    endpoints.push(Endpoint {
                        name: if role_decides_status(&node.role) {
                            container_port.clone()
                        } else {
                            format!("{}:{container_port}", node.role)
                        },
                        host: binding
                            .host_ip
                            .filter(|ip| !ip.is_empty())
                            .unwrap_or_else(|| self.config.publish_host.clone()),
                        port,
                    });
                }
            }
            let role = match node.role.as_str() {
                ENDPOINT => NodeRole::Endpoint,
                STORE => NodeRole::Store,
                member if member.starts_with(MEMBER_PREFIX) => {
                    if leader.as_deref() == Some(member) {
                        NodeRole::Primary
                    } else {
                        NodeRole::Replica
                    }
                }
                other if role_decides_status(other) => NodeRole::Primary,
                _ => NodeRole::Replica,
            };
            nodes.push(NodeInfo { name: node.name, container_id: Some(node.id), role, running });
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        endpoints.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
        let status = status.unwrap_or_else(|| {
            status_without_primary(others.iter().map(|(role, running)| (role.as_str(), *running)))
        });
        Ok(ClusterInfo {
            instance_id: instance,
            status,
            nodes,
            endpoints,
            observed_at: iaas_core::observed_now(),
        })
    }

    async fn cluster_stats(&self, instance: InstanceId) -> iaas_core::Result<ClusterStats> {
        let nodes = self.nodes(instance).await?;
        if let Some(primary) = nodes.iter().find(|n| role_decides_status(&n.role))
            && !primary.running
        {
            return Err(primary_not_running(instance, primary));
        }
        let running: Vec<&Node> = nodes.iter().filter(|n| n.running).collect();
        let samples =
            futures_util::future::join_all(running.iter().map(|node| self.node_stats(node))).await;
        let mut stats = ClusterStats {
            instance_id: instance,
            cpu_percent: 0.0,
            memory_bytes: 0,
            memory_limit_bytes: 0,
            connections: None,
            observed_at: iaas_core::observed_now(),
        };
        for sample in samples {
            let (cpu, used, limit) = sample?;
            stats.cpu_percent += cpu;
            stats.memory_bytes += used;
            stats.memory_limit_bytes += limit;
        }
        if running.iter().any(|n| n.is_server()) {
            let mut total = 0;
            let mut complete = true;
            for node in running.iter().filter(|n| n.is_server()) {
                match self.node_connections(node).await {
                    Ok(count) => total += count,
                    Err(err) => {
                        tracing::warn!(%instance, node = %node.name, error = %err, "connection count unavailable");
                        complete = false;
                    }
                }
            }
            stats.connections = complete.then_some(total);
        }
        Ok(stats)
    }

    async fn replication_status(
        &self,
        instance: InstanceId,
    ) -> iaas_core::Result<ReplicationStatus> {
        let nodes = self.nodes(instance).await?;
        // A highly available cluster's primary is the member its election names.
        let leader = if nodes.iter().any(|n| n.role.starts_with(MEMBER_PREFIX)) {
            let members = self.read_members(instance).await?;
            let Some(leader) = members.as_ref().and_then(|c| c.leader()) else {
                return Err(Error::unavailable(
                    "postgres",
                    format!("reading replication status of instance {instance}"),
                    "no primary is elected right now (an election is under way)",
                ));
            };
            Some(leader.name.clone())
        } else {
            None
        };
        let primary = nodes
            .iter()
            .find(|n| leader.as_deref().map_or(n.role == PRIMARY, |l| n.role == l))
            .ok_or_else(|| Error::not_found("primary node of instance", instance))?;
        if !primary.is_postgres() {
            return Err(Error::Unsupported {
                what: format!(
                    "replication status of instance {instance}: only PostgreSQL replicates"
                ),
            });
        }
        let operation = format!("reading replication status of instance {instance}");
        if !primary.running {
            return Err(primary_not_running(instance, primary));
        }
        let output = psql_result(
            self.postgres_exec(&primary.id, REPLICATION_SQL, Vec::new()).await?,
            operation.clone(),
        )?;
        let replicas = parse_replication(&output.stdout)
            .map_err(|reason| Error::Internal { operation, source: reason.into() })?;
        Ok(ReplicationStatus {
            instance_id: instance,
            primary: primary.name.clone(),
            replicas,
            observed_at: iaas_core::observed_now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bollard::models::{ContainerCpuStats, ContainerCpuUsage, ContainerMemoryStats};

    use super::*;

    fn cpu(total: u64, system: u64) -> ContainerCpuStats {
        ContainerCpuStats {
            cpu_usage: Some(ContainerCpuUsage { total_usage: Some(total), ..Default::default() }),
            system_cpu_usage: Some(system),
            online_cpus: Some(2),
            ..Default::default()
        }
    }

    #[test]
    fn cpu_percent_is_computed_from_the_deltas_like_docker_stats() {
        let stats = ContainerStatsResponse {
            cpu_stats: Some(cpu(1_500, 10_000)),
            precpu_stats: Some(cpu(1_000, 8_000)),
            ..Default::default()
        };
        // 500 of 2000 host ticks on a 2-CPU host: half a core.
        assert!((cpu_percent(&stats) - 50.0).abs() < 1e-9, "{}", cpu_percent(&stats));
        // A one-shot sample has no previous one: 0, not a division by zero.
        let first = ContainerStatsResponse {
            cpu_stats: Some(cpu(1_500, 10_000)),
            precpu_stats: Some(ContainerCpuStats::default()),
            ..Default::default()
        };
        assert!(cpu_percent(&first) >= 0.0 && cpu_percent(&first).is_finite());
        assert!(cpu_percent(&ContainerStatsResponse::default()).abs() < f64::EPSILON);
    }

    #[test]
    fn memory_excludes_the_inactive_page_cache() {
        let stats = ContainerStatsResponse {
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(100),
                limit: Some(1_000),
                stats: Some(HashMap::from([("inactive_file".to_owned(), 30)])),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(memory(&stats), (70, 1_000));
        assert_eq!(memory(&ContainerStatsResponse::default()), (0, 0));
    }

    #[test]
    fn a_server_refusing_connections_is_transient_and_other_psql_failures_are_not() {
        let output = |exit_code, stderr: &str| ExecOutput {
            exit_code,
            stdout: String::new(),
            stderr: stderr.to_owned(),
        };
        let refused = psql_result(
            output(2, "psql: error: connection to server on socket \"/var/run/postgresql/.s.PGSQL.5432\" failed: No such file or directory"),
            "reading".to_owned(),
        )
        .unwrap_err();
        assert!(matches!(refused, Error::Unavailable { backend: "postgres", .. }), "{refused}");
        assert!(refused.is_transient());
        let broken =
            psql_result(output(3, "ERROR: syntax error"), "reading".to_owned()).unwrap_err();
        assert!(matches!(broken, Error::Internal { .. }), "{broken}");
        assert_eq!(psql_result(output(0, ""), "reading".to_owned()).unwrap().exit_code, 0);
    }

    #[test]
    fn replication_rows_are_parsed_and_garbage_is_refused() {
        let rows = parse_replication("replica-1|streaming|0|0.001\nreplica-2|catchup|4096|\n\n")
            .expect("valid rows");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name, "replica-1");
        assert_eq!(rows[0].lag_seconds, Some(0.001));
        assert_eq!(rows[1].lag_bytes, 4096);
        assert_eq!(rows[1].lag_seconds, None);
        assert!(parse_replication("").expect("no replicas").is_empty());
        assert!(parse_replication("replica-1|streaming").is_err());
        assert!(parse_replication("replica-1|streaming|lots|").is_err());
    }
}
