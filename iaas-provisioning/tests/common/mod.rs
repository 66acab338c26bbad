//! What the provisioning test binaries share (on the Docker runtime): a runtime on the configured local images, a fresh
//! instance to provision and record, a running watcher, and waiting for a status.

#![allow(dead_code, unreachable_pub, reason = "each test binary uses part of this shared module")]

use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use chrono::Utc;
use iaas_core::memory::MemoryInstanceRepository;
use iaas_core::{
    EventAction, InfrastructureEvent, Instance, InstanceName, InstanceRepository, InstanceSpec,
    InstanceStatus, Resources, StatusChange, SystemClock, UserId,
};
use iaas_docker::{DockerRuntime, DockerRuntimeConfig, DockerWatch, ImageCatalog};
use iaas_provisioning::{Watcher, WatcherConfig};
use iaas_testkit::wait::eventually;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A runtime with the default settings, the test images and a short stop timeout.
pub async fn runtime() -> DockerRuntime {
    runtime_with(DockerRuntimeConfig::default()).await
}

/// A runtime with `config`, the test images (`IAAS_TEST_POSTGRES_IMAGE`,
/// `IAAS_TEST_NGINX_IMAGE`) and a short stop timeout.
pub async fn runtime_with(mut config: DockerRuntimeConfig) -> DockerRuntime {
    let docker = iaas_testkit::docker().await.expect("the Docker engine (DOCKER_HOST)");
    config.catalog = ImageCatalog::from_lookup(|key| match key {
        "IAAS_POSTGRES_IMAGE" => std::env::var("IAAS_TEST_POSTGRES_IMAGE").ok(),
        "IAAS_NGINX_IMAGE" => std::env::var("IAAS_TEST_NGINX_IMAGE").ok(),
        "IAAS_POSTGRES_HA_IMAGE" => std::env::var("IAAS_TEST_POSTGRES_HA_IMAGE").ok(),
        _ => None,
    });
    config.stop_timeout = Duration::from_secs(5);
    DockerRuntime::new(docker, config)
}

/// A new instance of a random owner running `spec` with half a core and 256 MiB.
pub fn instance(spec: InstanceSpec) -> Instance {
    Instance::new(
        UserId::new_random(),
        InstanceName::new("test").expect("a valid name"),
        spec,
        Resources { millicpus: 500, memory_mib: 256 },
        Utc::now(),
    )
    .expect("a valid instance")
}

/// A host port that is free now, for a spec that chooses its host port: taken from the default
/// host-port policy's range (20000-29999), below the ranges the kernel (`bind(0)`) and the
/// engine (ports it picks) hand out, so neither gives it to someone else between this call and
/// its use.
pub fn fixed_host_port() -> u16 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .subsec_nanos()
        ^ std::process::id();
    (0..10_000)
        .map(|i| 20_000 + u16::try_from(seed.wrapping_add(i) % 10_000).expect("below 10000"))
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port in 20000-29999")
}

/// Records `instance` in `repo` with its `Created` event, as the API does before provisioning.
pub async fn record_created(repo: &MemoryInstanceRepository, instance: &Instance) {
    let created = InfrastructureEvent::new(
        instance.id,
        instance.owner,
        instance.kind(),
        EventAction::Created,
        Utc::now(),
    );
    repo.create_instance(instance, &created).await.expect("the instance is recorded");
}

/// Records `instance` as failed with `reason`, as the provisioning API does when provisioning
/// fails.
pub async fn record_failed(repo: &MemoryInstanceRepository, instance: &Instance, reason: &str) {
    let failed = InfrastructureEvent::new(
        instance.id,
        instance.owner,
        instance.kind(),
        EventAction::Failed,
        Utc::now(),
    )
    .with_metadata("error", reason);
    let change = StatusChange {
        id: instance.id,
        expected_version: None,
        to: InstanceStatus::Failed,
        event: failed,
        at: Utc::now(),
    };
    repo.update_status(change).await.expect("the failure is recorded");
}

/// Waits up to `within` until `repo` says `instance` is `want`; fails with the last status.
pub async fn status_becomes(
    repo: &MemoryInstanceRepository,
    instance: &Instance,
    want: InstanceStatus,
    within: Duration,
) {
    eventually(within, || async {
        let found = repo.get_instance(instance.id).await.expect("the repository answers");
        let status = found.expect("the instance is recorded").status;
        if status == want { Ok(()) } else { Err(status) }
    })
    .await
    .unwrap_or_else(|last| panic!("{}'s status never became {want}: {last}", instance.name));
}

/// A watcher of `docker` writing to `repo` with `config`, running until the token is cancelled;
/// the task ends once it has stopped.
pub fn spawn_watcher(
    docker: &Docker,
    repo: Arc<MemoryInstanceRepository>,
    config: WatcherConfig,
) -> (Arc<Watcher>, CancellationToken, JoinHandle<()>) {
    let engine = Arc::new(DockerWatch::new(docker.clone()));
    spawn_watcher_with(Watcher::new(engine, repo, Arc::new(SystemClock), config))
}

/// Runs `watcher` until the token is cancelled; the task ends once it has stopped.
pub fn spawn_watcher_with(watcher: Watcher) -> (Arc<Watcher>, CancellationToken, JoinHandle<()>) {
    let watcher = Arc::new(watcher);
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (watcher, cancel) = (watcher.clone(), cancel.clone());
        async move { watcher.run(cancel).await }
    });
    (watcher, cancel, task)
}
