//! The Docker engine itself restarts during a test and no transition is lost: a PRIVATE dockerd
//! (its own data root, exec root, socket, pid file and bridge; never the system engine) is
//! stopped with SIGTERM while the watcher follows it, the state changes while it is down and
//! while it comes back, and the watcher reconnects and reconciles every instance to the truth,
//! writing each transition to the outbox exactly once.
//!
//! The private engine runs beside the system one: `--iptables=false --ip6tables=false` so it
//! leaves the host's firewall alone, and a bridge interface of its own (`--bridge=NAME`) rather
//! than `--bridge=none`, because dockerd with `--bridge=none` deletes the host's `docker0`
//! interface, which the system engine's default network needs. Port publishing works through
//! the userland proxy without iptables, and the runtime's per-instance networks are plain
//! bridges, so the runtime needs no special network mode here.
//!
//! It needs root, `dockerd` and `ip` (iproute2), and the `docker` CLI to copy the busybox image
//! over; without them the test prints why and passes without running.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use common::{record_created, spawn_watcher, status_becomes};

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::RemoveContainerOptionsBuilder;
use chrono::Utc;
use iaas_core::memory::MemoryInstanceRepository;
use iaas_core::{ContainerRuntime, Secrets};
use iaas_core::{
    DockerSpec, InfrastructureEvent, Instance, InstanceName, InstanceSpec, InstanceStatus,
    Resources, UserId,
};
use iaas_docker::{DockerRuntime, DockerRuntimeConfig};
use iaas_provisioning::WatcherConfig;
use iaas_testkit::wait::eventually;

/// A dockerd of this test's own. Dropping it stops the engine (SIGTERM to its pid only) and
/// removes its bridge and directories.
struct PrivateDockerd {
    root: PathBuf,
    bridge: String,
    child: Option<Child>,
}

impl PrivateDockerd {
    /// Why a private engine cannot run here, if it cannot.
    fn unavailable() -> Option<String> {
        for (tool, arg) in [("dockerd", "--version"), ("ip", "-V"), ("docker", "--version")] {
            let ran =
                Command::new(tool).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status();
            if !ran.is_ok_and(|status| status.success()) {
                return Some(format!("`{tool}` is not installed"));
            }
        }
        let uid = Command::new("id").arg("-u").output().ok()?;
        (String::from_utf8_lossy(&uid.stdout).trim() != "0")
            .then(|| "a private dockerd needs root".to_owned())
    }

    /// Creates the bridge and directories and starts the engine.
    fn create() -> Self {
        // Short paths: the engine's and containerd's sockets live under them (108-byte limit).
        let id = iaas_testkit::isolation::unique_name("x");
        let suffix = &id[id.len() - 8..];
        let root = PathBuf::from(format!("/tmp/iaas-dd-{suffix}"));
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::create_dir_all(root.join("exec")).unwrap();
        let bridge = format!("iaasdd{suffix}");
        // A /24 in 10.199.0.0/16 picked from the id; nothing else on these machines uses it.
        let octet = u8::from_str_radix(&suffix[..2], 16).unwrap();
        run("ip", &["link", "add", "name", &bridge, "type", "bridge"]);
        run("ip", &["addr", "add", &format!("10.199.{octet}.1/24"), "dev", &bridge]);
        run("ip", &["link", "set", &bridge, "up"]);
        let mut engine = Self { root, bridge, child: None };
        engine.start();
        engine
    }

