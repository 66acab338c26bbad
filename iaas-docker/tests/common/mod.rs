//! What the engine test binaries share: a runtime on the configured local images, and a
//! fresh instance to provision.

#![allow(dead_code, unreachable_pub, reason = "each test binary uses part of this shared module")]

use std::time::Duration;

use chrono::Utc;
use iaas_core::{Instance, InstanceName, InstanceSpec, Resources, UserId};
use iaas_docker::{DockerRuntime, DockerRuntimeConfig, ImageCatalog};

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
