//! Provisioning on the real Docker engine with the configured images.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use common::{instance, runtime};

use std::collections::BTreeMap;
use std::time::Duration;

use iaas_core::{
    ClusterSource, DockerSpec, Instance, InstanceSpec, InstanceStatus, NginxSpec, PortMapping,
    PostgresSpec,
};
use iaas_core::{ContainerRuntime, RuntimeError, Secrets};
use iaas_testkit::wait::eventually;
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http_get(port: u16) -> Result<String, std::io::Error> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}

#[tokio::test]
async fn postgres_is_provisioned_and_answers_sql_on_loopback() {
    let runtime = runtime().await;
    let db = instance(InstanceSpec::Postgres(PostgresSpec::new("orders", 0)));
    let secrets = Secrets::new().with("POSTGRES_PASSWORD", "pw with spaces");
    let created = runtime.provision(&db, &secrets).await.unwrap();
    assert_eq!(created.len(), 1);
    // Idempotent: provisioning again returns the same container.
    assert_eq!(runtime.provision(&db, &secrets).await.unwrap()[0].id, created[0].id);

    let info = runtime.cluster_info(db.id).await.unwrap();
    let endpoint = info.endpoints.iter().find(|e| e.name == "5432/tcp").unwrap();
    assert_eq!(endpoint.host, "127.0.0.1", "published on loopback only");
    let url = format!("postgres://app:pw%20with%20spaces@127.0.0.1:{}/orders", endpoint.port);
    let mut conn =
        eventually(Duration::from_secs(60), || PgConnection::connect(&url)).await.unwrap();
    let answer: i32 = sqlx::query_scalar("SELECT 6 * 7").fetch_one(&mut conn).await.unwrap();
    assert_eq!(answer, 42);
    conn.close().await.unwrap();

    // Limits and labels are on the container.
    let inspected =
        runtime.engine().client().unwrap().inspect_container(&created[0].id, None).await.unwrap();
    let host = inspected.host_config.unwrap();
    assert_eq!(host.memory, Some(256 * 1024 * 1024));
    assert_eq!(host.privileged, Some(false));
    assert!(host.binds.unwrap_or_default().is_empty(), "no host mounts");
    let labels = inspected.config.unwrap().labels.unwrap();
    assert_eq!(labels.get("iaas.instance"), Some(&db.id.to_string()));
    assert_eq!(labels.get("iaas.owner"), Some(&db.owner.to_string()));

    runtime.stop(db.id).await.unwrap();
    runtime.stop(db.id).await.unwrap();
    assert_eq!(runtime.cluster_info(db.id).await.unwrap().status, InstanceStatus::Stopped);
    runtime.remove(db.id, true).await.unwrap();
    runtime.remove(db.id, true).await.unwrap();
    assert!(runtime.list_managed().await.unwrap().iter().all(|c| c.instance != db.id));
    assert!(matches!(runtime.cluster_info(db.id).await, Err(iaas_core::Error::NotFound { .. })));
}

