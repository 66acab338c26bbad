//! The engine as a `ClusterSource`, on the real Docker engine with the configured images:
//! PostgreSQL stats read from the server itself, a primary with a streaming replica, and input
//! refused before the engine is touched.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use common::{instance, runtime, runtime_with};

use std::time::Duration;

use iaas_core::{ClusterSource, Instance, InstanceSpec, NginxSpec, NodeRole, PostgresSpec};
use iaas_core::{ContainerRuntime, RuntimeError, Secrets};
use iaas_docker::{DockerRuntime, DockerRuntimeConfig};
use iaas_testkit::wait::eventually;
use sqlx::{Connection, PgConnection};

fn postgres(replicas: u8) -> Instance {
    instance(InstanceSpec::Postgres(PostgresSpec::new("orders", replicas)))
}

async fn port_of(runtime: &DockerRuntime, instance: &Instance, endpoint: &str) -> u16 {
    let info = runtime.cluster_info(instance.id).await.unwrap();
    let found = info.endpoints.iter().find(|e| e.name == endpoint);
    let found = found.unwrap_or_else(|| panic!("no endpoint {endpoint} in {:?}", info.endpoints));
    assert_eq!(found.host, "127.0.0.1", "published on loopback only");
    found.port
}

async fn connect(port: u16) -> PgConnection {
    let url = format!("postgres://app:s3cret@127.0.0.1:{port}/orders");
    eventually(Duration::from_secs(90), || PgConnection::connect(&url)).await.unwrap()
}

/// The row written on the primary, read through `port` on a fresh connection.
async fn read_item(port: u16) -> Result<String, sqlx::Error> {
    let url = format!("postgres://app:s3cret@127.0.0.1:{port}/orders");
    let mut conn = PgConnection::connect(&url).await?;
    let item =
        sqlx::query_scalar("SELECT item FROM orders WHERE id = 1").fetch_one(&mut conn).await;
    conn.close().await?;
    item
}

