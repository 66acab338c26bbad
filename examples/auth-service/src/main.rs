//! The Auth service on its own: `cargo run -p auth-service`.
//!
//! Accounts in PostgreSQL (`IAAS_DATABASE_URL`) or a SQLite file (`IAAS_DATA_DIR`, default
//! `./auth-data`), refresh sessions in Redis (`IAAS_REDIS_URL`) or in memory, tokens signed with
//! an Ed25519 key from `IAAS_AUTH_SEED_HEX` and refresh successors derived with
//! `IAAS_AUTH_REFRESH_SECRET_HEX` (64 hex digits each; fresh random ones per start when unset,
//! which invalidates every token on restart). Listens on `IAAS_LISTEN`, default
//! `127.0.0.1:8082`. The reference platform (`cargo run -p iaas-platform`) keeps its keys in a
//! file instead.

use std::error::Error;
use std::sync::Arc;

use iaas_auth::{
    AuthConfig, AuthService, KeySet, MemorySessionStore, RedisSessionConfig, RedisSessionStore,
    SessionStore, SigningKey,
};
use iaas_core::{SystemClock, UserRepository};
use iaas_store::{PostgresConfig, PostgresStore, SqliteConfig, SqliteStore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new("info")).init();
    let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());

    let users: Arc<dyn UserRepository> = match env("IAAS_DATABASE_URL") {
        Some(url) => Arc::new(PostgresStore::connect(&PostgresConfig::new(url)).await?),
        None => {
            let dir = env("IAAS_DATA_DIR").unwrap_or_else(|| "auth-data".to_owned());
            std::fs::create_dir_all(&dir)?;
            Arc::new(SqliteStore::open(&SqliteConfig::new(format!("{dir}/auth.db"))).await?)
        }
    };
    let sessions: Arc<dyn SessionStore> = match env("IAAS_REDIS_URL") {
        Some(url) => Arc::new(RedisSessionStore::connect(RedisSessionConfig::new(url)).await?),
        None => Arc::new(MemorySessionStore::new()),
    };
    let seed = secret_from_env("IAAS_AUTH_SEED_HEX")?;
    let refresh_secret = secret_from_env("IAAS_AUTH_REFRESH_SECRET_HEX")?;
    let key = SigningKey::ed25519_from_seed("auth-1", &seed)?;
    let auth = AuthService::new(
        users,
        sessions,
        KeySet::new(key),
        &refresh_secret,
        Arc::new(SystemClock),
        AuthConfig::default(),
    )?;

    let listen = env("IAAS_LISTEN").unwrap_or_else(|| "127.0.0.1:8082".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(%listen, "auth service listening");
    let app =
        iaas_auth::http::router(auth).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::error!(%error, "cannot listen for Ctrl-C");
            }
        })
        .await?;
    Ok(())
}

/// 32 bytes from the hex in `var`, or random ones (with a warning) when it is unset.
fn secret_from_env(var: &str) -> Result<[u8; 32], String> {
    match std::env::var(var).ok().filter(|v| !v.is_empty()) {
        Some(hex) => from_hex(&hex).map_err(|reason| format!("{var}: {reason}")),
        None => {
            tracing::warn!(
                "{var} is not set: a random one is used, and everything it protects ends with this process"
            );
            let mut bytes = [0u8; 32];
            getrandom::getrandom(&mut bytes)
                .map_err(|err| format!("no randomness for {var}: {err}"))?;
            Ok(bytes)
        }
    }
}

fn from_hex(hex: &str) -> Result<[u8; 32], String> {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect::<Option<_>>()
        .ok_or("expected hex digits")?;
    bytes.try_into().map_err(|_| "expected 64 hex digits (32 bytes)".to_owned())
}
