use std::net::TcpListener;
use std::time::Duration;

use testcontainers::core::WaitFor;
use tokio::net::TcpStream;

use crate::error::TestkitError;
use crate::service::{ContainerRecipe, Service, env_var};
use crate::wait::eventually;

/// Names running Kafka-protocol brokers as a `bootstrap.servers` list (`127.0.0.1:9092`).
pub const KAFKA_BROKERS_VAR: &str = "IAAS_TEST_KAFKA_BROKERS";
/// Image started when [`KAFKA_BROKERS_VAR`] is unset (default `apache/kafka:3.9.1`, in KRaft
/// mode). Any image honouring the official image's `KAFKA_*` variables works.
pub const KAFKA_IMAGE_VAR: &str = "IAAS_TEST_KAFKA_IMAGE";
const DEFAULT_IMAGE: &str = "apache/kafka:3.9.1";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Kafka-protocol brokers that accept connections: those named by `IAAS_TEST_KAFKA_BROKERS`, or
/// a new single-node container.
pub async fn kafka() -> Result<Service, TestkitError> {
    let service = match env_var(KAFKA_BROKERS_VAR) {
        Some(brokers) => Service::from_env(KAFKA_BROKERS_VAR, brokers),
        None => start_kafka_container().await?,
    };
    wait_until_reachable(&service).await?;
    Ok(service)
}

/// Starts a single-node Kafka in KRaft mode from `IAAS_TEST_KAFKA_IMAGE`.
///
/// Kafka tells clients which address to reconnect to (the advertised listener), so the host port
/// must be known before the container starts: a free loopback port is picked first.
pub async fn start_kafka_container() -> Result<Service, TestkitError> {
    let mut recipe = ContainerRecipe::new(KAFKA_BROKERS_VAR, KAFKA_IMAGE_VAR, DEFAULT_IMAGE, 9092);
    let port = free_loopback_port().map_err(|err| TestkitError::ContainerFailed {
        var: KAFKA_BROKERS_VAR,
        image_var: KAFKA_IMAGE_VAR,
        image: recipe.image.clone(),
        reason: format!("no free loopback port: {err}"),
    })?;
    recipe.host_port = Some(port);
    recipe.env = [
        ("KAFKA_NODE_ID", "1".to_owned()),
        ("KAFKA_PROCESS_ROLES", "broker,controller".to_owned()),
        ("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093".to_owned()),
        ("KAFKA_ADVERTISED_LISTENERS", format!("PLAINTEXT://127.0.0.1:{port}")),
        ("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER".to_owned()),
        (
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT".to_owned(),
        ),
        ("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093".to_owned()),
        ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1".to_owned()),
        ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1".to_owned()),
        ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1".to_owned()),
        ("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0".to_owned()),
        ("KAFKA_NUM_PARTITIONS", "3".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    recipe.ready_line = Some(WaitFor::message_on_stdout("Kafka Server started"));
    let image = recipe.image.clone();
    let (container, _) = recipe.start().await?;
    Ok(Service::from_container(image, format!("127.0.0.1:{port}"), container))
}

fn free_loopback_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_until_reachable(service: &Service) -> Result<(), TestkitError> {
    let first = service.url().split(',').next().unwrap_or_default().trim().to_owned();
    eventually(READY_TIMEOUT, || TcpStream::connect(first.clone())).await.map(drop).map_err(
        |reason| TestkitError::NotReachable {
            service: "kafka",
            var: KAFKA_BROKERS_VAR,
            url: service.url().to_owned(),
            waited_secs: READY_TIMEOUT.as_secs(),
            reason,
        },
    )
}