/// Volumes still labelled with the instance.
async fn volumes_left(runtime: &DockerRuntime, instance: &Instance) -> Vec<String> {
    let label = format!("iaas.instance={}", instance.id);
    let filters = std::collections::HashMap::from([("label", vec![label.as_str()])]);
    let listed = runtime
        .engine()
        .client()
        .unwrap()
        .list_volumes(Some(
            bollard::query_parameters::ListVolumesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .unwrap();
    listed.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect()
}

#[tokio::test]
async fn postgres_stats_come_from_the_engine_and_the_servers_own_count() {
    let runtime = runtime().await;
    let db = postgres(0);
    runtime.provision(&db, &Secrets::new().with("POSTGRES_PASSWORD", "s3cret")).await.unwrap();
    let port = port_of(&runtime, &db, "5432/tcp").await;
    let conn = connect(port).await;

    // Our one connection is counted by the server (the psql asking is not).
    let stats = eventually(Duration::from_secs(30), || async {
        let stats = runtime.cluster_stats(db.id).await.map_err(|e| e.to_string())?;
        if stats.connections.is_some_and(|n| n >= 1) {
            Ok(stats)
        } else {
            Err(format!("{stats:?}"))
        }
    })
    .await
    .unwrap();
    assert!(stats.cpu_percent.is_finite() && stats.cpu_percent >= 0.0, "{stats:?}");
    assert!(stats.memory_bytes > 0, "{stats:?}");
    assert_eq!(stats.memory_limit_bytes, 256 * 1024 * 1024);
    assert_eq!(stats.instance_id, db.id);

    // A single node replicates to no one.
    let replication = runtime.replication_status(db.id).await.unwrap();
    assert_eq!(replication.primary, format!("iaas-{}-primary", db.id));
    assert!(replication.replicas.is_empty());

    conn.close().await.unwrap();
    runtime.remove(db.id, true).await.unwrap();
    assert!(volumes_left(&runtime, &db).await.is_empty(), "purge removes the data volume");
    assert!(matches!(runtime.cluster_stats(db.id).await, Err(iaas_core::Error::NotFound { .. })));
    assert!(matches!(
        runtime.replication_status(db.id).await,
        Err(iaas_core::Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_row_written_on_the_primary_is_read_on_the_replica_and_lag_is_reported() {
    let runtime = runtime().await;
    let db = postgres(1);
    let created = runtime
        .provision(
            &db,
            &Secrets::new()
                .with("POSTGRES_PASSWORD", "s3cret")
                .with("POSTGRES_REPLICATION_PASSWORD", "r3'pl x"),
        )
        .await
        .unwrap();
    let roles: Vec<&str> = created.iter().map(|c| c.role.as_str()).collect();
    assert_eq!(roles, ["primary", "replica-1"]);

    let info = runtime.cluster_info(db.id).await.unwrap();
    assert_eq!(info.nodes.len(), 2);
    assert_eq!(info.nodes.iter().filter(|n| n.role == NodeRole::Primary).count(), 1);
    assert_eq!(info.nodes.iter().filter(|n| n.role == NodeRole::Replica).count(), 1);
    let primary_port = port_of(&runtime, &db, "5432/tcp").await;
    let replica_port = port_of(&runtime, &db, "replica-1:5432/tcp").await;
    assert_ne!(primary_port, replica_port);

    let mut primary = connect(primary_port).await;
    sqlx::query("CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL)")
        .execute(&mut primary)
        .await
        .unwrap();
    sqlx::query("INSERT INTO orders VALUES (1, 'books')").execute(&mut primary).await.unwrap();

    let mut replica = connect(replica_port).await;
    let in_recovery: bool =
        sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(&mut replica).await.unwrap();
    assert!(in_recovery, "the replica is a standby");
    let item = eventually(Duration::from_secs(30), || read_item(replica_port)).await.unwrap();
    assert_eq!(item, "books");
    // A standby refuses writes.
    assert!(
        sqlx::query("INSERT INTO orders VALUES (2, 'pens')").execute(&mut replica).await.is_err()
    );

    let replication = eventually(Duration::from_secs(30), || async {
        let status = runtime.replication_status(db.id).await.map_err(|e| e.to_string())?;
        if status.replicas.iter().any(|r| r.name == "replica-1" && r.state == "streaming") {
            Ok(status)
        } else {
            Err(format!("{status:?}"))
        }
    })
    .await
    .unwrap();
    assert_eq!(replication.primary, format!("iaas-{}-primary", db.id));
    assert_eq!(replication.replicas.len(), 1);
    // Lag is reported: in bytes always (small once caught up), in seconds once WAL was replayed.
    assert!(replication.replicas[0].lag_bytes < 16 * 1024 * 1024, "{replication:?}");

    let stats = runtime.cluster_stats(db.id).await.unwrap();
    assert_eq!(stats.memory_limit_bytes, 2 * 256 * 1024 * 1024, "summed over both nodes");
    assert!(stats.connections.is_some_and(|n| n >= 2), "{stats:?}");
    primary.close().await.unwrap();
    replica.close().await.unwrap();

    // After a restart the replica keeps its data (no second base backup) and streams again.
    runtime.restart(db.id).await.unwrap();
    // Ports are assigned by the engine at each start: read them again.
    let primary_port = port_of(&runtime, &db, "5432/tcp").await;
    let replica_port = port_of(&runtime, &db, "replica-1:5432/tcp").await;
    let mut primary = connect(primary_port).await;
    sqlx::query("UPDATE orders SET item = 'maps' WHERE id = 1")
        .execute(&mut primary)
        .await
        .unwrap();
    let item = eventually(Duration::from_secs(60), || async {
        match read_item(replica_port).await {
            Ok(item) if item == "maps" => Ok(item),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    assert_eq!(item, "maps");
    primary.close().await.unwrap();
    runtime.remove(db.id, true).await.unwrap();
    assert!(volumes_left(&runtime, &db).await.is_empty(), "purge removes every node's volume");
}

#[tokio::test]
async fn a_replicated_cluster_whose_primary_is_not_ready_in_time_is_rolled_back() {
    // No time at all to become ready: the primary (still running initdb) cannot be prepared
    // for replication, so provisioning fails after creating it and must remove it again.
    let mut config = DockerRuntimeConfig::default();
    config.ready_timeout = Duration::ZERO;
    let runtime = runtime_with(config).await;
    let db = postgres(2);
    let err = runtime
        .provision(&db, &Secrets::new().with("POSTGRES_PASSWORD", "s3cret"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::Engine { ref operation, .. } if operation.contains("waiting for PostgreSQL")),
        "{err:?}"
    );
    assert!(runtime.list_managed().await.unwrap().iter().all(|c| c.instance != db.id));
    assert!(volumes_left(&runtime, &db).await.is_empty(), "the primary's volume is removed");
    let networks = runtime
        .engine()
        .client()
        .unwrap()
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await
        .unwrap();
    assert!(networks.iter().all(|n| n.name.as_deref() != Some(&runtime.user_network(db.owner))));
}

#[tokio::test]
async fn kinds_without_replication_say_so_and_report_no_connections() {
    let runtime = runtime().await;
    let web = instance(InstanceSpec::Nginx(NginxSpec { site_config: None }));
    runtime.provision(&web, &Secrets::new()).await.unwrap();
    let replication = runtime.replication_status(web.id).await;
    let stats = runtime.cluster_stats(web.id).await;
    runtime.remove(web.id, true).await.unwrap();
    assert!(matches!(replication, Err(iaas_core::Error::Unsupported { .. })), "{replication:?}");
    let stats = stats.unwrap();
    assert_eq!(stats.connections, None);
    assert_eq!(stats.memory_limit_bytes, 256 * 1024 * 1024);
}

#[tokio::test]
async fn an_invalid_memory_limit_is_refused_before_touching_the_engine() {
    let runtime = runtime().await;
    let mut db = postgres(1);
    // As if read from storage or built by a caller that skipped `Instance::new`'s validation.
    db.resources.memory_mib = 16;
    let err = runtime
        .provision(&db, &Secrets::new().with("POSTGRES_PASSWORD", "s3cret"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::InvalidSpec { ref reason } if reason.contains("memory_mib")),
        "{err:?}"
    );
    let core = iaas_core::Error::from(err);
    assert!(matches!(core, iaas_core::Error::Invalid { .. }), "{core:?}");
    assert!(runtime.list_managed().await.unwrap().iter().all(|c| c.instance != db.id));
    assert!(volumes_left(&runtime, &db).await.is_empty());
    let networks = runtime
        .engine()
        .client()
        .unwrap()
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await
        .unwrap();
    assert!(networks.iter().all(|n| n.name.as_deref() != Some(&runtime.user_network(db.owner))));
}

#[tokio::test]
async fn k8s_instances_are_unsupported_here() {
    let runtime = runtime().await;
    // `Instance::new` refuses the kind already; an instance from elsewhere is refused here too.
    let mut cluster = instance(InstanceSpec::Nginx(NginxSpec { site_config: None }));
    cluster.spec = InstanceSpec::K8s;
    let err = runtime.provision(&cluster, &Secrets::new()).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Unsupported { .. }), "{err:?}");
    assert!(matches!(iaas_core::Error::from(err), iaas_core::Error::Unsupported { .. }));
    assert!(runtime.list_managed().await.unwrap().iter().all(|c| c.instance != cluster.id));
}
