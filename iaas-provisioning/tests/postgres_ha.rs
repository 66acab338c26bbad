//! Highly available PostgreSQL on the real engine, with the local image
//! (`IAAS_TEST_POSTGRES_HA_IMAGE`, built by `scripts/services.sh`): a primary and two replicas
//! run by Patroni over etcd behind an HAProxy endpoint, watched by the platform's supervisor.
//!
//! A client writes one row at a time through the read-write endpoint while the primary is
//! killed (`docker kill`, as a crash would) or hands over in a switchover. The tests check what
//! a tenant relies on: writes are accepted again on the same address, no acknowledged row is
//! lost, the lost member comes back, and the events tell what happened. How long writes were
//! refused is printed (on standard error; `cargo nextest run --no-capture` shows it) and recorded in
//! docs/reliability.md; it is measured, not asserted, beyond a bound that only a failover that
//! did not happen would cross.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use common::{instance, record_created, runtime, spawn_watcher, status_becomes};

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iaas_core::memory::MemoryInstanceRepository;
use iaas_core::pgbackrest::BackupKind;
use iaas_core::{
    ClusterSource, ContainerRuntime, EventAction, InfrastructureEvent, Instance,
    InstanceRepository, InstanceSpec, InstanceStatus, NodeRole, Outbox, PostgresSpec, RestoreSpec,
    Secrets, SystemClock,
};
use iaas_docker::DockerRuntime;
use iaas_provisioning::{Supervisor, SupervisorConfig, WatcherConfig};
use iaas_testkit::wait::eventually;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

const APP_PASSWORD: &str = "ha-app-pw-91c2";

/// Longer than any failover that happened: Patroni's leader key lives 10 s, an election and
/// the endpoint's checks take a few more.
const FAILOVER_BOUND: Duration = Duration::from_secs(60);

/// A running 1+2 cluster, its repository (fed by a watcher) and a supervisor over it.
struct Cluster {
    runtime: Arc<DockerRuntime>,
    repo: Arc<MemoryInstanceRepository>,
    db: Instance,
    supervisor: Arc<Supervisor>,
    cancel: CancellationToken,
    url: String,
}

impl Cluster {
    async fn start(name: &str, synchronous: bool) -> Self {
        let runtime = Arc::new(runtime().await);
        let repo = Arc::new(MemoryInstanceRepository::new());
        let mut spec = PostgresSpec::new("orders", 2).highly_available();
        spec.synchronous = synchronous;
        let mut db = instance(InstanceSpec::Postgres(spec));
        db.name = iaas_core::InstanceName::new(name).unwrap();
        record_created(&repo, &db).await;
        let (_watcher, cancel, _task) = spawn_watcher(
            &runtime.engine().client().unwrap(),
            repo.clone(),
            WatcherConfig::default(),
        );
        let started = Instant::now();
        runtime
            .provision(&db, &Secrets::new().with("POSTGRES_PASSWORD", APP_PASSWORD))
            .await
            .expect("the cluster is provisioned");
        eprintln!(
            "{name}: 1+2 cluster provisioned and its primary reachable in {:?}",
            started.elapsed()
        );
        status_becomes(&repo, &db, InstanceStatus::Running, Duration::from_secs(20)).await;
        let mut config = SupervisorConfig::default();
        config.interval = Duration::from_millis(500);
        let supervisor =
            Arc::new(Supervisor::new(runtime.clone(), repo.clone(), Arc::new(SystemClock), config));
        let running = supervisor.clone();
        let token = cancel.child_token();
        tokio::spawn(async move { running.run(token).await });
        let port = published_port(&runtime, &db).await;
        let url = format!("postgres://app:{APP_PASSWORD}@127.0.0.1:{port}/orders");
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("the endpoint answers");
        sqlx::query("CREATE TABLE acked (v text PRIMARY KEY)").execute(&mut conn).await.unwrap();
        // The supervisor has looked at the election once, so it knows the primary.
        eventually(Duration::from_secs(20), || async {
            if supervisor.stats().passes >= 2 { Ok(()) } else { Err(supervisor.stats()) }
        })
        .await
        .unwrap();
        Self { runtime, repo, db, supervisor, cancel, url }
    }

