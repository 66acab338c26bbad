//! The Provisioning service on its own: `cargo run -p provisioning-service`.
//!
//! Instances in the store (SQLite in `data_dir`, or PostgreSQL), containers on the Docker
//! engine, their status from the Docker event watcher, cluster reads through the cache (Redis or
//! in-process), events through the outbox to Kafka when `kafka_brokers` is set (else to this
//! process's cache and live status only). Listens on `127.0.0.1:8083`. Access tokens are checked
//! with the key in `auth_key_file`: share it with the auth service. `--help` lists every
//! setting; configuration is the platform's (`docs/configuration.md`).

use std::process::ExitCode;

use iaas_platform::ProvisioningService;
use iaas_platform::cli::{self, Program};

const ENDPOINTS: &str = "
ENDPOINTS:
    /v1/instances   create, list, start, stop, restart, delete, info, stats, replication
    GET /v1/ws      live instance status (WebSocket)
    GET /healthz    liveness
    GET /readyz     readiness of the store and the Docker engine
";

const PROGRAM: Program =
    Program::new("provisioning-service", "the provisioning service of iaas-rs on its own", 8083)
        .with_help(ENDPOINTS);

#[tokio::main]
async fn main() -> ExitCode {
    // `_logs` lives to the end of `main`: what was logged before the exit gets written.
    let (config, _logs) = match PROGRAM.configure() {
        Ok(configured) => configured,
        Err(code) => return code,
    };
    let service = match ProvisioningService::start(&config).await {
        Ok(service) => service,
        Err(err) => return cli::start_failed(&err),
    };
    let exit = cli::listen_and_serve(&config, service.router()).await;
    service.shutdown().await;
    exit
}
