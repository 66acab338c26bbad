use std::time::Duration;

use testcontainers::core::WaitFor;

use crate::error::TestkitError;
use crate::service::{ContainerRecipe, Service, env_var};
use crate::wait::eventually;

/// Names a running Redis (`redis://127.0.0.1:6379`).
pub const REDIS_URL_VAR: &str = "IAAS_TEST_REDIS_URL";
/// Image started when [`REDIS_URL_VAR`] is unset (default `redis:7`).
pub const REDIS_IMAGE_VAR: &str = "IAAS_TEST_REDIS_IMAGE";
const DEFAULT_IMAGE: &str = "redis:7";
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A Redis server that answers `PING`: the one named by `IAAS_TEST_REDIS_URL`, or a new
/// container.
pub async fn redis() -> Result<Service, TestkitError> {
    let service = match env_var(REDIS_URL_VAR) {
        Some(url) => Service::from_env(REDIS_URL_VAR, url),
        None => start_redis_container().await?,
    };
    wait_until_ready(&service).await?;
    Ok(service)
}

/// Starts a Redis container from `IAAS_TEST_REDIS_IMAGE` (default `redis:7`), whatever the
/// environment says about a running server.
pub async fn start_redis_container() -> Result<Service, TestkitError> {
    let mut recipe = ContainerRecipe::new(REDIS_URL_VAR, REDIS_IMAGE_VAR, DEFAULT_IMAGE, 6379);
    recipe.ready_line = Some(WaitFor::message_on_stdout("Ready to accept connections"));
    let image = recipe.image.clone();
    let (container, port) = recipe.start().await?;
    Ok(Service::from_container(image, format!("redis://127.0.0.1:{port}"), container))
}

async fn wait_until_ready(service: &Service) -> Result<(), TestkitError> {
    let client = ::redis::Client::open(service.url()).map_err(|err| TestkitError::BadVariable {
        var: REDIS_URL_VAR,
        value: service.url().to_owned(),
        reason: err.to_string(),
    })?;
    eventually(READY_TIMEOUT, || async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        ::redis::cmd("PING").query_async::<String>(&mut conn).await
    })
    .await
    .map(drop)
    .map_err(|reason| TestkitError::NotReachable {
        service: "redis",
        var: REDIS_URL_VAR,
        url: service.url().to_owned(),
        waited_secs: READY_TIMEOUT.as_secs(),
        reason,
    })
}
