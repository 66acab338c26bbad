use std::time::Duration;

use bollard::Docker;

use crate::error::TestkitError;
use crate::service::env_var;

/// Image for quick container tests (anything with `/bin/sh`; default `busybox:1.36`).
pub const BUSYBOX_IMAGE_VAR: &str = "IAAS_TEST_BUSYBOX_IMAGE";
const DEFAULT_BUSYBOX: &str = "busybox:1.36";
const DOCKER_HOST_VAR: &str = "DOCKER_HOST";
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of the Docker engine named by `DOCKER_HOST` (the local socket when unset) that has
/// answered a ping, speaking the newest API version the engine supports.
pub async fn docker() -> Result<Docker, TestkitError> {
    let host = env_var(DOCKER_HOST_VAR).unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
    let unreachable = |reason: String| TestkitError::NotReachable {
        service: "docker",
        var: DOCKER_HOST_VAR,
        url: host.clone(),
        waited_secs: PING_TIMEOUT.as_secs(),
        reason,
    };
    let client = Docker::connect_with_defaults().map_err(|err| unreachable(err.to_string()))?;
    let client = tokio::time::timeout(PING_TIMEOUT, client.negotiate_version())
        .await
        .map_err(|_| unreachable("no answer to the version negotiation".to_owned()))?
        .map_err(|err| unreachable(err.to_string()))?;
    tokio::time::timeout(PING_TIMEOUT, client.ping())
        .await
        .map_err(|_| unreachable("no answer to ping".to_owned()))?
        .map_err(|err| unreachable(err.to_string()))?;
    Ok(client)
}

/// The small image tests run throw-away containers from.
pub fn busybox_image() -> String {
    env_var(BUSYBOX_IMAGE_VAR).unwrap_or_else(|| DEFAULT_BUSYBOX.to_owned())
}