#[tokio::test]
async fn nginx_serves_the_users_site() {
    let runtime = runtime().await;
    let site = "server { listen 80; location / { return 200 'hello from iaas'; } }";
    let web = instance(InstanceSpec::Nginx(NginxSpec { site_config: Some(site.into()) }));
    runtime.provision(&web, &Secrets::new()).await.unwrap();
    let info = runtime.cluster_info(web.id).await.unwrap();
    let port = info.endpoints.iter().find(|e| e.name == "80/tcp").unwrap().port;
    let page = eventually(Duration::from_secs(20), || async {
        let body = http_get(port).await.map_err(|e| e.to_string())?;
        if body.contains("hello from iaas") { Ok(body) } else { Err(body) }
    })
    .await;
    runtime.remove(web.id, true).await.unwrap();
    assert!(page.unwrap().starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn removing_an_instance_without_containers_removes_its_owners_network() {
    // A provisioning cut off after it made the owner's network and before its container, or
    // a container removed behind the platform's back: nothing on the engine names the owner.
    let runtime = runtime().await;
    let svc = instance(InstanceSpec::Docker(DockerSpec {
        image: iaas_testkit::busybox_image(),
        env: BTreeMap::new(),
        ports: Vec::new(),
        command: Some(vec!["sleep".into(), "300".into()]),
    }));
    let made = runtime.provision(&svc, &Secrets::new()).await.unwrap();
    let docker = runtime.engine().client().unwrap();
    for container in &made {
        docker
            .remove_container(
                &container.id,
                Some(
                    bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .build(),
                ),
            )
            .await
            .unwrap();
    }
    let network = runtime.user_network(svc.owner);
    assert!(docker.inspect_network(&network, None).await.is_ok(), "{network} is there before");
    runtime.remove_instance(&svc, true).await.unwrap();
    let gone = docker.inspect_network(&network, None).await;
    assert!(gone.is_err(), "{network} outlived the instance: {gone:?}");
}

#[tokio::test]
async fn an_unknown_image_is_a_typed_error_and_leaves_nothing_behind() {
    let runtime = runtime().await;
    let svc = instance(InstanceSpec::Docker(DockerSpec {
        image: "iaas-no-such/image:0".into(),
        env: BTreeMap::new(),
        ports: vec![8080.into()],
        command: None,
    }));
    let err = runtime.provision(&svc, &Secrets::new()).await.unwrap_err();
    assert!(
        matches!(err, RuntimeError::ImageNotFound { ref image } if image.contains("iaas-no-such")),
        "{err:?}"
    );
    assert!(runtime.list_managed().await.unwrap().iter().all(|c| c.instance != svc.id));
    let networks = runtime
        .engine()
        .client()
        .unwrap()
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await
        .unwrap();
    assert!(
        networks.iter().all(|n| n.name.as_deref() != Some(&runtime.user_network(svc.owner))),
        "network rolled back"
    );
}

#[tokio::test]
async fn a_postgres_without_a_password_is_refused_before_touching_the_engine() {
    let runtime = runtime().await;
    let db = instance(InstanceSpec::Postgres(PostgresSpec::new("orders", 0)));
    let err = runtime.provision(&db, &Secrets::new()).await.unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidSpec { .. }), "{err:?}");
    assert!(
        format!("{:?}", Secrets::new().with("POSTGRES_PASSWORD", "hunter2"))
            .contains("POSTGRES_PASSWORD")
    );
    assert!(
        !format!("{:?}", Secrets::new().with("POSTGRES_PASSWORD", "hunter2")).contains("hunter2")
    );
}

#[tokio::test]
async fn a_generic_service_runs_with_its_command_and_is_listed_as_managed() {
    let runtime = runtime().await;
    let svc = instance(InstanceSpec::Docker(DockerSpec {
        image: iaas_testkit::busybox_image(),
        env: BTreeMap::from([("GREETING".into(), "hi".into())]),
        ports: vec![],
        command: Some(vec!["sh".into(), "-c".into(), "sleep 300".into()]),
    }));
    runtime.provision(&svc, &Secrets::new()).await.unwrap();
    let managed = runtime.list_managed().await.unwrap();
    let mine: Vec<_> = managed.iter().filter(|c| c.instance == svc.id).collect();
    assert_eq!(mine.len(), 1);
    assert!(mine[0].running);
    assert_eq!(mine[0].owner, Some(svc.owner));
    runtime.remove(svc.id, true).await.unwrap();
}

/// A busybox web server answering on container port 80.
fn web_on(ports: Vec<PortMapping>) -> Instance {
    instance(InstanceSpec::Docker(DockerSpec {
        image: iaas_testkit::busybox_image(),
        env: BTreeMap::new(),
        ports,
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            "mkdir -p /www && echo pinned > /www/index.html && exec httpd -f -p 80 -h /www".into(),
        ]),
    }))
}

