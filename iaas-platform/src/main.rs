//! `iaas-platform`: runs the reference platform. See `iaas-platform --help`.

use std::process::ExitCode;

use iaas_platform::cli::{self, Program};

/// Requests allocate and free many small buffers across threads, which glibc's allocator serves
/// at about a fifth of a request's time under load (docs/benchmarks.md, "The request path").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ENDPOINTS: &str = "
ENDPOINTS:
    /v1/auth/*      register, login, refresh, logout, logout-all, password, sessions
    /v1/instances   provisioning (create, list, start, stop, restart, delete, info, stats, replication)
    GET /v1/events  event log search and /v1/events/stats
    GET /healthz    liveness
    GET /readyz     readiness of every backend (store, Docker engine)
    GET /v1/ws      live instance status (WebSocket; needs an access token)

FIRST START: creates the account `admin` with a random password and prints it, once, to stdout.
";

const PROGRAM: Program = Program::new(
    "iaas-platform",
    "the iaas-rs reference platform (auth, provisioning, monitoring in one process)",
    8080,
)
.with_help(ENDPOINTS);

#[tokio::main]
async fn main() -> ExitCode {
    // `_logs` lives to the end of `main`: what was logged before the exit gets written.
    let (config, _logs) = match PROGRAM.configure() {
        Ok(configured) => configured,
        Err(code) => return code,
    };
    let platform = match iaas_platform::Platform::start(&config).await {
        Ok(platform) => platform,
        Err(err) => {
            tracing::error!(err = %iaas_core::error_chain(&err), "cannot start");
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
    let addr = listener.local_addr().unwrap_or(config.listen);
    match iaas_platform::admin::ensure_admin(&platform.auth, platform.repos.users.as_ref()).await {
        Ok(None) => {}
        // Stdout only: the password must not reach the logs.
        Ok(Some(admin)) => {
            // A wildcard address is not one a client can connect to; loopback always is.
            let reachable = if addr.ip().is_unspecified() {
                std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
            } else {
                addr
            };
            if let Err(err) = cli::write_stdout(&admin.instructions(&format!("http://{reachable}")))
            {
                tracing::warn!(%err, "could not print the first-run admin password to stdout");
            }
        }
        Err(err) => {
            tracing::error!(err = %iaas_core::error_chain(&err), "cannot create the first-run admin account");
            platform.shutdown().await;
            return ExitCode::FAILURE;
        }
    }
    tracing::info!(%addr, "listening");
    let router = iaas_platform::router_with_limits(
        &platform,
        iaas_platform::HttpLimits::from_config(&config),
    );
    let served = iaas_platform::serve(
        listener,
        router,
        &config,
        iaas_platform::shutdown_after_drain(config.drain),
    )
    .await;
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
