//! The Auth service on its own: `cargo run -p auth-service`.
//!
//! Accounts in the store (SQLite in `data_dir`, or PostgreSQL), refresh sessions in Redis
//! (`redis_url`) or in memory, access tokens signed with the key in `auth_key_file` (created on
//! the first start; the provisioning and monitoring services check tokens with the same file).
//! Listens on `127.0.0.1:8082`. `--help` lists every setting; configuration is the platform's
//! (`docs/configuration.md`).

use std::process::ExitCode;

use iaas_platform::cli::{self, Program};

const ENDPOINTS: &str = "
ENDPOINTS:
    /v1/auth/*      register, login, refresh, logout, logout-all, password, sessions
    GET /healthz    liveness
    GET /readyz     readiness of the store
";

const PROGRAM: Program =
    Program::new("auth-service", "the auth service of iaas-rs on its own", 8082)
        .with_help(ENDPOINTS);

#[tokio::main]
async fn main() -> ExitCode {
    // `_logs` lives to the end of `main`: what was logged before the exit gets written.
    let (config, _logs) = match PROGRAM.configure() {
        Ok(configured) => configured,
        Err(code) => return code,
    };
    let repos = match iaas_platform::open_store(&config).await {
        Ok(repos) => repos,
        Err(err) => return cli::start_failed(&err),
    };
    let auth = match iaas_platform::auth_service(&config, repos.users.clone()).await {
        Ok(auth) => auth,
        Err(err) => return cli::start_failed(&err),
    };
    cli::listen_and_serve(&config, iaas_platform::auth_router(&config, auth, &repos)).await
}
