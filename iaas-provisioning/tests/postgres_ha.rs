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

use common::{instance, record_created, runtime, runtime_with, spawn_watcher, status_becomes};

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iaas_core::memory::MemoryInstanceRepository;
use iaas_core::pgbackrest::BackupKind;
use iaas_core::{
    ClusterSource, ContainerRuntime, EventAction, InfrastructureEvent, Instance,
    InstanceRepository, InstanceSpec, InstanceStatus, JobQueue, NodeRole, Outbox, PostgresSpec,
    Quota, RestoreSpec, Secrets, SpecChange, SystemClock,
};
use iaas_docker::{DockerRuntime, DockerRuntimeConfig, S3Repository};
use iaas_provisioning::{SecretSealer, Supervisor, SupervisorConfig, WatcherConfig};
use iaas_testkit::wait::eventually;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

const APP_PASSWORD: &str = "ha-app-pw-91c2";

/// Longer than any failover that happened: Patroni's leader key lives 10 s, an election and
/// the endpoint's checks take a few more.
const FAILOVER_BOUND: Duration = Duration::from_secs(60);

/// A running cluster (1+2 unless made otherwise), its repository (fed by a watcher) and a
/// supervisor over it.
struct Cluster {
    runtime: Arc<DockerRuntime>,
    repo: Arc<MemoryInstanceRepository>,
    db: Instance,
    supervisor: Arc<Supervisor>,
    watcher: Arc<iaas_provisioning::Watcher>,
    cancel: CancellationToken,
    /// Stops the supervisor's looks (a child of `cancel`).
    supervising: CancellationToken,
    url: String,
}

impl Cluster {
    async fn start(name: &str, synchronous: bool) -> Self {
        let mut spec = PostgresSpec::new("orders", 2).highly_available();
        spec.synchronous = synchronous;
        Self::start_with(runtime().await, instance(InstanceSpec::Postgres(spec)), name).await
    }