    async fn leader(&self) -> String {
        let members = self.runtime.cluster_members(self.db.id).await.unwrap().expect("members");
        members.leader().expect("a primary").name.clone()
    }

    async fn events(&self, action: EventAction) -> Vec<InfrastructureEvent> {
        let entries = self.repo.claim("test-reader", 10_000, Duration::from_secs(1)).await.unwrap();
        self.repo.release("test-reader").await.unwrap();
        entries.into_iter().map(|e| e.event).filter(|e| e.action == action).collect()
    }

    async fn remove(self) {
        self.cancel.cancel();
        self.runtime.remove(self.db.id, true).await.expect("the cluster is removed");
    }
}

/// The host port the endpoint publishes the read-write port on.
async fn published_port(runtime: &DockerRuntime, db: &Instance) -> u16 {
    let docker = runtime.engine().client().unwrap();
    let name = format!("iaas-{}-endpoint", db.id);
    let inspected = docker.inspect_container(&name, None).await.unwrap();
    let ports = inspected.network_settings.and_then(|n| n.ports).expect("published ports");
    let binding = ports.get("5432/tcp").cloned().flatten().expect("5432 published");
    binding[0].host_port.as_deref().expect("a host port").parse().unwrap()
}

/// What the writer saw: every row acknowledged, and each stretch in which writes failed.
#[derive(Default)]
struct Writes {
    acked: Vec<String>,
    /// (when the first write failed, when a write succeeded again)
    outages: Vec<(Instant, Option<Instant>)>,
}