/// Whether anything of `instance` is left on the engine: containers, its network, volumes.
async fn leftovers(runtime: &iaas_docker::DockerRuntime, instance: &Instance) -> Vec<String> {
    let mut left: Vec<String> = runtime
        .list_managed()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.instance == instance.id)
        .map(|c| format!("container {}", c.name))
        .collect();
    let network = runtime.user_network(instance.owner);
    let networks = runtime
        .engine()
        .client()
        .unwrap()
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await
        .unwrap();
    left.extend(
        networks
            .into_iter()
            .filter_map(|n| n.name)
            .filter(|n| *n == network)
            .map(|n| format!("network {n}")),
    );
    let label = format!("iaas.instance={}", instance.id);
    let filters = std::collections::HashMap::from([("label", vec![label.as_str()])]);
    let volumes = runtime
        .engine()
        .client()
        .unwrap()
        .list_volumes(Some(
            bollard::query_parameters::ListVolumesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .unwrap();
    left.extend(
        volumes.volumes.unwrap_or_default().into_iter().map(|v| format!("volume {}", v.name)),
    );
    left
}

#[tokio::test]
async fn a_chosen_host_port_is_published_on_loopback() {
    let runtime = runtime().await;
    let port = common::fixed_host_port();
    let web = web_on(vec![PortMapping::on_host(80, port)]);
    runtime.provision(&web, &Secrets::new()).await.unwrap();
    let info = runtime.cluster_info(web.id).await.unwrap();
    let endpoint = info.endpoints.iter().find(|e| e.name == "80/tcp").cloned();
    let page = eventually(Duration::from_secs(20), || async {
        let body = http_get(port).await.map_err(|e| e.to_string())?;
        if body.contains("pinned") { Ok(body) } else { Err(body) }
    })
    .await;
    runtime.remove(web.id, true).await.unwrap();
    let endpoint = endpoint.unwrap();
    assert_eq!((endpoint.host.as_str(), endpoint.port), ("127.0.0.1", port));
    let page = page.unwrap();
    assert!(page.starts_with("HTTP/1.") && page.contains(" 200 "), "{page}");
}

#[tokio::test]
async fn a_host_port_in_use_is_a_typed_error_and_leaves_nothing_behind() {
    let runtime = runtime().await;
    // Something outside the platform holds the port for the whole test.
    let port = common::fixed_host_port();
    let holder = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let web = web_on(vec![PortMapping::ephemeral(8080), PortMapping::on_host(80, port)]);
    let err = runtime.provision(&web, &Secrets::new()).await.unwrap_err();
    assert!(matches!(err, RuntimeError::PortTaken { port: p } if p == port), "{err:?}");
    assert!(err.to_string().contains(&port.to_string()), "the message names the port: {err}");
    assert!(
        matches!(iaas_core::Error::from(err), iaas_core::Error::Conflict { entity: "port", .. }),
        "a conflict for callers of the ports"
    );
    assert_eq!(leftovers(&runtime, &web).await, Vec::<String>::new(), "rolled back");
    drop(holder);
}

/// A container made by a release with one network per instance (`iaas-{id}`, alias `primary`)
/// joins its owner's network with its instance's name, once, and keeps the old network (its
/// replicas may reach it there); removing the instance removes both networks.
#[tokio::test]
async fn an_instance_from_a_release_with_networks_per_instance_joins_its_users_network() {
    use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig};
    use bollard::query_parameters::CreateContainerOptionsBuilder;

    let runtime = runtime().await;
    let docker = &runtime.engine().client().unwrap();
    let old = instance(InstanceSpec::Docker(DockerSpec {
        image: iaas_testkit::busybox_image(),
        env: BTreeMap::new(),
        ports: vec![],
        command: Some(vec!["sleep".into(), "300".into()]),
    }));
    // What the older release made.
    let legacy_network = format!("iaas-{}", old.id);
    let labels = |role: &str| {
        std::collections::HashMap::from([
            ("iaas.managed".to_owned(), "true".to_owned()),
            ("iaas.kind".to_owned(), "docker".to_owned()),
            ("iaas.instance".to_owned(), old.id.to_string()),
            ("iaas.owner".to_owned(), old.owner.to_string()),
            ("iaas.role".to_owned(), role.to_owned()),
        ])
    };
    docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: legacy_network.clone(),
            labels: Some(labels("network")),
            ..Default::default()
        })
        .await
        .unwrap();
    let name = format!("iaas-{}-primary", old.id);
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            ContainerCreateBody {
                image: Some(iaas_testkit::busybox_image()),
                cmd: Some(vec!["sleep".into(), "300".into()]),
                labels: Some(labels("primary")),
                host_config: Some(HostConfig {
                    network_mode: Some(legacy_network.clone()),
                    ..Default::default()
                }),
                networking_config: Some(NetworkingConfig {
                    endpoints_config: Some(std::collections::HashMap::from([(
                        legacy_network.clone(),
                        EndpointSettings {
                            aliases: Some(vec!["primary".into()]),
                            ..Default::default()
                        },
                    )])),
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    docker.start_container(&created.id, None).await.unwrap();

    let first = runtime.join_user_networks(std::slice::from_ref(&old)).await.unwrap();
    let again = runtime.join_user_networks(std::slice::from_ref(&old)).await.unwrap();
    let inspected = docker.inspect_container(&created.id, None).await.unwrap();
    let networks = inspected.network_settings.unwrap().networks.unwrap();
    let user_network = runtime.user_network(old.owner);
    runtime.remove(old.id, true).await.unwrap();
    let left: Vec<String> = docker
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|n| n.name)
        .filter(|n| *n == legacy_network || *n == user_network)
        .collect();

    assert_eq!((first.joined, first.already, again.joined, again.already), (1, 0, 0, 1));
    assert!(networks.contains_key(&legacy_network), "the old network stays attached");
    let aliases = networks[&user_network].aliases.clone().unwrap_or_default();
    assert!(aliases.contains(&old.name.to_string()), "answers to its name: {aliases:?}");
    assert!(left.is_empty(), "both networks are removed with the instance: {left:?}");
}