    /// `db` (a highly available cluster) on `runtime`, named `name`.
    async fn start_with(runtime: DockerRuntime, mut db: Instance, name: &str) -> Self {
        let runtime = Arc::new(runtime);
        let repo = Arc::new(MemoryInstanceRepository::new());
        db.name = iaas_core::InstanceName::new(name).unwrap();
        let InstanceSpec::Postgres(spec) = &db.spec else { unreachable!("a PostgreSQL cluster") };
        let replicas = spec.replicas;
        record_created(&repo, &db).await;
        let (watcher, cancel, _task) = spawn_watcher(
            &runtime.engine().client().unwrap(),
            repo.clone(),
            WatcherConfig::default(),
        );
        let started = Instant::now();
        // As the API does: every password drawn before the provisioning, the platform's own
        // kept sealed for the cluster's life.
        let given = Secrets::new().with("POSTGRES_PASSWORD", APP_PASSWORD);
        let secrets = runtime.complete_secrets(&db, &given).unwrap();
        let sealer = SecretSealer::new(&[42; 32]);
        let own = secrets.clone().without("POSTGRES_PASSWORD");
        let platform = sealer.seal_platform(db.id, &own).unwrap();
        repo.keep_platform_secrets(db.id, &platform).await.unwrap();
        runtime.provision(&db, &secrets).await.expect("the cluster is provisioned");
        eprintln!(
            "{name}: 1+{replicas} cluster provisioned and its primary reachable in {:?}",
            started.elapsed()
        );
        status_becomes(&repo, &db, InstanceStatus::Running, Duration::from_secs(20)).await;
        let mut config = SupervisorConfig::default();
        config.interval = Duration::from_millis(500);
        let supervisor = Arc::new(
            Supervisor::new(runtime.clone(), repo.clone(), Arc::new(SystemClock), config)
                .with_kept_secrets(repo.clone(), sealer),
        );
        let running = supervisor.clone();
        let supervising = cancel.child_token();
        let token = supervising.clone();
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
        let cluster = Self { runtime, repo, db, supervisor, watcher, cancel, supervising, url };
        // Every replica streams before a test begins: Patroni refuses a switchover to a member
        // still catching up (seen on a slow machine), and a failover needs one to promote.
        eventually(Duration::from_secs(60), || async {
            let now = streaming(&cluster).await;
            if now.len() == usize::from(replicas) { Ok(()) } else { Err(now) }
        })
        .await
        .unwrap_or_else(|last| panic!("{name}: not every replica streamed: {last:?}"));
        cluster
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
        // A look of the supervisor under way when it was told to stop may still make again a
        // member the removal just took (its volume is then in use): removing is idempotent.
        eventually(Duration::from_secs(30), || async {
            self.runtime.remove(self.db.id, true).await.map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|last| panic!("the cluster was not removed: {last}"));
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

/// How long after `since` writes were accepted again, once they are (the first write that
/// failed after `since` to the first that succeeded after it).
async fn resumed_after(writes: &Mutex<Writes>, since: Instant) -> Duration {
    let end = eventually(FAILOVER_BOUND, || async {
        let log = writes.lock().unwrap();
        match log.outages.iter().find(|(start, _)| *start >= since) {
            Some((_, Some(end))) => Ok(*end),
            other => Err(format!("{:?}", other.map(|(s, e)| (s.elapsed(), e.is_some())))),
        }
    })
    .await
    .unwrap_or_else(|last| panic!("writes never resumed: {last}"));
    end.duration_since(since)
}

/// Waits until `count` members are up under one primary, and returns the primary.
async fn members_up(cluster: &Cluster, count: usize) -> String {
    eventually(Duration::from_secs(90), || async {
        let members = cluster.runtime.cluster_members(cluster.db.id).await.unwrap().unwrap();
        let up = members.members.iter().filter(|m| m.is_up()).count();
        let leaders: Vec<&str> = members
            .members
            .iter()
            .filter(|m| m.role == iaas_core::patroni::PatroniRole::Leader)
            .map(|m| m.name.as_str())
            .collect();
        match leaders.as_slice() {
            [leader] if up == count => Ok((*leader).to_owned()),
            _ => Err(format!("{members:?}")),
        }
    })
    .await
    .unwrap_or_else(|last| panic!("{count} members never came up under one primary: {last}"))
}

#[tokio::test]
async fn a_removed_or_cut_off_primary_is_replaced_and_nothing_acked_is_lost() {
    // Synchronous: every acknowledged row must survive both losses.
    let cluster = Cluster::start("ha-lost-primary", true).await;
    let docker = cluster.runtime.engine().client().unwrap();
    let stop = CancellationToken::new();
    let (writes, writer) = spawn_writer(cluster.url.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The primary's container removed, as `docker rm -f` does (its volume stays): a replica is
    // promoted, and the supervisor makes the member again on its data, as a replica.
    let first = cluster.leader().await;
    let removed = Instant::now();
    let force =
        bollard::query_parameters::RemoveContainerOptionsBuilder::default().force(true).build();
    docker.remove_container(&format!("iaas-{}-{first}", cluster.db.id), Some(force)).await.unwrap();
    let outage = resumed_after(&writes, removed).await;
    eprintln!("primary removed: writes accepted again {:.1} s later", outage.as_secs_f64());
    let second = members_up(&cluster, 3).await;
    assert_ne!(second, first, "a replica was promoted");
    let started = cluster.events(EventAction::Started).await;
    assert!(
        started.iter().any(|e| e.metadata.get("member") == Some(&first)),
        "a started event names the member made again: {started:?}"
    );

    // The new primary cut off from the cluster's network, as a host whose port stops
    // answering: it reaches neither the store nor the other members, so Patroni demotes it,
    // promotes its synchronous standby, and the endpoint sends writes there. Patroni promotes
    // only the standby its synchronous mode names (so no acknowledged write is lost): until the
    // new primary has named one, a primary lost is not replaced, so the test waits for it.
    eventually(Duration::from_secs(60), || async {
        let members = cluster.runtime.cluster_members(cluster.db.id).await.unwrap().unwrap();
        let named = members
            .members
            .iter()
            .any(|m| m.role == iaas_core::patroni::PatroniRole::SyncStandby && m.is_up());
        if named { Ok(()) } else { Err(format!("{members:?}")) }
    })
    .await
    .unwrap_or_else(|last| panic!("no synchronous standby was named: {last}"));
    let name = format!("iaas-{}-{second}", cluster.db.id);
    let inspected = docker
        .inspect_container(&name, None::<bollard::query_parameters::InspectContainerOptions>)
        .await
        .unwrap();
    let networks = inspected.network_settings.and_then(|n| n.networks).unwrap_or_default();
    let (network, settings) = networks.into_iter().next().expect("the member's network");
    let cut = Instant::now();
    let disconnect =
        bollard::models::NetworkDisconnectRequest { container: name.clone(), force: Some(true) };
    docker.disconnect_network(&network, disconnect).await.unwrap();
    let outage = resumed_after(&writes, cut).await;
    eprintln!("primary cut off: writes accepted again {:.1} s later", outage.as_secs_f64());
    // Connected again with the same names, it follows the new primary.
    let connect = bollard::models::NetworkConnectRequest {
        container: name.clone(),
        endpoint_config: Some(bollard::models::EndpointSettings {
            aliases: settings.aliases,
            ..Default::default()
        }),
    };
    docker.connect_network(&network, connect).await.unwrap();
    let third = members_up(&cluster, 3).await;
    assert_ne!(third, second, "a replica was promoted while the primary was cut off");
    stop.cancel();
    writer.await.unwrap();

    let acked = writes.lock().unwrap().acked.clone();
    let present = rows(&cluster.url).await;
    let lost: Vec<&String> = acked.iter().filter(|row| !present.contains(*row)).collect();
    eprintln!("{} rows acknowledged, {} lost", acked.len(), lost.len());
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
    // Both changes of primary are reported.
    eventually(Duration::from_secs(30), || async {
        let failovers = cluster.events(EventAction::Failover).await;
        if failovers.len() == 2 { Ok(()) } else { Err(failovers.len()) }
    })
    .await
    .unwrap_or_else(|n| panic!("expected two failover events, found {n}"));
    cluster.remove().await;
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
    let outage = resumed_after(&writes, killed).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    writer.await.unwrap();

    let acked = writes.lock().unwrap().acked.clone();
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
    // The lost member comes back.
    members_up(&cluster, 3).await;
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
    cluster.supervisor.expect_switchover(cluster.db.id, None).await;
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

    cluster.supervisor.expect_switchover(cluster.db.id, Some("member-2")).await;
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
    let backup = source.runtime.backup(source.db.id, BackupKind::Full, None).await.unwrap();
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

#[tokio::test]
async fn a_cluster_whose_endpoint_or_every_member_and_store_were_removed_is_made_again_on_its_data()
{
    let spec = PostgresSpec::new("orders", 1).highly_available();
    let mut cluster =
        Cluster::start_with(runtime().await, instance(InstanceSpec::Postgres(spec)), "ha-gone")
            .await;
    let mut conn = sqlx::PgConnection::connect(&cluster.url).await.unwrap();
    sqlx::query("INSERT INTO acked SELECT 'row-' || g FROM generate_series(1, 300) g")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let docker = cluster.runtime.engine().client().unwrap();
    let name = |role: &str| format!("iaas-{}-{role}", cluster.db.id);
    let remove = |role: &'static str, with_data: bool| {
        let (docker, name) = (docker.clone(), name(role));
        async move {
            let force = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                .force(true)
                .build();
            docker.remove_container(&name, Some(force)).await.unwrap();
            if with_data {
                let volume = format!("{name}-data");
                let options = None::<bollard::query_parameters::RemoveVolumeOptions>;
                docker.remove_volume(&volume, options).await.unwrap();
            }
        }
    };

    // The endpoint removed: the cluster is failed, not deleted (its data is all there), and
    // the supervisor makes the endpoint again, on host ports the engine picks anew.
    remove("endpoint", false).await;
    eventually(Duration::from_secs(60), || async {
        let status = cluster.repo.get_instance(cluster.db.id).await.unwrap().unwrap().status;
        let started = cluster.events(EventAction::Started).await;
        let back =
            started.iter().any(|e| e.metadata.get("member").is_some_and(|m| m == "endpoint"));
        if status == InstanceStatus::Running && back { Ok(()) } else { Err(status) }
    })
    .await
    .unwrap_or_else(|last| panic!("the endpoint was not made again: {last}"));
    assert!(cluster.events(EventAction::Deleted).await.is_empty(), "the cluster was deleted");
    assert!(!cluster.events(EventAction::Failed).await.is_empty(), "failed while it had none");
    let port = published_port(&cluster.runtime, &cluster.db).await;
    cluster.url = format!("postgres://app:{APP_PASSWORD}@127.0.0.1:{port}/orders");
    assert_eq!(rows(&cluster.url).await.len(), 300, "the rows, through the new endpoint");

    // Stopped, then its endpoint removed: it stays stopped, and nothing is made meanwhile.
    // Started again, it is failed until the supervisor has made its endpoint, then running.
    cluster.runtime.stop(cluster.db.id).await.unwrap();
    status_becomes(&cluster.repo, &cluster.db, InstanceStatus::Stopped, Duration::from_secs(60))
        .await;
    remove("endpoint", false).await;
    let passes = cluster.supervisor.stats().passes;
    eventually(Duration::from_secs(20), || async {
        if cluster.supervisor.stats().passes >= passes + 4 { Ok(()) } else { Err(()) }
    })
    .await
    .unwrap();
    let status = cluster.repo.get_instance(cluster.db.id).await.unwrap().unwrap().status;
    assert_eq!(status, InstanceStatus::Stopped, "a stopped cluster without endpoint");
    let info = cluster.runtime.cluster_info(cluster.db.id).await.unwrap();
    assert_eq!(info.status, InstanceStatus::Stopped, "the cluster view agrees: {info:?}");
    let (containers, _) = containers_and_volumes(&cluster).await;
    assert!(!containers.contains("endpoint"), "an endpoint was made: {containers:?}");
    cluster.runtime.start(cluster.db.id).await.unwrap();
    // What the start's job records, and a reconciliation too.
    let observed = cluster.runtime.primary_state(cluster.db.id).await.unwrap();
    assert_eq!(observed.status, InstanceStatus::Failed, "started without endpoint: {observed:?}");
    cluster.watcher.reconcile().await.unwrap();
    status_becomes(&cluster.repo, &cluster.db, InstanceStatus::Running, Duration::from_secs(60))
        .await;
    let port = published_port(&cluster.runtime, &cluster.db).await;
    cluster.url = format!("postgres://app:{APP_PASSWORD}@127.0.0.1:{port}/orders");
    assert_eq!(rows(&cluster.url).await.len(), 300, "the rows, after the start");

    // Every member and the store removed (as `docker rm -f` does: their volumes stay) while
    // the supervisor does not look, so its next look finds no member to copy a member's
    // settings from: the platform's kept secrets serve.
    cluster.supervising.cancel();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let removed = Instant::now();
    for role in ["member-0", "member-1", "store"] {
        remove(role, false).await;
    }
    let looking = cluster.cancel.child_token();
    tokio::spawn({
        let (supervisor, looking) = (cluster.supervisor.clone(), looking.clone());
        async move { supervisor.run(looking).await }
    });
    let present = eventually(Duration::from_secs(120), || async {
        let mut conn =
            sqlx::PgConnection::connect(&cluster.url).await.map_err(|e| e.to_string())?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM acked")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query("INSERT INTO acked VALUES ('after')")
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(count)
    })
    .await
    .unwrap_or_else(|last| panic!("the cluster never took writes again: {last}"));
    eprintln!(
        "every member and the store removed: writes accepted again {:.1} s later",
        removed.elapsed().as_secs_f64()
    );
    assert_eq!(present, 300, "every row written before the removal is there");
    let started = cluster.events(EventAction::Started).await;
    for role in ["member-0", "member-1", "store"] {
        assert!(
            started.iter().any(|e| e.metadata.get("member").map(String::as_str) == Some(role)),
            "a started event names {role}: {started:?}"
        );
    }
    // Made from the kept secrets, which hold no application password: a filler stands in.
    let inspected = docker
        .inspect_container(
            &name("member-0"),
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    let env = inspected.config.and_then(|c| c.env).unwrap_or_default();
    let app = env.iter().find_map(|e| e.strip_prefix("IAAS_APP_PASSWORD=")).unwrap_or_default();
    assert!(!app.is_empty() && app != APP_PASSWORD, "member-0 was made from a sibling's settings");
    // The replica streams again from the primary.
    eventually(Duration::from_secs(60), || async {
        let now = streaming(&cluster).await;
        if now.len() == 1 { Ok(()) } else { Err(now) }
    })
    .await
    .unwrap_or_else(|last| panic!("the replica never streamed again: {last:?}"));

    // Without the store's data (the election, and so the cluster's initialize key) nothing is
    // made again, even on the members' data: a member might bootstrap a new, empty database
    // behind the tenant's endpoint, or a lagging one be promoted.
    looking.cancel();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (role, with_data) in [("member-0", false), ("member-1", false), ("store", true)] {
        remove(role, with_data).await;
    }
    for _ in 0..4 {
        cluster.supervisor.pass().await.unwrap();
    }
    let (containers, volumes) = containers_and_volumes(&cluster).await;
    assert!(
        !containers.iter().any(|c| c.starts_with("member-") || c == "store"),
        "nothing made again without the store's data: {containers:?}"
    );
    assert!(volumes.contains("member-0-data"), "the members' data stays: {volumes:?}");
    cluster.remove().await;
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

/// The names of the cluster's containers on the engine, and of its data volumes.
async fn containers_and_volumes(cluster: &Cluster) -> (BTreeSet<String>, BTreeSet<String>) {
    let docker = cluster.runtime.engine().client().unwrap();
    let prefix = format!("iaas-{}-", cluster.db.id);
    let containers = docker
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.names?.first().map(|n| n.trim_start_matches('/').to_owned()))
        .filter_map(|n| n.strip_prefix(&prefix).map(str::to_owned))
        .collect();
    let volumes = docker
        .list_volumes(None::<bollard::query_parameters::ListVolumesOptions>)
        .await
        .unwrap()
        .volumes
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.name.strip_prefix(&prefix).map(str::to_owned))
        .collect();
    (containers, volumes)
}

/// Stores `replicas` as the cluster's replica count, as the API does.
async fn set_replicas(cluster: &Cluster, replicas: u8) {
    let stored = cluster.repo.get_instance(cluster.db.id).await.unwrap().unwrap();
    let InstanceSpec::Postgres(pg) = &stored.spec else { unreachable!("a PostgreSQL cluster") };
    let spec = InstanceSpec::Postgres(PostgresSpec { replicas, ..pg.clone() });
    let event = InfrastructureEvent::new(
        stored.id,
        stored.owner,
        stored.kind(),
        EventAction::ConfigChanged,
        chrono::Utc::now(),
    );
    let change = SpecChange { id: stored.id, expected_version: stored.version, spec, event };
    cluster.repo.update_spec_within(change, &Quota::default()).await.unwrap();
}

/// Members streaming from the primary, by member name (none while a hand-over leaves no
/// primary to ask).
async fn streaming(cluster: &Cluster) -> BTreeSet<String> {
    match cluster.runtime.replication_status(cluster.db.id).await {
        Ok(replication) => replication
            .replicas
            .into_iter()
            .filter(|r| r.state == "streaming")
            .map(|r| r.name)
            .collect(),
        Err(error) => {
            eprintln!("replication status: {error}");
            BTreeSet::new()
        }
    }
}

#[tokio::test]
async fn scaling_2_to_3_to_1_adds_and_removes_members_and_loses_no_row() {
    let cluster = Cluster::start("ha-scale", false).await;
    let id = cluster.db.id;
    // The primary is made member-2, which the scale down to one replica removes: it must hand
    // over to a member that stays first.
    cluster.supervisor.expect_switchover(id, Some("member-2")).await;
    cluster.runtime.switchover(id, Some("member-2")).await.unwrap();
    cluster.supervisor.switchover_done(id, cluster.runtime.cluster_members(id).await.unwrap());
    let stop = CancellationToken::new();
    let (writes, writer) = spawn_writer(cluster.url.clone(), stop.clone());

    let asked = Instant::now();
    set_replicas(&cluster, 3).await;
    eventually(Duration::from_secs(120), || async {
        let now = streaming(&cluster).await;
        if now.len() == 3 && now.contains("member-3") { Ok(()) } else { Err(now) }
    })
    .await
    .unwrap_or_else(|last| panic!("a third replica never streamed: {last:?}"));
    eprintln!(
        "scale 2 -> 3: the new member streamed {:.1} s after the change",
        asked.elapsed().as_secs_f64()
    );
    let added = cluster.events(EventAction::NodeAdded).await;
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(added[0].metadata.get("member").map(String::as_str), Some("member-3"));

    let asked = Instant::now();
    set_replicas(&cluster, 1).await;
    eventually(Duration::from_secs(120), || async {
        let (containers, volumes) = containers_and_volumes(&cluster).await;
        let gone = ["member-2", "member-3"]
            .iter()
            .all(|m| !containers.contains(*m) && !volumes.contains(&format!("{m}-data")));
        let now = streaming(&cluster).await;
        if gone && now.len() == 1 { Ok(()) } else { Err((containers, now)) }
    })
    .await
    .unwrap_or_else(|last| panic!("the members beyond one replica were not removed: {last:?}"));
    eprintln!(
        "scale 3 -> 1: two members removed {:.1} s after the change",
        asked.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    writer.await.unwrap();

    let leader = cluster.leader().await;
    assert!(leader == "member-0" || leader == "member-1", "the primary stays: {leader}");
    let mut removed: Vec<String> = cluster
        .events(EventAction::NodeRemoved)
        .await
        .iter()
        .filter_map(|e| e.metadata.get("member").cloned())
        .collect();
    removed.sort();
    assert_eq!(removed, ["member-2", "member-3"]);
    assert!(cluster.events(EventAction::Failover).await.is_empty(), "no failover reported");
    let handed_over = cluster.events(EventAction::Switchover).await;
    assert_eq!(handed_over.len(), 1, "the primary beyond the count handed over: {handed_over:?}");
    assert_eq!(handed_over[0].metadata.get("old_primary").map(String::as_str), Some("member-2"));
    let (acked, refused) = {
        let log = writes.lock().unwrap();
        (log.acked.clone(), log.outages.len())
    };
    let present = rows(&cluster.url).await;
    let lost: Vec<&String> = acked.iter().filter(|row| !present.contains(*row)).collect();
    eprintln!(
        "scaling: {} rows acknowledged, {} lost, {refused} stretches of refused writes",
        acked.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
    cluster.remove().await;
}

/// The test S3 server (`IAAS_TEST_S3_IMAGE`, moto behind nginx over HTTPS) on `network` as
/// `s3`, with the bucket `pg-backups`; returns its container id and its CA certificate.
async fn start_s3(docker: &bollard::Docker, network: &str) -> (String, String) {
    use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig};
    let image = std::env::var("IAAS_TEST_S3_IMAGE").unwrap_or_else(|_| "iaas-local/s3:1".into());
    let name = iaas_testkit::isolation::unique_name("iaas-test-s3");
    let endpoint = EndpointSettings { aliases: Some(vec!["s3".to_owned()]), ..Default::default() };
    let body = ContainerCreateBody {
        image: Some(image),
        env: Some(vec!["IAAS_S3_HOSTNAME=s3".to_owned(), "IAAS_S3_BUCKETS=pg-backups".to_owned()]),
        host_config: Some(HostConfig {
            network_mode: Some(network.to_owned()),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(std::collections::HashMap::from([(
                network.to_owned(),
                endpoint,
            )])),
        }),
        ..Default::default()
    };
    let options =
        bollard::query_parameters::CreateContainerOptionsBuilder::new().name(&name).build();
    let created = docker.create_container(Some(options), body).await.unwrap();
    docker.start_container(&created.id, None).await.unwrap();
    let ca = eventually(Duration::from_secs(60), || async {
        let ready = exec_output(docker, &created.id, &["cat", "/tmp/s3-ready"]).await;
        if ready.is_none() {
            return Err("not ready");
        }
        exec_output(docker, &created.id, &["cat", "/ca.pem"]).await.ok_or("no CA yet")
    })
    .await
    .unwrap_or_else(|last| panic!("the S3 server never became ready: {last}"));
    (created.id, ca)
}

/// What `cmd` printed in `container`, when it exited 0.
async fn exec_output(docker: &bollard::Docker, container: &str, cmd: &[&str]) -> Option<String> {
    use futures_util::StreamExt;
    let exec = docker
        .create_exec(
            container,
            bollard::models::ExecConfig {
                cmd: Some(cmd.iter().map(|c| (*c).to_owned()).collect()),
                attach_stdout: Some(true),
                ..Default::default()
            },
        )
        .await
        .ok()?;
    let mut text = String::new();
    if let Ok(bollard::exec::StartExecResults::Attached { mut output, .. }) =
        docker.start_exec(&exec.id, None).await
    {
        while let Some(Ok(chunk)) = output.next().await {
            text.push_str(&chunk.to_string());
        }
    }
    let inspected = docker.inspect_exec(&exec.id).await.ok()?;
    (inspected.exit_code == Some(0)).then_some(text)
}

#[tokio::test]
async fn backups_in_an_s3_bucket_restore_a_copy_to_a_time_between_writes() {
    let owner = iaas_core::UserId::new_random();
    let probe = runtime().await;
    let docker = probe.engine().client().unwrap();
    // The tenant's network first, so the S3 server is on it from the start, as a bucket on
    // the internet is reachable from it.
    let network = probe.user_network(owner);
    let labels = std::collections::HashMap::from([("iaas.managed".to_owned(), "true".to_owned())]);
    docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: network.clone(),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .unwrap();
    let (s3_container, ca) = start_s3(&docker, &network).await;
    let mut config = DockerRuntimeConfig::default();
    let mut s3 = S3Repository::new("s3", "pg-backups", "test-key", "test-secret");
    s3.path = "/iaas".to_owned();
    s3.ca_pem = Some(ca);
    config.backup_s3 = Some(s3);

    let mut source =
        instance(InstanceSpec::Postgres(PostgresSpec::new("orders", 1).highly_available()));
    source.owner = owner;
    let source = Cluster::start_with(runtime_with(config.clone()).await, source, "s3-source").await;
    let mut conn = sqlx::PgConnection::connect(&source.url).await.unwrap();
    sqlx::query("INSERT INTO acked SELECT 'before-' || g FROM generate_series(1, 500) g")
        .execute(&mut conn)
        .await
        .unwrap();
    let backed_up = Instant::now();
    let backup = eventually(Duration::from_secs(60), || async {
        source.runtime.backup(source.db.id, BackupKind::Full, None).await.map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|last| panic!("no backup to S3: {last}"));
    eprintln!(
        "S3 backup: full, {} bytes of database, {} in the bucket, in {:.1} s",
        backup.database_bytes,
        backup.repository_bytes,
        backed_up.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
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
    // Nothing of the cluster's backups is on a volume of its own.
    let listed = source.runtime.backups(source.db.id).await.unwrap();
    assert_eq!(listed.backups.len(), 1, "{listed:?}");

    let mut spec = PostgresSpec::new("orders", 1).highly_available();
    spec.restore = Some(RestoreSpec { from: source.db.id, target_time: Some(target) });
    let mut copy = instance(InstanceSpec::Postgres(spec));
    copy.owner = owner;
    let restoring = Instant::now();
    source
        .runtime
        .provision(&copy, &Secrets::new().with("POSTGRES_PASSWORD", "copy-pw-8810"))
        .await
        .expect("the copy is restored from the bucket");
    eprintln!(
        "S3 restore: a 1+1 cluster at the target time in {:.1} s",
        restoring.elapsed().as_secs_f64()
    );
    let port = published_port(&source.runtime, &copy).await;
    let url = format!("postgres://app:copy-pw-8810@127.0.0.1:{port}/orders");
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("the copy answers");
    let (before, after): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE v LIKE 'before-%'), count(*) FILTER (WHERE v LIKE 'after-%') FROM acked",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((before, after), (500, 0), "exactly the rows of the target time");
    conn.close().await.unwrap();
    // The copy archives into its own stanza in the same bucket.
    let copies = source.runtime.backups(copy.id).await.unwrap();
    assert!(copies.wal_max.is_some(), "the copy archives its WAL: {copies:?}");

    source.runtime.remove(copy.id, true).await.unwrap();
    let removal =
        bollard::query_parameters::RemoveContainerOptionsBuilder::new().force(true).build();
    docker.remove_container(&s3_container, Some(removal)).await.unwrap();
    source.remove().await;
    let left = docker
        .inspect_network(&network, None::<bollard::query_parameters::InspectNetworkOptions>)
        .await;
    assert!(left.is_err(), "the network went with the last container on it");
}

#[tokio::test]
async fn a_backup_schedule_backs_up_at_once_then_when_due_and_keeps_what_it_says() {
    let mut spec = PostgresSpec::new("orders", 1).highly_available();
    spec.backup_schedule = Some(iaas_core::BackupSchedule { every_hours: 1, keep: 1 });
    let db = instance(InstanceSpec::Postgres(spec));
    let cluster = Cluster::start_with(runtime().await, db, "ha-scheduled").await;
    let id = cluster.db.id;
    // There is no backup yet: the supervisor takes one at once (again 30 s later when the
    // first election was not over yet).
    let started = Instant::now();
    let first = eventually(Duration::from_secs(120), || async {
        let catalog = cluster.runtime.backups(id).await.map_err(|e| e.to_string())?;
        catalog.backups.first().cloned().ok_or_else(|| "none yet".to_owned())
    })
    .await
    .unwrap_or_else(|last| panic!("no scheduled backup: {last}"));
    eprintln!(
        "scheduled: the first backup ended {:.1} s after the cluster ran",
        started.elapsed().as_secs_f64()
    );
    let events = eventually(Duration::from_secs(10), || async {
        let events = cluster.events(EventAction::BackedUp).await;
        if events.is_empty() { Err(()) } else { Ok(events) }
    })
    .await
    .unwrap();
    assert_eq!(events[0].metadata.get("reason").map(String::as_str), Some("scheduled"));
    assert_eq!(events[0].metadata.get("label"), Some(&first.label));

    // An hour on (a supervisor whose clock is ahead): due again; `keep: 1` expires the first.
    let ahead = iaas_core::ManualClock::new(chrono::Utc::now() + chrono::Duration::minutes(61));
    let later = Supervisor::new(
        cluster.runtime.clone(),
        cluster.repo.clone(),
        Arc::new(ahead),
        SupervisorConfig::default(),
    );
    later.pass().await.unwrap();
    let second = eventually(Duration::from_secs(120), || async {
        let catalog = cluster.runtime.backups(id).await.map_err(|e| e.to_string())?;
        match catalog.backups.as_slice() {
            [only] if only.label != first.label => Ok(only.clone()),
            other => Err(format!("{:?}", other.iter().map(|b| &b.label).collect::<Vec<_>>())),
        }
    })
    .await
    .unwrap_or_else(|last| panic!("no second backup, or the first kept: {last}"));
    eprintln!("scheduled: a second backup {} replaced {}", second.label, first.label);
    let events = eventually(Duration::from_secs(10), || async {
        let events = cluster.events(EventAction::BackedUp).await;
        if events.len() == 2 { Ok(events) } else { Err(events.len()) }
    })
    .await
    .unwrap_or_else(|seen| panic!("{seen} backed_up events, not 2"));
    assert_eq!(events[1].metadata.get("label"), Some(&second.label));
    cluster.remove().await;
}