/// Writes one row at a time (a new connection each, as a client reconnecting would) until
/// `stop`, recording what was acknowledged.
fn spawn_writer(
    url: String,
    stop: CancellationToken,
) -> (Arc<Mutex<Writes>>, tokio::task::JoinHandle<()>) {
    let writes = Arc::new(Mutex::new(Writes::default()));
    let log = writes.clone();
    let task = tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.is_cancelled() {
            n += 1;
            let row = format!("row-{n}");
            let write = async {
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                sqlx::query("INSERT INTO acked (v) VALUES ($1)")
                    .bind(&row)
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            };
            let ok =
                matches!(tokio::time::timeout(Duration::from_secs(3), write).await, Ok(Ok(())));
            let now = Instant::now();
            {
                let mut log = log.lock().unwrap();
                match (ok, log.outages.last_mut()) {
                    (true, Some((_, end @ None))) => *end = Some(now),
                    (false, None) | (false, Some((_, Some(_)))) => log.outages.push((now, None)),
                    _ => {}
                }
                if ok {
                    log.acked.push(row);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (writes, task)
}

/// Every row in the table, read through the endpoint. Read again when the connection is cut:
/// right after a failover the endpoint may still close a connection while the member that was
/// lost comes back and its checks settle, which a client retries as this does.
async fn rows(url: &str) -> BTreeSet<String> {
    eventually(Duration::from_secs(20), || async {
        let mut conn = sqlx::PgConnection::connect(url).await.map_err(|e| e.to_string())?;
        let rows = sqlx::query_scalar::<_, String>("SELECT v FROM acked")
            .fetch_all(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(rows.into_iter().collect())
    })
    .await
    .unwrap_or_else(|last| panic!("the rows could not be read through the endpoint: {last}"))
}

#[tokio::test]
async fn a_killed_primary_is_replaced_writes_resume_on_the_same_endpoint_and_nothing_acked_is_lost()
{
    // Synchronous replication: every acknowledged row is on a replica before the answer, so
    // none may be missing after the failover (asynchronous clusters may lose the last moments'
    // writes, at most Patroni's `maximum_lag_on_failover`).
    let cluster = Cluster::start("ha-failover", true).await;
    let old = cluster.leader().await;
    let stop = CancellationToken::new();
    let (writes, writer) = spawn_writer(cluster.url.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    let docker = cluster.runtime.engine().client().unwrap();
    let killed = Instant::now();
    docker.kill_container(&format!("iaas-{}-{old}", cluster.db.id), None).await.unwrap();

    // Writes are accepted again on the same address once a replica is promoted.
    eventually(FAILOVER_BOUND, || async {
        let log = writes.lock().unwrap();
        match log.outages.iter().find(|(start, _)| *start >= killed) {
            Some((_, Some(end))) => Ok(*end),
            other => Err(format!("{:?}", other.map(|(s, e)| (s.elapsed(), e.is_some())))),
        }
    })
    .await
    .unwrap_or_else(|last| panic!("writes never resumed after the kill: {last}"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    writer.await.unwrap();

    let (acked, outage) = {
        let log = writes.lock().unwrap();
        let (start, end) = log.outages.iter().find(|(start, _)| *start >= killed).copied().unwrap();
        (
            log.acked.clone(),
            end.unwrap().duration_since(killed).max(end.unwrap().duration_since(start)),
        )
    };
    let present = rows(&cluster.url).await;
    let lost: Vec<&String> = acked.iter().filter(|row| !present.contains(*row)).collect();
    eprintln!(
        "failover: writes accepted again {:.1} s after the kill; {} rows acknowledged, {} lost",
        outage.as_secs_f64(),
        acked.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
    let new = cluster.leader().await;
    assert_ne!(new, old, "a replica was promoted");

    // The supervisor reports the failover and brings the lost member back as a replica.
    eventually(Duration::from_secs(30), || async {
        let failovers = cluster.events(EventAction::Failover).await;
        match failovers.as_slice() {
            [event] => Ok(event.clone()),
            other => Err(other.len()),
        }
    })
    .await
    .map(|event| {
        assert_eq!(event.metadata.get("old_primary"), Some(&old));
        assert_eq!(event.metadata.get("new_primary"), Some(&new));
        assert!(event.metadata.contains_key("lost_wal_bytes_at_most"), "{:?}", event.metadata);
    })
    .unwrap_or_else(|n| panic!("expected one failover event, found {n}"));
    eventually(Duration::from_secs(60), || async {
        let members = cluster.runtime.cluster_members(cluster.db.id).await.unwrap().unwrap();
        let up = members.members.iter().filter(|m| m.is_up()).count();
        let leaders = members
            .members
            .iter()
            .filter(|m| m.role == iaas_core::patroni::PatroniRole::Leader)
            .count();
        if up == 3 && leaders == 1 { Ok(()) } else { Err(format!("{members:?}")) }
    })
    .await
    .unwrap_or_else(|last| panic!("the lost member never came back: {last}"));
    let started = cluster.events(EventAction::Started).await;
    assert!(
        started.iter().any(|e| e.metadata.get("member") == Some(&old)),
        "a started event names the member brought back: {started:?}"
    );
    assert_eq!(
        cluster.repo.get_instance(cluster.db.id).await.unwrap().unwrap().status,
        InstanceStatus::Running,
        "the cluster was running throughout"
    );
    // A switchover of the synchronous cluster (to its synchronous standby) loses nothing.
    // Right after a failover Patroni may not have named its synchronous standby yet, and
    // refuses (409 `refused`, with its reason) what a client then asks again.
    cluster.supervisor.expect_switchover(cluster.db.id, None);
    let change = eventually(Duration::from_secs(30), || async {
        match cluster.runtime.switchover(cluster.db.id, None).await {
            Ok(change) => Ok(change),
            Err(refused @ iaas_core::RuntimeError::Refused { .. }) => Err(refused.to_string()),
            Err(other) => panic!("the switchover failed: {other}"),
        }
    })
    .await
    .unwrap_or_else(|last| panic!("the switchover was never accepted: {last}"));
    assert!(change.timeline.is_some_and(|t| t >= 3), "a new timeline: {change:?}");
    assert_eq!(rows(&cluster.url).await.len(), present.len(), "the switchover lost nothing");
    cluster.remove().await;
}

#[tokio::test]
async fn a_switchover_under_writes_loses_nothing_and_is_no_failover() {
    let cluster = Cluster::start("ha-switchover", false).await;
    let old = cluster.leader().await;
    let stop = CancellationToken::new();
    let (writes, writer) = spawn_writer(cluster.url.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    cluster.supervisor.expect_switchover(cluster.db.id, Some("member-2"));
    let asked = Instant::now();
    let change = cluster.runtime.switchover(cluster.db.id, Some("member-2")).await.unwrap();
    let took = asked.elapsed();
    cluster.supervisor.switchover_done(
        cluster.db.id,
        cluster.runtime.cluster_members(cluster.db.id).await.unwrap(),
    );
    assert_eq!(change.old_leader.as_deref(), Some(old.as_str()));
    assert_eq!(change.new_leader, "member-2");
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    writer.await.unwrap();

    let (acked, pause) = {
        let log = writes.lock().unwrap();
        let pause: Duration = log
            .outages
            .iter()
            .map(|(start, end)| end.map_or(Duration::MAX, |end| end.duration_since(*start)))
            .sum();
        (log.acked.clone(), pause)
    };
    let present = rows(&cluster.url).await;
    let lost: Vec<&String> = acked.iter().filter(|row| !present.contains(*row)).collect();
    eprintln!(
        "switchover: took {:.1} s; writes refused for {:.1} s in all; {} rows acknowledged, {} lost",
        took.as_secs_f64(),
        pause.as_secs_f64(),
        acked.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
    assert_eq!(cluster.leader().await, "member-2");
    // The cluster info and the replication view follow the election.
    let info = cluster.runtime.cluster_info(cluster.db.id).await.unwrap();
    let primaries: Vec<&str> = info
        .nodes
        .iter()
        .filter(|n| n.role == NodeRole::Primary)
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(primaries, [format!("iaas-{}-member-2", cluster.db.id)]);
    assert_eq!(info.nodes.iter().filter(|n| n.role == NodeRole::Endpoint).count(), 1);
    assert_eq!(info.nodes.iter().filter(|n| n.role == NodeRole::Store).count(), 1);
    let replication = cluster.runtime.replication_status(cluster.db.id).await.unwrap();
    assert_eq!(replication.primary, format!("iaas-{}-member-2", cluster.db.id));
    eventually(Duration::from_secs(20), || async {
        let replication = cluster.runtime.replication_status(cluster.db.id).await.unwrap();
        let streaming = replication.replicas.iter().filter(|r| r.state == "streaming").count();
        if streaming == 2 { Ok(()) } else { Err(format!("{:?}", replication.replicas)) }
    })
    .await
    .unwrap_or_else(|last| panic!("the old primary never streamed from the new one: {last}"));
    // Another look or two of the supervisor: it knew of the switchover.
    let passes = cluster.supervisor.stats().passes;
    eventually(Duration::from_secs(10), || async {
        if cluster.supervisor.stats().passes >= passes + 2 { Ok(()) } else { Err(()) }
    })
    .await
    .unwrap();
    assert!(cluster.events(EventAction::Failover).await.is_empty(), "a switchover is no failover");

    // A switchover to what is not a running replica is refused, and changes nothing.
    let refused = cluster.runtime.switchover(cluster.db.id, Some("member-2")).await;
    assert!(matches!(refused, Err(iaas_core::RuntimeError::Refused { .. })), "{refused:?}");
    let refused = cluster.runtime.switchover(cluster.db.id, Some("member-7")).await;
    assert!(matches!(refused, Err(iaas_core::RuntimeError::Refused { .. })), "{refused:?}");
    cluster.remove().await;
}

#[tokio::test]
async fn a_restore_to_a_time_between_writes_has_exactly_the_rows_of_that_time() {
    let source = Cluster::start("ha-source", false).await;
    let mut conn = sqlx::PgConnection::connect(&source.url).await.unwrap();
    let backed_up = Instant::now();
    let backup = source.runtime.backup(source.db.id, BackupKind::Full).await.unwrap();
    eprintln!(
        "backup: full, {} bytes of database, {} in the repository, in {:.1} s",
        backup.database_bytes,
        backup.repository_bytes,
        backed_up.elapsed().as_secs_f64()
    );
    sqlx::query("INSERT INTO acked SELECT 'before-' || g FROM generate_series(1, 500) g")
        .execute(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The server's clock, to the microsecond.
    let micros: i64 = sqlx::query_scalar("SELECT (extract(epoch FROM now()) * 1000000)::bigint")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let target = chrono::DateTime::from_timestamp_micros(micros).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    sqlx::query("INSERT INTO acked SELECT 'after-' || g FROM generate_series(1, 1000) g")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let mut spec = PostgresSpec::new("orders", 1).highly_available();
    spec.restore = Some(RestoreSpec { from: source.db.id, target_time: Some(target) });
    let copy = instance(InstanceSpec::Postgres(spec));
    let restoring = Instant::now();
    source
        .runtime
        .provision(&copy, &Secrets::new().with("POSTGRES_PASSWORD", "copy-pw-5521"))
        .await
        .expect("the copy is restored");
    eprintln!(
        "restore: a 1+1 cluster at the target time in {:.1} s",
        restoring.elapsed().as_secs_f64()
    );
    let port = published_port(&source.runtime, &copy).await;
    let url = format!("postgres://app:copy-pw-5521@127.0.0.1:{port}/orders");
    let mut conn =
        sqlx::PgConnection::connect(&url).await.expect("the copy answers with its own password");
    let (before, after): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE v LIKE 'before-%'), count(*) FILTER (WHERE v LIKE 'after-%') FROM acked",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((before, after), (500, 0), "exactly the rows of the target time");
    // The copy takes writes and archives them into a repository of its own.
    sqlx::query("INSERT INTO acked VALUES ('on-the-copy')").execute(&mut conn).await.unwrap();
    let copies = source.runtime.backups(copy.id).await.unwrap();
    assert!(copies.wal_max.is_some(), "the copy archives its WAL: {copies:?}");
    // The source kept running, with all its rows.
    assert_eq!(rows(&source.url).await.len(), 1_500);

    source.runtime.remove(copy.id, true).await.unwrap();
    source.remove().await;
}

/// Runs `script` in a busybox container on `network` (as a tenant's other container would be)
/// and returns its exit status.
async fn run_on_network(docker: &bollard::Docker, network: &str, script: &str) -> i64 {
    use futures_util::StreamExt;
    let created = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            bollard::models::ContainerCreateBody {
                image: Some(iaas_testkit::busybox_image()),
                cmd: Some(vec!["sh".into(), "-c".into(), script.into()]),
                host_config: Some(bollard::models::HostConfig {
                    network_mode: Some(network.to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    docker.start_container(&created.id, None).await.unwrap();
    let code = match docker
        .wait_container(&created.id, None::<bollard::query_parameters::WaitContainerOptions>)
        .next()
        .await
    {
        Some(Ok(exit)) => exit.status_code,
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        other => panic!("waiting for the probe: {other:?}"),
    };
    let removal =
        bollard::query_parameters::RemoveContainerOptionsBuilder::new().force(true).build();
    docker.remove_container(&created.id, Some(removal)).await.unwrap();
    code
}

#[tokio::test]
async fn the_tenants_other_containers_can_neither_read_nor_rewrite_the_election() {
    let cluster = Cluster::start("ha-store", false).await;
    let docker = cluster.runtime.engine().client().unwrap();
    let network = cluster.runtime.user_network(cluster.db.owner);
    let store = format!("http://iaas-{}-store:2379", cluster.db.id);
    // The control: the store answers on the tenant's network.
    let health = run_on_network(&docker, &network, &format!("wget -q -O- {store}/health")).await;
    assert_eq!(health, 0, "the store's health is reachable from the tenant's network");
    // Patroni's configuration (`/service/<scope>/config`, base64 in etcd's JSON gateway) can be
    // neither read nor written without the members' password.
    let read = format!(
        "wget -q -O- --post-data '{{\"key\":\"L3NlcnZpY2Uv\",\"range_end\":\"L3NlcnZpY2Uw\"}}' {store}/v3/kv/range"
    );
    let write = format!(
        "wget -q -O- --post-data '{{\"key\":\"L3NlcnZpY2UveC9jb25maWc=\",\"value\":\"e30=\"}}' {store}/v3/kv/put"
    );
    assert_ne!(run_on_network(&docker, &network, &read).await, 0, "the election was read");
    assert_ne!(run_on_network(&docker, &network, &write).await, 0, "the store was written");
    // The members still elect through it.
    assert!(
        cluster.runtime.cluster_members(cluster.db.id).await.unwrap().unwrap().leader().is_some()
    );
    cluster.remove().await;
}
