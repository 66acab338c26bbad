//! `iaas-platform`: runs the reference platform. See `iaas-platform --help`.

use std::io::Write;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

const HELP: &str = "\
iaas-platform: the iaas-rs reference platform (auth, provisioning, monitoring in one process)

USAGE:
    iaas-platform [--help] [--version]

CONFIGURATION (environment):
    IAAS_LISTEN                address to serve HTTP on       [default: 127.0.0.1:8080]
    IAAS_SHUTDOWN_GRACE_SECS   seconds for in-flight requests [default: 10]
    RUST_LOG                   log filter                     [default: info]

ENDPOINTS:
    GET /healthz    liveness
    GET /readyz     readiness of every backend
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
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(%err, listen = %config.listen, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, "listening"),
        Err(err) => tracing::warn!(%err, "listening on an address the OS will not report"),
    }
    match iaas_platform::serve(listener, &config, iaas_platform::shutdown_signal()).await {
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

fn print(text: &str) -> ExitCode {
    match std::io::stdout().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
