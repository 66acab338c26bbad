//! Provisioning through a real Docker engine from your own tokio program: a `DockerRuntime`
//! creates a small generic `docker` instance running `sleep 300`, lists the managed containers,
//! reads the instance's cluster info, and removes it with its volumes (`purge`). The removal
//! runs whatever happened before it (a failed step, or Ctrl-C, which stops the run after the
//! step in progress), so nothing is left behind.
//!
//! Run it with `cargo run -p iaas-docker --example provision_container`. It needs a Docker
//! engine (`DOCKER_HOST`, or the default socket) and the image named by `IAAS_EXAMPLE_IMAGE`
//! (default `busybox:1.36`), which is pulled when the engine does not have it yet; e.g.
//! `IAAS_EXAMPLE_IMAGE=busybox:1.36 cargo run -p iaas-docker --example provision_container`.

#![allow(clippy::print_stdout, reason = "an example shows what it did on stdout")]

use std::collections::BTreeMap;

use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use chrono::Utc;
use futures_util::TryStreamExt as _;
use iaas_core::{
    ClusterSource, DockerSpec, Instance, InstanceName, InstanceSpec, Resources, UserId,
};
use iaas_core::{ContainerRuntime, Secrets};
use iaas_docker::{DockerRuntime, DockerRuntimeConfig};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let image = std::env::var("IAAS_EXAMPLE_IMAGE").unwrap_or_else(|_| "busybox:1.36".to_owned());
    let docker = Docker::connect_with_defaults()?.negotiate_version().await?;
    // The runtime runs only images the engine has: pull this one first if needed.
    if docker.inspect_image(&image).await.is_err() {
        println!("pulling {image}");
        let options = CreateImageOptionsBuilder::new().from_image(&image).build();
        docker.create_image(Some(options), None, None).try_collect::<Vec<_>>().await?;
    }
    let runtime = DockerRuntime::new(docker, DockerRuntimeConfig::default());

    let owner = UserId::new_random();
    let spec = InstanceSpec::Docker(DockerSpec {
        image,
        env: BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]),
        ports: Vec::new(),
        command: Some(vec!["sleep".to_owned(), "300".to_owned()]),
    });
    let resources = Resources { millicpus: 250, memory_mib: 64 };
    let instance =
        Instance::new(owner, InstanceName::new("sleeper")?, spec, resources, Utc::now())?;

    // Ctrl-C ends the run after the step in progress rather than in the middle of it: an engine
    // call cut off midway may still create a container after the removal below has looked.
    let interrupt = CancellationToken::new();
    tokio::spawn({
        let interrupt = interrupt.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupt.cancel();
            }
        }
    });
    let outcome = exercise(&runtime, &instance, &interrupt).await;

    // Always: removing what does not exist succeeds, so this is safe after any failure.
    let removed = runtime.remove(instance.id, true).await;
    match &removed {
        Ok(()) => {
            let left = runtime.list_managed().await?;
            let left = left.iter().filter(|c| c.instance == instance.id).count();
            println!("removed instance {} with its volumes; {left} containers left", instance.id);
        }
        Err(error) => println!("removing instance {} failed: {error}", instance.id),
    }
    outcome?;
    removed?;
    Ok(())
}

/// Provision, list, describe.
async fn exercise(
    runtime: &DockerRuntime,
    instance: &Instance,
    interrupt: &CancellationToken,
) -> Result<(), Box<dyn std::error::Error>> {
    let go_on = || if interrupt.is_cancelled() { Err("interrupted") } else { Ok(()) };
    runtime.ready().await?;
    go_on()?;
    let containers = runtime.provision(instance, &Secrets::new()).await?;
    for container in &containers {
        println!("provisioned {} ({}) as {}", container.name, container.role, short(&container.id));
    }

    go_on()?;
    let managed = runtime.list_managed().await?;
    println!("managed containers on this engine: {}", managed.len());
    for container in managed.iter().filter(|c| c.instance == instance.id) {
        println!(
            "  {} role={} running={} owner={}",
            container.name,
            container.role,
            container.running,
            container.owner.map_or_else(|| "-".to_owned(), |owner| owner.to_string())
        );
    }

    go_on()?;
    let info = runtime.cluster_info(instance.id).await?;
    println!(
        "cluster info: status {}, {} nodes, endpoints {:?}",
        info.status,
        info.nodes.len(),
        info.endpoints
    );
    for node in &info.nodes {
        println!(
            "  node {} ({:?}) running={} container={}",
            node.name,
            node.role,
            node.running,
            node.container_id.as_deref().map_or("-", short)
        );
    }
    Ok(())
}

/// The first 12 characters of an engine id, as `docker ps` shows it.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
