//! The auth API inside your own axum app: `iaas_auth::http::router` over an `AuthService`
//! with in-memory accounts and refresh sessions, merged with a route of yours that the
//! `AuthUser` extractor protects (the access token is checked locally, with the service's
//! `TokenIssuer` as the route's state).
//!
//! The example serves the app on 127.0.0.1 (a free port), then acts as a client with reqwest:
//! it registers, logs in, calls the protected route with and without the access token, prints
//! the answers and exits.
//!
//! Run it with `cargo run -p iaas-auth --example own_axum_app`. It needs nothing else (no
//! Redis, no database). It uses the default feature `http`.

#![allow(clippy::print_stdout, reason = "an example shows what it did on stdout")]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use iaas_auth::http::AuthUser;
use iaas_auth::{AuthConfig, AuthError, AuthService, KeySet, MemorySessionStore, SigningKey};
use iaas_core::SystemClock;
use iaas_core::memory::MemoryUserRepository;
use serde_json::{Value, json};

/// The scope your route asks for; the auth service grants it to every new account below.
const SCOPE_NOTES_READ: &str = "notes:read";

/// A route of yours. `AuthUser` rejects a request without a valid bearer token (401, with the
/// auth API's JSON error body); the scope check answers 403 when the token lacks the scope.
async fn my_notes(user: AuthUser) -> Result<Json<Value>, AuthError> {
    user.require_scope(SCOPE_NOTES_READ)?;
    let claims = user.0;
    Ok(Json(json!({
        "owner": claims.user.to_string(),
        "notes": ["buy milk"],
        "token_expires_at": claims.expires_at,
    })))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The auth service on in-memory stores. In production: your `UserRepository`, the Redis
    // session store, a signing key and a refresh secret loaded from your secret store.
    let mut config = AuthConfig::default();
    config.default_scopes = vec![SCOPE_NOTES_READ.to_owned()];
    let auth = AuthService::new(
        Arc::new(MemoryUserRepository::new()),
        Arc::new(MemorySessionStore::new()),
        KeySet::new(SigningKey::generate_ed25519("example-key")?),
        b"a secret of at least thirty-two bytes!!",
        Arc::new(SystemClock),
        config,
    )?;

    // Your app: your routes (with the token issuer as their state, so `AuthUser` can verify
    // tokens) merged with the auth API.
    let app = Router::new()
        .route("/v1/notes", get(my_notes))
        .with_state(auth.issuer().clone())
        .merge(iaas_auth::http::router(auth));

    // Served with connect info, so login throttling sees each client's address.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    println!("serving on {base}");

    let outcome = client(&base).await;
    let _ = stop.send(());
    server.await??;
    outcome
}

/// What a client of your app does.
async fn client(base: &str) -> Result<(), Box<dyn std::error::Error>> {
    let http = reqwest::Client::new();
    let credentials = json!({"username": "ada", "password": "correct horse battery"});

    let response = http.post(format!("{base}/v1/auth/register")).json(&credentials).send().await?;
    println!("POST /v1/auth/register -> {}: {}", response.status(), response.text().await?);

    let response = http.post(format!("{base}/v1/auth/login")).json(&credentials).send().await?;
    let status = response.status();
    let tokens: Value = response.json().await?;
    let access_token =
        tokens["access_token"].as_str().ok_or("no access_token in the login answer")?;
    println!(
        "POST /v1/auth/login -> {status}: a {} access token valid {} s, and a refresh token",
        tokens["token_type"].as_str().unwrap_or_default(),
        tokens["expires_in"]
    );

    let response = http.get(format!("{base}/v1/notes")).bearer_auth(access_token).send().await?;
    println!("GET /v1/notes with the token -> {}: {}", response.status(), response.text().await?);

    let response = http.get(format!("{base}/v1/notes")).send().await?;
    println!("GET /v1/notes without a token -> {}: {}", response.status(), response.text().await?);
    Ok(())
}
