//! `iaas-load scale --engine docker`: the same measures in front of the real Docker engine,
//! running a container per instance, so the figures are the control plane's and the engine's
//! together.
//!
//! Behind the control plane's back it kills containers (`docker kill`, for the watcher's
//! burst), and between counts it removes every instance it made, as the platform's delete does
//! (containers, volumes, and each owner's network with their last instance). It also reads what
//! the engine's own processes (`dockerd`, `containerd` and one `containerd-shim` per running
//! container) hold in memory and what the machine has in use, so the memory per instance can
//! be told apart: this process's share, the engine's, and the machine's (kernel included).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use iaas_core::runtime::{ContainerRuntime, RuntimeWatch};
use iaas_core::{Instance, InstanceId};
use iaas_docker::{DockerRuntime, DockerRuntimeConfig, DockerWatch};

/// Engine calls in flight at once while killing or removing.
const PARALLEL: usize = 8;

/// The Docker engine of `DOCKER_HOST` (or the local socket).
pub(crate) struct DockerEngine {
    pub(crate) runtime: Arc<DockerRuntime>,
    pub(crate) watch: Arc<DockerWatch>,
    client: Docker,
}

impl DockerEngine {
    /// Connects to the engine and checks that it answers.
    pub(crate) async fn connect() -> Result<Self, String> {
        let client = Docker::connect_with_defaults()
            .map_err(|err| format!("connecting to the Docker engine: {err}"))?;
        client.ping().await.map_err(|err| format!("the Docker engine does not answer: {err}"))?;
        Ok(Self {
            runtime: Arc::new(DockerRuntime::new(client.clone(), DockerRuntimeConfig::default())),
            watch: Arc::new(DockerWatch::new(client.clone())),
            client,
        })
    }

    /// Kills the containers of `instances` behind the control plane's back, as `docker kill`
    /// does (the engine sends `die`).
    pub(crate) async fn kill(&self, instances: &[InstanceId]) -> Result<(), String> {
        let containers: HashMap<InstanceId, String> = self
            .watch
            .list_managed()
            .await
            .map_err(|err| format!("listing the engine's containers: {err}"))?
            .into_iter()
            .map(|container| (container.instance, container.id))
            .collect();
        let targets: Vec<&String> = instances.iter().filter_map(|id| containers.get(id)).collect();
        for chunk in targets.chunks(PARALLEL) {
            let kills = chunk.iter().map(|container| {
                self.client.kill_container(
                    container,
                    None::<bollard::query_parameters::KillContainerOptions>,
                )
            });
            for (container, killed) in chunk.iter().zip(futures_util::future::join_all(kills).await)
            {
                killed.map_err(|err| format!("killing container {container}: {err}"))?;
            }
        }
        Ok(())
    }

    /// Removes every container, volume and owner network of `instances`, each tried whatever
    /// became of the others, then checks that the engine holds none of their containers and
    /// none of their owners' networks; how long it took.
    pub(crate) async fn remove_all(&self, instances: &[Instance]) -> Result<Duration, String> {
        let started = Instant::now();
        let mut failed = Vec::new();
        for chunk in instances.chunks(PARALLEL) {
            let removals =
                chunk.iter().map(|instance| self.runtime.remove_instance(instance, true));
            for (instance, removed) in
                chunk.iter().zip(futures_util::future::join_all(removals).await)
            {
                if let Err(err) = removed {
                    failed.push(format!("instance {}: {err}", instance.id));
                }
            }
        }
        let ours: std::collections::HashSet<InstanceId> =
            instances.iter().map(|instance| instance.id).collect();
        let left = self
            .watch
            .list_managed()
            .await
            .map_err(|err| format!("listing the engine's containers after the removal: {err}"))?
            .into_iter()
            .filter(|container| ours.contains(&container.instance))
            .count();
        let owners: std::collections::BTreeSet<_> =
            instances.iter().map(|instance| instance.owner).collect();
        let mut networks_left = 0;
        for owner in owners {
            let network = self.runtime.user_network(owner);
            match self.client.inspect_network(&network, None).await {
                Ok(_) => networks_left += 1,
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(err) => return Err(format!("inspecting network {network}: {err}")),
            }
        }
        if failed.is_empty() && left == 0 && networks_left == 0 {
            Ok(started.elapsed())
        } else {
            Err(format!(
                "removing the run's instances: {left} containers and {networks_left} owner \
                 networks left, {} removals failed: {}",
                failed.len(),
                failed.join("; ")
            ))
        }
    }
}

/// What the engine's processes hold in memory, KiB: the proportional set size (each shared
/// page divided among the processes that map it, so the shims' common code counts once) of
/// `dockerd`, `containerd` and every `containerd-shim`. 0 where `/proc` cannot say.
pub(crate) fn engine_resident_kib() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let mut total = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else { continue };
        let comm = comm.trim();
        if !(comm == "dockerd" || comm.starts_with("containerd")) {
            continue;
        }
        let Ok(rollup) = std::fs::read_to_string(path.join("smaps_rollup")) else { continue };
        total += field_kib(&rollup, "Pss:");
    }
    total
}

/// What the machine has in use, KiB: `MemTotal - MemAvailable` (the kernel's share of each
/// container, its cgroup, network namespace and mounts, included). 0 where `/proc` cannot say.
pub(crate) fn machine_used_kib() -> u64 {
    let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") else { return 0 };
    field_kib(&meminfo, "MemTotal:").saturating_sub(field_kib(&meminfo, "MemAvailable:"))
}

/// The value of `field` (`Pss:`, `MemTotal:`) in a `/proc` file of `name: value kB` lines.
fn field_kib(text: &str, field: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_is_read_from_a_proc_file() {
        let rollup = "55d0-7ffc ---p 00000000 00:00 0 [rollup]\nRss:  8412 kB\nPss:  2101 kB\n";
        assert_eq!(field_kib(rollup, "Pss:"), 2101);
        assert_eq!(field_kib(rollup, "Swap:"), 0, "a field that is not there reads 0");
        let meminfo = "MemTotal:  24000000 kB\nMemFree: 1000 kB\nMemAvailable: 20000000 kB\n";
        assert_eq!(field_kib(meminfo, "MemTotal:"), 24_000_000);
    }
}
