//! The Monitoring service on its own: `cargo run -p monitoring-service`.
//!
//! Reads every event from Kafka (`kafka_brokers`, required; consumer group
//! `monitoring-consumer-group`, so several copies share the work), indexes each as a log entry
//! (Elasticsearch when `elasticsearch_url` is set, else the embedded index in `data_dir`) and
//! serves the search API. Listens on `127.0.0.1:8084`. Access tokens are checked with the key in
//! `auth_key_file`: share it with the auth service. `--help` lists every setting.

use std::process::ExitCode;

use iaas_platform::MonitoringService;
use iaas_platform::cli::{self, Program};

const ENDPOINTS: &str = "
ENDPOINTS:
    GET /v1/events        event log search (instance, type, action, from, to, q, cursor)
    GET /v1/events/stats  counts per time bucket, action and type
    GET /healthz          liveness
    GET /readyz           readiness of the log index and the broker

kafka_brokers is required here.
";

const PROGRAM: Program =
    Program::new("monitoring-service", "the monitoring service of iaas-rs on its own", 8084)
        .with_help(ENDPOINTS);

#[tokio::main]
async fn main() -> ExitCode {
    // `_logs` lives to the end of `main`: what was logged before the exit gets written.
    let (config, _logs) = match PROGRAM.configure() {
        Ok(configured) => configured,
        Err(code) => return code,
    };
    let service = match MonitoringService::start(&config).await {
        Ok(service) => service,
        Err(err) => return cli::start_failed(&err),
    };
    let exit = cli::listen_and_serve(&config, service.router()).await;
    service.shutdown().await;
    exit
}
