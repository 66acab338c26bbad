//! The container security check on the real engine: one instance of every kind the
//! runtime provisions (a PostgreSQL primary with a streaming replica, nginx with a user's site,
//! and a plain Docker image publishing one engine-chosen and one user-chosen port), then every
//! container that belongs to them is inspected through bollard:
//!
//! - never privileged, no host network, PID or IPC namespace;
//! - `CapDrop: ALL` with only the kind's documented capabilities added back, `no-new-privileges`,
//!   a pids limit, and no ICMP datagram sockets;
//! - memory-limited to exactly the instance's resources (and CPU-limited);
//! - no host bind mounts (named volumes are fine: they stay inside the engine);
//! - every published port bound to 127.0.0.1 only.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;

use bollard::models::ContainerInspectResponse;
use common::{fixed_host_port, instance, runtime};
use futures_util::FutureExt as _;
use iaas_core::{ContainerRuntime, Secrets};
use iaas_core::{DockerSpec, Instance, InstanceSpec, NginxSpec, PortMapping, PostgresSpec};
use iaas_docker::{DockerRuntime, confinement};

/// Every way a container could reach out of its sandbox, as a list of findings (empty: safe).
fn findings(container: &ContainerInspectResponse, instance: &Instance) -> Vec<String> {
    let name = container.name.clone().unwrap_or_default();
    let mut found = Vec::new();
    let Some(host) = &container.host_config else {
        return vec![format!("{name}: no host config to inspect")];
    };
    if host.privileged != Some(false) {
        found.push(format!("{name}: privileged is {:?}", host.privileged));
    }
    if host.cap_drop.as_deref() != Some(&["ALL".to_owned()][..]) {
        found.push(format!("{name}: CapDrop is {:?}, not [ALL]", host.cap_drop));
    }
    let role = container
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get("iaas.role"))
        .cloned()
        .unwrap_or_default();
    let allowed = confinement::capabilities(instance.kind(), role == "primary");
    for cap in host.cap_add.iter().flatten() {
        let bare = cap.trim_start_matches("CAP_");
        if !allowed.contains(&bare) {
            found.push(format!("{name}: capability {cap} added, allowed {allowed:?}"));
        }
    }
    if !host.security_opt.iter().flatten().any(|opt| opt == "no-new-privileges:true") {
        found.push(format!("{name}: no no-new-privileges in {:?}", host.security_opt));
    }
    if !host.pids_limit.is_some_and(|limit| limit > 0 && limit <= confinement::DEFAULT_PIDS_LIMIT) {
        found.push(format!("{name}: pids limit {:?}", host.pids_limit));
    }
    if host.sysctls.as_ref().and_then(|s| s.get("net.ipv4.ping_group_range")).map(String::as_str)
        != Some("1 0")
    {
        found.push(format!("{name}: ICMP datagram sockets allowed ({:?})", host.sysctls));
    }
    for (what, mode) in [
        ("network", &host.network_mode),
        ("pid", &host.pid_mode),
        ("ipc", &host.ipc_mode),
        ("userns", &host.userns_mode),
    ] {
        if mode.as_deref() == Some("host") {
            found.push(format!("{name}: shares the host's {what} namespace"));
        }
    }
    let memory = i64::from(instance.resources.memory_mib) * 1024 * 1024;
    if host.memory != Some(memory) {
        found.push(format!("{name}: memory limit {:?}, expected {memory}", host.memory));
    }
    if host.nano_cpus.unwrap_or(0) <= 0 && host.cpu_quota.unwrap_or(0) <= 0 {
        found.push(format!("{name}: no CPU limit"));
    }
    if let Some(binds) = host.binds.as_ref().filter(|binds| !binds.is_empty()) {
        found.push(format!("{name}: host binds {binds:?}"));
    }
    for mount in container.mounts.iter().flatten() {
        if mount.typ.as_deref() == Some("bind") {
            found.push(format!(
                "{name}: bind mount of {:?} at {:?}",
                mount.source, mount.destination
            ));
        }
    }
    if host.devices.as_ref().is_some_and(|devices| !devices.is_empty()) {
        found.push(format!("{name}: host devices {:?}", host.devices));
    }
    for (port, bindings) in host.port_bindings.iter().flatten() {
        for binding in bindings.iter().flatten() {
            if binding.host_ip.as_deref() != Some("127.0.0.1") {
                found.push(format!("{name}: {port} published on {:?}", binding.host_ip));
            }
        }
    }
    // What the engine actually bound, not only what was asked for.
    let published = container.network_settings.as_ref().and_then(|n| n.ports.as_ref());
    for (port, bindings) in published.into_iter().flatten() {
        for binding in bindings.iter().flatten() {
            if binding.host_ip.as_deref() != Some("127.0.0.1") {
                found.push(format!("{name}: {port} bound on {:?}", binding.host_ip));
            }
        }
    }
    found
}

/// Inspects every container of `instance`; returns how many there were and how many ports
/// they published.
async fn check(runtime: &DockerRuntime, instance: &Instance) -> (usize, usize) {
    let containers: Vec<_> = runtime
        .list_managed()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.instance == instance.id)
        .collect();
    assert!(!containers.is_empty(), "instance {} has no containers", instance.id);
    let mut ports = 0;
    for managed in &containers {
        let inspected =
            runtime.engine().client().unwrap().inspect_container(&managed.id, None).await.unwrap();
        let problems = findings(&inspected, instance);
        assert!(problems.is_empty(), "{problems:#?}");
        ports += inspected
            .host_config
            .and_then(|h| h.port_bindings)
            .map_or(0, |bindings| bindings.values().flatten().flatten().count());
    }
    (containers.len(), ports)
}

#[tokio::test]
async fn provisioned_containers_of_every_kind_are_confined() {
    let runtime = runtime().await;
    let busybox = std::env::var("IAAS_TEST_BUSYBOX_IMAGE")
        .unwrap_or_else(|_| "iaas-local/busybox:1".to_owned());
    let chosen = fixed_host_port();
    let instances = [
        (
            instance(InstanceSpec::Postgres(PostgresSpec::new("app", 1))),
            Secrets::new().with("POSTGRES_PASSWORD", "a secret of the test"),
        ),
        (
            instance(InstanceSpec::Nginx(NginxSpec {
                site_config: Some("server { listen 80; location / { return 200 'ok'; } }".into()),
            })),
            Secrets::new(),
        ),
        (
            instance(InstanceSpec::Docker(DockerSpec {
                image: busybox,
                env: BTreeMap::new(),
                ports: vec![8080.into(), PortMapping { container: 9090, host: Some(chosen) }],
                command: Some(vec!["httpd".into(), "-f".into(), "-p".into(), "8080".into()]),
            })),
            Secrets::new(),
        ),
    ];
    let mut outcome = Ok(());
    for (instance, secrets) in &instances {
        let checked = async {
            runtime.provision(instance, secrets).await.unwrap();
            check(&runtime, instance).await
        };
        // Catch the failure so every instance is removed before it is reported.
        match AssertUnwindSafe(checked).catch_unwind().await {
            Ok((containers, ports)) => eprintln!(
                "{:?}: {containers} containers, {ports} published ports, all confined",
                instance.spec.kind()
            ),
            Err(panic) => {
                outcome = Err(panic);
                break;
            }
        }
    }
    for (instance, _) in &instances {
        // Cleanup of what may not exist (a failure before its provision): errors do not matter.
        let _ = runtime.remove(instance.id, true).await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
