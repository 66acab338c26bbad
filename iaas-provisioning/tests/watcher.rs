//! The watcher against the real engine: changes made behind the platform's back show in the
//! instance status, with their events, and missed ones are repaired.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use common::{record_created, record_failed, spawn_watcher, spawn_watcher_with, status_becomes};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, RemoveContainerOptionsBuilder,
};
use chrono::Utc;
use iaas_core::memory::MemoryInstanceRepository;
use iaas_core::runtime::{ManagedContainer, RuntimeError, RuntimeEventStream, RuntimeWatch};
use iaas_core::{ContainerRuntime, PrimaryState, Secrets};
use iaas_core::{
    DockerSpec, EventAction, InfrastructureEvent, Instance, InstanceName, InstanceRepository,
    InstanceSpec, InstanceStatus, Resources, StatusChange, SystemClock, UserId,
};
use iaas_docker::{DockerRuntime, DockerRuntimeConfig, DockerWatch, status_for_state};
use iaas_provisioning::{Watcher, WatcherConfig};
use iaas_testkit::isolation::unique_name;
use iaas_testkit::wait::eventually;

/// A shell that exits cleanly on SIGTERM, so `docker stop` is a clean stop.
fn sleeper() -> InstanceSpec {
    InstanceSpec::Docker(DockerSpec {
        image: iaas_testkit::busybox_image(),
        env: BTreeMap::new(),
        ports: vec![],
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            "trap 'exit 0' TERM; sleep 300 & wait".into(),
        ]),
    })
}

/// A watcher with the default settings on `runtime`'s engine and `repo`.
fn watcher_of(runtime: &DockerRuntime, repo: &Arc<MemoryInstanceRepository>) -> Watcher {
    Watcher::new(
        Arc::new(DockerWatch::new(runtime.engine().client().unwrap())),
        repo.clone(),
        Arc::new(SystemClock),
        WatcherConfig::default(),
    )
}

/// Records `instance` running in `repo`, as its start's event would.
async fn store_running(repo: &MemoryInstanceRepository, instance: &Instance) {
    let started = InfrastructureEvent::new(
        instance.id,
        instance.owner,
        instance.kind(),
        EventAction::Started,
        Utc::now(),
    );
    repo.update_status(StatusChange {
        id: instance.id,
        expected_version: None,
        to: InstanceStatus::Running,
        event: started,
        at: Utc::now(),
    })
    .await
    .unwrap();
}

/// The engine's view for a watcher, with its inspections counted.
struct CountingWatch {
    inner: DockerWatch,
    inspections: AtomicUsize,
}

#[async_trait::async_trait]
impl RuntimeWatch for CountingWatch {
    async fn events(&self, since: i64) -> Result<RuntimeEventStream, RuntimeError> {
        self.inner.events(since).await
    }

    async fn list_managed(&self) -> Result<Vec<ManagedContainer>, RuntimeError> {
        self.inner.list_managed().await
    }

    async fn observe(&self, containers: &[ManagedContainer]) -> Result<PrimaryState, RuntimeError> {
        self.inspections.fetch_add(1, Ordering::SeqCst);
        self.inner.observe(containers).await
    }

    async fn remove_container(&self, id: &str) -> Result<bool, RuntimeError> {
        self.inner.remove_container(id).await
    }

    async fn unused_networks(
        &self,
        busy: &HashSet<UserId>,
    ) -> Result<Vec<(UserId, String)>, RuntimeError> {
        self.inner.unused_networks(busy).await
    }

    async fn remove_network(&self, name: &str) -> Result<bool, RuntimeError> {
        self.inner.remove_network(name).await
    }
}

async fn setup() -> (DockerRuntime, Arc<MemoryInstanceRepository>, Instance) {
    let docker = iaas_testkit::docker().await.unwrap();
    let mut config = DockerRuntimeConfig::default();
    config.stop_timeout = Duration::from_secs(5);
    let runtime = DockerRuntime::new(docker, config);
    let repo = Arc::new(MemoryInstanceRepository::new());
    let instance = Instance::new(
        UserId::new_random(),
        InstanceName::new("sleeper").unwrap(),
        sleeper(),
        Resources::default(),
        Utc::now(),
    )
    .unwrap();
    record_created(repo.as_ref(), &instance).await;
    (runtime, repo, instance)
}

