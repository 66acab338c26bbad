//! The status of an instance of several containers on the real engine: a PostgreSQL primary
//! with one streaming replica, changed behind the platform's back. The primary decides; a
//! replica that is down shows in the cluster info, not in the status.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use common::{
    instance, record_created, record_failed, runtime, runtime_with, spawn_watcher, status_becomes,
};

use std::sync::Arc;
use std::time::Duration;

use iaas_core::memory::MemoryInstanceRepository;
use iaas_core::{
    ClusterSource, Instance, InstanceRepository, InstanceSpec, InstanceStatus, NodeRole,
    PostgresSpec,
};
use iaas_core::{ContainerRuntime, Secrets};
use iaas_docker::{DockerRuntime, DockerRuntimeConfig};
use iaas_provisioning::WatcherConfig;
use iaas_testkit::wait::eventually;

const TWO_SECONDS: Duration = Duration::from_secs(2);

/// Whether the cluster info lists the replica as running, once it says `want`.
async fn replica_running_becomes(runtime: &DockerRuntime, instance: &Instance, want: bool) {
    eventually(Duration::from_secs(10), || async {
        let info = runtime.cluster_info(instance.id).await.map_err(|e| e.to_string())?;
        let replica = info.nodes.iter().find(|n| n.role == NodeRole::Replica).cloned();
        match replica {
            Some(node) if node.running == want => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap_or_else(|last| panic!("the replica's running flag never became {want}: {last}"));
}

/// A repository holding a newly created PostgreSQL cluster of a primary and `replicas`.
async fn recorded_cluster(replicas: u8) -> (Arc<MemoryInstanceRepository>, Instance) {
    let repo = Arc::new(MemoryInstanceRepository::new());
    let spec = PostgresSpec::new("orders", replicas);
    let db = instance(InstanceSpec::Postgres(spec));
    record_created(&repo, &db).await;
    (repo, db)
}

#[tokio::test]
async fn the_primary_decides_and_a_stopped_replica_leaves_the_cluster_running() {
    let runtime = runtime().await;
    let (repo, db) = recorded_cluster(1).await;
    let (watcher, cancel, task) =
        spawn_watcher(&runtime.engine().client().unwrap(), repo.clone(), WatcherConfig::default());

    let containers =
        runtime.provision(&db, &Secrets::new().with("POSTGRES_PASSWORD", "s3cret")).await.unwrap();
    let id_of = |role: &str| containers.iter().find(|c| c.role == role).unwrap().id.clone();
    let (primary, replica) = (id_of("primary"), id_of("replica-1"));
    status_becomes(&repo, &db, InstanceStatus::Running, Duration::from_secs(10)).await;
    let docker = runtime.engine().client().unwrap();

    // The replica stops behind the platform's back: the watcher sees its events (within 2 s,
    // like any other) and leaves the instance running; the cluster info shows the node down.
    let seen = watcher.stats().replica_events;
    docker.stop_container(&replica, None).await.unwrap();
    eventually(TWO_SECONDS, || async {
        let stats = watcher.stats();
        if stats.replica_events > seen { Ok(()) } else { Err(stats) }
    })
    .await
    .unwrap();
    assert_eq!(repo.get_instance(db.id).await.unwrap().unwrap().status, InstanceStatus::Running);
    replica_running_becomes(&runtime, &db, false).await;
    let info = runtime.cluster_info(db.id).await.unwrap();
    assert_eq!(info.status, InstanceStatus::Running, "cluster info applies the same rule");
    // The reconciler agrees with the watcher: nothing to repair.
    assert_eq!(watcher.reconcile().await.unwrap(), 0);
    assert_eq!(repo.get_instance(db.id).await.unwrap().unwrap().status, InstanceStatus::Running);

    // Started again: running, and the node is back.
    docker.start_container(&replica, None).await.unwrap();
    status_becomes(&repo, &db, InstanceStatus::Running, TWO_SECONDS).await;
    replica_running_becomes(&runtime, &db, true).await;

    // The primary does decide.
    docker.stop_container(&primary, None).await.unwrap();
    status_becomes(&repo, &db, InstanceStatus::Stopped, TWO_SECONDS).await;
    assert_eq!(runtime.cluster_info(db.id).await.unwrap().status, InstanceStatus::Stopped);
    assert_eq!(watcher.reconcile().await.unwrap(), 0);
    docker.start_container(&primary, None).await.unwrap();
    status_becomes(&repo, &db, InstanceStatus::Running, TWO_SECONDS).await;

    cancel.cancel();
    task.await.unwrap();
    runtime.remove(db.id, true).await.unwrap();
    let names: Vec<String> =
        repo.outbox().iter().filter(|e| e.instance_id == db.id).map(|e| e.name()).collect();
    assert_eq!(
        names,
        ["postgres.created", "postgres.started", "postgres.stopped", "postgres.started"],
        "the replica's stop and start wrote no event"
    );
}

#[tokio::test]
async fn a_cluster_rolled_back_while_provisioning_ends_failed_not_deleted() {
    // The primary starts, then it is not ready in time for the replicas: provisioning removes
    // it again. Those engine events belong to the provisioning, which records the failure.
    let mut config = DockerRuntimeConfig::default();
    config.ready_timeout = Duration::ZERO;
    let runtime = runtime_with(config).await;
    let (repo, db) = recorded_cluster(2).await;
    let (watcher, cancel, task) =
        spawn_watcher(&runtime.engine().client().unwrap(), repo.clone(), WatcherConfig::default());
    // Subscribed before the containers change.
    eventually(Duration::from_secs(5), || async {
        let stats = watcher.stats();
        if stats.connections >= 1 { Ok(()) } else { Err(stats) }
    })
    .await
    .unwrap();

    let err = runtime
        .provision(&db, &Secrets::new().with("POSTGRES_PASSWORD", "s3cret"))
        .await
        .unwrap_err();
    // The primary's start, die and destroy reached the watcher and changed nothing.
    eventually(Duration::from_secs(5), || async {
        let stats = watcher.stats();
        if stats.while_provisioning >= 3 { Ok(()) } else { Err(stats) }
    })
    .await
    .unwrap();
    assert_eq!(
        repo.get_instance(db.id).await.unwrap().unwrap().status,
        InstanceStatus::Provisioning
    );
    // What the provisioning API does with the error.
    record_failed(&repo, &db, &err.to_string()).await;
    // And reconciliation leaves the failed, container-less instance as it is.
    assert_eq!(watcher.reconcile().await.unwrap(), 0);
    cancel.cancel();
    task.await.unwrap();
    let names: Vec<String> =
        repo.outbox().iter().filter(|e| e.instance_id == db.id).map(|e| e.name()).collect();
    assert_eq!(names, ["postgres.created", "postgres.failed"]);
    let reason = repo.outbox().into_iter().last().unwrap();
    assert!(reason.metadata["error"].contains("waiting for PostgreSQL"), "{reason:?}");
}