    fn socket(&self) -> PathBuf {
        self.root.join("docker.sock")
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "the private dockerd is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("dockerd.log"))
            .unwrap();
        let child = Command::new("dockerd")
            .arg(format!("--data-root={}", self.root.join("data").display()))
            .arg(format!("--exec-root={}", self.root.join("exec").display()))
            .arg(format!("--pidfile={}", self.root.join("docker.pid").display()))
            .arg(format!("--host=unix://{}", self.socket().display()))
            .arg(format!("--bridge={}", self.bridge))
            .args(["--iptables=false", "--ip6tables=false", "--storage-driver=overlay2"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// A client of the private engine, once it answers.
    async fn client(&self) -> Docker {
        let socket = self.socket();
        eventually(Duration::from_secs(30), || async {
            let docker = Docker::connect_with_unix(
                &socket.display().to_string(),
                120,
                bollard::API_DEFAULT_VERSION,
            )
            .map_err(|e| e.to_string())?;
            docker.ping().await.map_err(|e| e.to_string())?;
            docker.negotiate_version().await.map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|last| panic!("the private dockerd never answered: {last}"))
    }

    /// SIGTERM to this engine's pid, then waits until it has exited (it stops its containers
    /// first, as on a host shutdown).
    async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        run("kill", &["-TERM", &child.id().to_string()]);
        eventually(Duration::from_secs(60), || {
            let exited = child.try_wait().map_err(|e| e.to_string());
            async move {
                match exited? {
                    Some(status) => Ok(status),
                    None => Err("still running".to_owned()),
                }
            }
        })
        .await
        .unwrap_or_else(|last| panic!("the private dockerd did not stop: {last}"));
    }

    /// Copies `image` from the system engine into this one.
    fn load(&self, image: &str) {
        let script =
            format!("docker save '{image}' | docker -H 'unix://{}' load", self.socket().display());
        let output = Command::new("sh").args(["-c", &script]).output().unwrap();
        assert!(
            output.status.success(),
            "loading {image}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Only this engine's pid. It exits once its containers stopped.
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).status();
        if let Err(error) = std::fs::remove_dir_all(&self.root) {
            eprintln!("leaving {}: {error}", self.root.display());
        }
    }
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A shell that exits cleanly on SIGTERM, so a stop (the engine's too) is a clean exit.
fn sleeper(owner: UserId, name: &str) -> Instance {
    Instance::new(
        owner,
        InstanceName::new(name).unwrap(),
        InstanceSpec::Docker(DockerSpec {
            image: iaas_testkit::busybox_image(),
            env: Default::default(),
            ports: vec![8080.into()],
            command: Some(vec![
                "sh".into(),
                "-c".into(),
                "trap 'exit 0' TERM; sleep 300 & wait".into(),
            ]),
        }),
        Resources { millicpus: 250, memory_mib: 64 },
        Utc::now(),
    )
    .unwrap()
}

fn events_of(repo: &MemoryInstanceRepository, instance: &Instance) -> Vec<InfrastructureEvent> {
    repo.outbox().into_iter().filter(|e| e.instance_id == instance.id).collect()
}

#[tokio::test]
async fn a_dockerd_restart_loses_no_transition() {
    if let Some(reason) = PrivateDockerd::unavailable() {
        iaas_testkit::skip_fault_test(
            "the dockerd restart test",
            &format!("no private Docker engine can run here: {reason}"),
        );
        return;
    }
    let mut engine = PrivateDockerd::create();
    let docker = engine.client().await;
    engine.load(&iaas_testkit::busybox_image());

    let mut config = DockerRuntimeConfig::default();
    config.stop_timeout = Duration::from_secs(5);
    let runtime = DockerRuntime::new(docker.clone(), config);
    let repo = Arc::new(MemoryInstanceRepository::new());
    let owner = UserId::new_random();
    let (survivor, removed) = (sleeper(owner, "survivor"), sleeper(owner, "removed"));
    for instance in [&survivor, &removed] {
        record_created(repo.as_ref(), instance).await;
    }
    // Quick reconnection; the periodic pass is left at its default (60 s), so only the pass
    // after reconnecting can repair what the stream never reported.
    let mut watcher_config = WatcherConfig::default();
    watcher_config.initial_backoff = Duration::from_millis(100);
    watcher_config.max_backoff = Duration::from_millis(500);
    let (watcher, cancel, task) = spawn_watcher(&docker, repo.clone(), watcher_config.clone());

    runtime.provision(&survivor, &Secrets::new()).await.unwrap();
    let gone = runtime.provision(&removed, &Secrets::new()).await.unwrap().remove(0);
    for instance in [&survivor, &removed] {
        status_becomes(&repo, instance, InstanceStatus::Running, Duration::from_secs(10)).await;
    }
    let before = watcher.stats();

    // The engine goes down (its containers stop with it) and comes back.
    engine.stop().await;
    engine.start();
    let docker = engine.client().await;
    // While it restarts, before or after the watcher is back: one container is removed.
    docker
        .remove_container(&gone.id, Some(RemoveContainerOptionsBuilder::new().force(true).build()))
        .await
        .unwrap();

    status_becomes(&repo, &survivor, InstanceStatus::Stopped, Duration::from_secs(20)).await;
    status_becomes(&repo, &removed, InstanceStatus::Deleted, Duration::from_secs(20)).await;
    let after = watcher.stats();
    assert!(after.connections > before.connections, "the watcher reconnected: {after:?}");
    // The stops during the engine's shutdown reach the stream or not (a race between its API
    // closing and its containers stopping; its event log does not survive the restart): either
    // way the transition is recorded once, by the event or by the pass after reconnecting.
    eprintln!(
        "repaired by reconciliation: {}, applied from events: {}",
        after.reconciled - before.reconciled,
        after.applied - before.applied
    );

    // And the watcher follows the live stream again.
    runtime.start(survivor.id).await.unwrap();
    status_becomes(&repo, &survivor, InstanceStatus::Running, Duration::from_secs(2)).await;

    cancel.cancel();
    task.await.unwrap();
    let names = |instance: &Instance| -> Vec<String> {
        events_of(&repo, instance).iter().map(InfrastructureEvent::name).collect()
    };
    assert_eq!(
        names(&survivor),
        ["docker.created", "docker.started", "docker.stopped", "docker.started"],
        "every transition once, none lost, none doubled"
    );
    // It stopped with the engine too, then was removed.
    assert_eq!(
        names(&removed),
        ["docker.created", "docker.started", "docker.stopped", "docker.deleted"]
    );

    // Now the platform is down too (no watcher at all) while the engine restarts. The engine's
    // event log does not survive its restart, so nothing can replay the survivor's stop: the
    // first reconciliation pass of the next watcher must repair it.
    engine.stop().await;
    engine.start();
    let docker = engine.client().await;
    let (next, cancel, task) = spawn_watcher(&docker, repo.clone(), watcher_config);
    status_becomes(&repo, &survivor, InstanceStatus::Stopped, Duration::from_secs(10)).await;
    cancel.cancel();
    task.await.unwrap();
    assert_eq!(next.stats().reconciled, 1, "{:?}", next.stats());
    let repair = events_of(&repo, &survivor).into_iter().last().unwrap();
    assert_eq!(repair.name(), "docker.stopped");
    assert_eq!(repair.metadata.get("reconciled").map(String::as_str), Some("true"), "{repair:?}");
    assert_eq!(events_of(&repo, &survivor).len(), 5, "created, started, stopped, started, stopped");

    runtime.remove(survivor.id, true).await.unwrap();
    runtime.remove(removed.id, true).await.unwrap();
    engine.stop().await;
}