#[tokio::test]
async fn stop_start_kill_and_rm_behind_our_back_show_within_two_seconds() {
    let (runtime, repo, instance) = setup().await;
    let commits = Arc::new(AtomicUsize::new(0));
    let (watcher, cancel, _) =
        spawn_watcher_with(watcher_of(&runtime, &repo).with_on_commit(Arc::new({
            let commits = commits.clone();
            move || {
                commits.fetch_add(1, Ordering::SeqCst);
            }
        })));
    let container = runtime.provision(&instance, &Secrets::new()).await.unwrap().remove(0);
    let docker = runtime.engine().client().unwrap();
    let two_seconds = Duration::from_secs(2);

    status_becomes(&repo, &instance, InstanceStatus::Running, Duration::from_secs(10)).await;

    docker.stop_container(&container.id, None).await.unwrap();
    status_becomes(&repo, &instance, InstanceStatus::Stopped, two_seconds).await;

    docker.start_container(&container.id, None).await.unwrap();
    status_becomes(&repo, &instance, InstanceStatus::Running, two_seconds).await;

    docker
        .kill_container(
            &container.id,
            Some(KillContainerOptionsBuilder::new().signal("KILL").build()),
        )
        .await
        .unwrap();
    status_becomes(&repo, &instance, InstanceStatus::Failed, two_seconds).await;
    // Its state (exit 137, no OOM) reads like a stop's; reconciliation leaves what the watcher
    // saw happen: a bare kill, failed.
    assert_eq!(watcher.reconcile().await.unwrap(), 0);
    assert_eq!(
        repo.get_instance(instance.id).await.unwrap().unwrap().status,
        InstanceStatus::Failed
    );

    docker
        .remove_container(
            &container.id,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .unwrap();
    status_becomes(&repo, &instance, InstanceStatus::Deleted, two_seconds).await;
    cancel.cancel();
    // No container is left to tell the instance's owner: the delete names it, so the owner's
    // network goes too.
    runtime.remove_instance(&instance, true).await.unwrap();
    let network = runtime.user_network(instance.owner);
    assert!(docker.inspect_network(&network, None).await.is_err(), "{network} is left");

    let names: Vec<String> =
        repo.outbox().iter().filter(|e| e.instance_id == instance.id).map(|e| e.name()).collect();
    assert_eq!(
        names,
        [
            "docker.created",
            "docker.started",
            "docker.stopped",
            "docker.started",
            "docker.failed",
            "docker.deleted"
        ]
    );
    // Every change the watcher committed (all but the test's own `created`) called the hook
    // that wakes the relay, once.
    assert_eq!(commits.load(Ordering::SeqCst), names.len() - 1);
    let failed = repo.outbox().into_iter().find(|e| e.action == EventAction::Failed).unwrap();
    assert_eq!(failed.metadata.get("exit_code").map(String::as_str), Some("137"));
    assert_eq!(failed.metadata.get("container_id"), Some(&container.id));
}

#[tokio::test]
async fn reconciliation_repairs_a_drift_the_events_never_reported() {
    let (runtime, repo, instance) = setup().await;
    let container = runtime.provision(&instance, &Secrets::new()).await.unwrap().remove(0);
    // The store believes it runs; the engine has it stopped (as after a missed event).
    store_running(&repo, &instance).await;
    runtime.engine().client().unwrap().stop_container(&container.id, None).await.unwrap();
    // Stopped cleanly, unless SIGTERM beat the shell's trap on a loaded machine (then the
    // engine killed it after the timeout, exit 137): the repair must follow the engine's truth.
    let state = runtime
        .engine()
        .client()
        .unwrap()
        .inspect_container(&container.id, None)
        .await
        .unwrap()
        .state;
    let truth = status_for_state(&state.unwrap());
    assert_ne!(truth, InstanceStatus::Running);

    let watcher = watcher_of(&runtime, &repo);
    assert_eq!(watcher.reconcile().await.unwrap(), 1);
    assert_eq!(repo.get_instance(instance.id).await.unwrap().unwrap().status, truth);
    let repair = repo.outbox().into_iter().last().unwrap();
    assert_eq!(repair.name(), format!("docker.{}", EventAction::for_status(truth).as_str()));
    assert_eq!(repair.metadata.get("reconciled").map(String::as_str), Some("true"));
    // A second pass finds nothing to do.
    assert_eq!(watcher.reconcile().await.unwrap(), 0);

    // Removed while nobody watched: reconciled to deleted.
    runtime.remove(instance.id, true).await.unwrap();
    assert_eq!(watcher.reconcile().await.unwrap(), 1);
    assert_eq!(
        repo.get_instance(instance.id).await.unwrap().unwrap().status,
        InstanceStatus::Deleted
    );
}

/// A steady fleet costs a pass two listings: an instance recorded running whose primary the
/// listing shows running is not inspected; one the listing shows stopped is, and repaired.
#[tokio::test]
async fn a_pass_inspects_only_what_the_listing_contradicts() {
    let (runtime, repo, instance) = setup().await;
    let container = runtime.provision(&instance, &Secrets::new()).await.unwrap().remove(0);
    store_running(&repo, &instance).await;
    let watch = Arc::new(CountingWatch {
        inner: DockerWatch::new(runtime.engine().client().unwrap()),
        inspections: AtomicUsize::new(0),
    });
    let watcher =
        Watcher::new(watch.clone(), repo.clone(), Arc::new(SystemClock), WatcherConfig::default());
    assert_eq!(watcher.reconcile().await.unwrap(), 0);
    assert_eq!(watch.inspections.load(Ordering::SeqCst), 0, "a running instance was inspected");

    runtime.engine().client().unwrap().stop_container(&container.id, None).await.unwrap();
    assert_eq!(watcher.reconcile().await.unwrap(), 1);
    assert_eq!(watch.inspections.load(Ordering::SeqCst), 1);
    assert_ne!(
        repo.get_instance(instance.id).await.unwrap().unwrap().status,
        InstanceStatus::Running
    );
    runtime.remove_instance(&instance, true).await.unwrap();
}

#[tokio::test]
async fn an_action_whose_process_died_is_settled_where_the_engine_is() {
    let (runtime, repo, instance) = setup().await;
    runtime.provision(&instance, &Secrets::new()).await.unwrap();
    // The store says a stop began; the process that took it died before asking the engine,
    // so the container still runs.
    for to in [InstanceStatus::Running, InstanceStatus::Stopping] {
        repo.update_status(StatusChange {
            id: instance.id,
            expected_version: None,
            to,
            event: InfrastructureEvent::new(
                instance.id,
                instance.owner,
                instance.kind(),
                EventAction::for_status(to),
                Utc::now(),
            ),
            at: Utc::now(),
        })
        .await
        .unwrap();
    }
    let engine = runtime.engine().client().unwrap();
    // Within the deadline the stop may still be under way: left alone.
    let patient = Watcher::new(
        Arc::new(DockerWatch::new(engine.clone())),
        repo.clone(),
        Arc::new(SystemClock),
        WatcherConfig::default(),
    );
    assert_eq!(patient.reconcile().await.unwrap(), 0);
    assert_eq!(
        repo.get_instance(instance.id).await.unwrap().unwrap().status,
        InstanceStatus::Stopping
    );
    // Past it, the engine's word stands: running, said to be an abandoned stop.
    let mut config = WatcherConfig::default();
    config.action_deadline = Duration::ZERO;
    let settling = Watcher::new(
        Arc::new(DockerWatch::new(engine)),
        repo.clone(),
        Arc::new(SystemClock),
        config,
    );
    assert_eq!(settling.reconcile().await.unwrap(), 1);
    assert_eq!(
        repo.get_instance(instance.id).await.unwrap().unwrap().status,
        InstanceStatus::Running
    );
    let settled = repo.outbox().into_iter().last().unwrap();
    assert_eq!(settled.action, EventAction::Started);
    assert_eq!(settled.metadata.get("abandoned").map(String::as_str), Some("stopping"));
    runtime.remove(instance.id, true).await.unwrap();
}

#[tokio::test]
async fn events_missed_while_disconnected_are_recovered_on_reconnect() {
    let (runtime, repo, instance) = setup().await;
    let (_first, cancel, _) =
        spawn_watcher(&runtime.engine().client().unwrap(), repo.clone(), WatcherConfig::default());
    let container = runtime.provision(&instance, &Secrets::new()).await.unwrap().remove(0);
    status_becomes(&repo, &instance, InstanceStatus::Running, Duration::from_secs(10)).await;
    cancel.cancel();

    runtime.engine().client().unwrap().stop_container(&container.id, None).await.unwrap();

    let (second, cancel, _) =
        spawn_watcher(&runtime.engine().client().unwrap(), repo.clone(), WatcherConfig::default());
    status_becomes(&repo, &instance, InstanceStatus::Stopped, Duration::from_secs(5)).await;
    cancel.cancel();
    runtime.remove(instance.id, true).await.unwrap();
    eprintln!("recovered by {:?}", second.stats());
}

#[tokio::test]
async fn containers_of_unknown_instances_are_ignored() {
    let (runtime, repo, _instance) = setup().await;
    let (watcher, cancel, _) =
        spawn_watcher(&runtime.engine().client().unwrap(), repo.clone(), WatcherConfig::default());
    let docker = runtime.engine().client().unwrap();
    let name = unique_name("iaas-stranger");
    let body = ContainerCreateBody {
        image: Some(iaas_testkit::busybox_image()),
        cmd: Some(vec!["true".into()]),
        labels: Some(HashMap::from([
            ("iaas.managed".to_owned(), "true".to_owned()),
            ("iaas.instance".to_owned(), iaas_core::InstanceId::new_random().to_string()),
        ])),
        ..Default::default()
    };
    let created = docker
        .create_container(Some(CreateContainerOptionsBuilder::new().name(&name).build()), body)
        .await
        .unwrap();
    docker.start_container(&created.id, None).await.unwrap();
    eventually(Duration::from_secs(5), || async {
        let stats = watcher.stats();
        if stats.ignored_unknown >= 1 { Ok(()) } else { Err(stats) }
    })
    .await
    .unwrap();
    docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .unwrap();
    cancel.cancel();
    assert_eq!(repo.outbox().len(), 1, "nothing but the created event of the test's own instance");
}

#[tokio::test]
async fn a_failed_instance_without_containers_stays_failed() {
    // What a failed provisioning leaves behind: no containers, status failed with its reason.
    let (runtime, repo, instance) = setup().await;
    record_failed(&repo, &instance, "host port 18080 is already in use").await;
    let watcher = watcher_of(&runtime, &repo);
    assert_eq!(watcher.reconcile().await.unwrap(), 0);
    assert_eq!(
        repo.get_instance(instance.id).await.unwrap().unwrap().status,
        InstanceStatus::Failed
    );
}

#[tokio::test]
async fn reconciliation_removes_the_containers_and_network_of_a_deleted_instance() {
    // What a delete leaves when its removal failed or ran before a racing provisioning created
    // the containers: the instance is deleted (and no longer counted), its containers run on.
    let (runtime, repo, instance) = setup().await;
    let container = runtime.provision(&instance, &Secrets::new()).await.unwrap().remove(0);
    let docker = runtime.engine().client().unwrap();
    let network = runtime.user_network(instance.owner);
    let watcher = watcher_of(&runtime, &repo);
    // While the instance exists its owner's network stays.
    watcher.reconcile().await.unwrap();
    assert_eq!(watcher.stats().networks_released, 0, "{:?}", watcher.stats());
    assert!(docker.inspect_network(&network, None).await.is_ok(), "{network} is kept");
    let deleted = InfrastructureEvent::new(
        instance.id,
        instance.owner,
        instance.kind(),
        EventAction::Deleted,
        Utc::now(),
    );
    repo.update_status(StatusChange {
        id: instance.id,
        expected_version: None,
        to: InstanceStatus::Deleted,
        event: deleted,
        at: Utc::now(),
    })
    .await
    .unwrap();

    assert_eq!(watcher.reconcile().await.unwrap(), 0, "a deleted instance has no status to repair");
    assert_eq!(watcher.stats().swept, 1, "{:?}", watcher.stats());
    let gone = docker.inspect_container(&container.id, None).await;
    assert!(gone.is_err(), "the container of the deleted instance is still there: {gone:?}");
    // Its owner's last container went with it: so does the network, in the same pass (a
    // removal of the instance now finds no container to learn the owner from).
    assert_eq!(watcher.stats().networks_released, 1, "{:?}", watcher.stats());
    let gone = docker.inspect_network(&network, None).await;
    assert!(gone.is_err(), "{network} of the deleted instance is still there: {gone:?}");
    // Nothing else to sweep on the next pass.
    watcher.reconcile().await.unwrap();
    assert_eq!((watcher.stats().swept, watcher.stats().networks_released), (1, 1));
    runtime.remove(instance.id, true).await.unwrap();
}

#[tokio::test]
async fn reconciliation_leaves_the_network_of_an_owner_it_does_not_know() {
    // Another platform on the same engine: its user's network, no container on it yet.
    let (runtime, repo, _) = setup().await;
    let docker = runtime.engine().client().unwrap();
    let stranger = UserId::new_random();
    let network = runtime.user_network(stranger);
    docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: network.clone(),
            labels: Some(HashMap::from([
                ("iaas.managed".to_owned(), "true".to_owned()),
                ("iaas.owner".to_owned(), stranger.to_string()),
                ("iaas.role".to_owned(), "network".to_owned()),
            ])),
            ..Default::default()
        })
        .await
        .unwrap();
    let watcher = watcher_of(&runtime, &repo);
    watcher.reconcile().await.unwrap();
    let kept = docker.inspect_network(&network, None).await;
    docker.remove_network(&network).await.unwrap();
    assert!(kept.is_ok(), "{network} of an owner this store does not know was removed");
    assert_eq!(watcher.stats().networks_released, 0, "{:?}", watcher.stats());
}
