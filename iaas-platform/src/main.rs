//! `iaas-platform`: runs the reference platform. See `iaas-platform --help`.

use std::io::Write;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

const HELP: &str = "\
iaas-platform: the iaas-rs reference platform (auth, provisioning, monitoring in one process)

USAGE:
    iaas-platform [--help] [--version]

CONFIGURATION (environment):
    IAAS_LISTEN                address to serve HTTP on           [default: 127.0.0.1:8080]
    IAAS_SHUTDOWN_GRACE_SECS   seconds for in-flight requests     [default: 10]
    IAAS_DATA_DIR              embedded database, event index, keys [default: ./iaas-data]
    IAAS_DATABASE_URL          postgres:// URL instead of SQLite  [default: unset]
    IAAS_KAFKA_BROKERS         Kafka brokers instead of the in-process bus [default: unset]
    IAAS_REDIS_URL             Redis for refresh sessions         [default: in-process]
    IAAS_AUTH_KEY_FILE         token signing key file             [default: DATA_DIR/auth.key]
    DOCKER_HOST                Docker engine                      [default: the local socket]
    RUST_LOG                   log filter                         [default: info]

ENDPOINTS:
    /v1/auth/*      register, login, refresh, logout, logout-all, password, sessions
    /v1/instances   provisioning (create, list, start, stop, restart, delete, info, stats, replication)
    GET /v1/events  event log search and /v1/events/stats
    GET /healthz    liveness
    GET /readyz     readiness of every backend (store, Docker engine)
    GET /v1/ws      live instance status (WebSocket; needs an access token)
";

#[tokio::main]
async fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("-h" | "--help") => return print(HELP),
        Some("-V" | "--version") => {
            return print(&format!("iaas-platform {}\n", env!("CARGO_PKG_VERSION")));
        }
        Some(other) => {
            eprintln!("unknown argument {other:?}; see --help");
            return ExitCode::from(2);
        }
        None => {}
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let config = match iaas_platform::Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            tracing::error!(%err, "configuration rejected");
            return ExitCode::from(2);
        }
    };
    let platform = match iaas_platform::Platform::start(&config).await {
        Ok(platform) => platform,
        Err(err) => {
            tracing::error!(err = %error_chain(&err), "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(%err, listen = %config.listen, "cannot listen");
            platform.shutdown().await;
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, "listening"),
        Err(err) => tracing::warn!(%err, "listening on an address the OS will not report"),
    }
    let router = iaas_platform::router(&platform);
    let served =
        iaas_platform::serve(listener, router, &config, iaas_platform::shutdown_signal()).await;
    platform.shutdown().await;
    match served {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(%err, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, `: `-separated, for a log line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn print(text: &str) -> ExitCode {
    match std::io::stdout().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
