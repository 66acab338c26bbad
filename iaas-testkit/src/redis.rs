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

/// A Redis of one test alone that the test can kill and start again on the same address and
/// data, for fault tests: a container from `IAAS_TEST_REDIS_IMAGE` (default `redis:7`) on the
/// Docker engine, so no `redis-server` binary is needed on the host. Killing it is `docker
/// kill` (SIGKILL: no shutdown save); starting it again is `docker start` of the same
/// container, so a durable one keeps what its append-only file held. Removed on drop.
#[derive(Debug)]
pub struct RestartableRedis {
    docker: bollard::Docker,
    container: String,
    port: u16,
}

impl RestartableRedis {
    /// Creates and starts it, waiting until it answers `PING`. `durable`: every write is in
    /// the append-only file before it is acknowledged (`appendfsync always`), so it survives a
    /// kill; otherwise nothing is persisted.
    pub async fn start(durable: bool) -> Result<Self, TestkitError> {
        use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
        use bollard::query_parameters::CreateContainerOptionsBuilder;

        let image = env_var(REDIS_IMAGE_VAR).unwrap_or_else(|| DEFAULT_IMAGE.to_owned());
        let failed = |reason: String| TestkitError::PrivateContainerFailed {
            service: "redis",
            image_var: REDIS_IMAGE_VAR,
            image: image.clone(),
            reason,
        };
        let docker = crate::docker().await?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|err| failed(format!("no free port: {err}")))?
            .port();
        let persistence: &[&str] = if durable {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let mut cmd = vec!["redis-server", "--port", "6379", "--save", ""];
        cmd.extend_from_slice(persistence);
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: Some(cmd.into_iter().map(str::to_owned).collect()),
            exposed_ports: Some(vec!["6379/tcp".to_owned()]),
            labels: Some(std::collections::HashMap::from([(
                "iaas.test".to_owned(),
                "restartable-redis".to_owned(),
            )])),
            host_config: Some(HostConfig {
                port_bindings: Some(std::collections::HashMap::from([(
                    "6379/tcp".to_owned(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".to_owned()),
                        host_port: Some(port.to_string()),
                    }]),
                )])),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let name = crate::isolation::unique_name("iaas-test-redis");
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        docker
            .create_container(Some(options), body)
            .await
            .map_err(|err| failed(format!("creating the container: {err}")))?;
        let redis = Self { docker, container: name, port };
        redis.restart().await?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:PORT`, the same across restarts.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again (same address, same files) and waits until it answers `PING`.
    pub async fn restart(&self) -> Result<(), TestkitError> {
        self.docker.start_container(&self.container, None).await.map_err(|err| {
            TestkitError::PrivateContainerFailed {
                service: "redis",
                image_var: REDIS_IMAGE_VAR,
                image: self.container.clone(),
                reason: format!("starting the container: {err}"),
            }
        })?;
        wait_until_ready(&Service::from_env(REDIS_URL_VAR, self.url())).await
    }

    /// SIGKILL: no shutdown save, only what the append-only file already holds survives.
    pub async fn kill(&self) -> Result<(), TestkitError> {
        use bollard::query_parameters::KillContainerOptionsBuilder;
        let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        self.docker.kill_container(&self.container, Some(options)).await.map_err(|err| {
            TestkitError::NotReachable {
                service: "docker",
                var: "DOCKER_HOST",
                url: self.container.clone(),
                waited_secs: 0,
                reason: format!("killing the container: {err}"),
            }
        })
    }
}

impl Drop for RestartableRedis {
    fn drop(&mut self) {
        // The async client cannot be awaited here: remove the container on a thread of its own
        // with a runtime of its own, and wait for it so nothing is left behind.
        let docker = self.docker.clone();
        let container = self.container.clone();
        let removed = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let options = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .build();
                docker
                    .remove_container(&container, Some(options))
                    .await
                    .map_err(std::io::Error::other)
            })
        });
        if let Ok(Err(error)) = removed.join() {
            eprintln!("removing the test Redis container {}: {error}", self.container);
        }
    }
}
