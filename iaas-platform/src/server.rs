//! The HTTP server: routes, JSON errors for unknown routes, graceful shutdown.

use std::future::Future;
use std::io;

use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::health::{self, Backends};
use crate::platform::Platform;

/// Every route of the platform.
pub fn router(platform: &Platform) -> Router {
    let backends =
        Backends { outbox: platform.repos.outbox.clone(), docker: platform.docker.clone() };
    // Routes of other crates get the caller from the access token, checked here, locally.
    let authenticated =
        iaas_docker::live_router(platform.live.clone(), platform.repos.instances.clone())
            .merge(iaas_docker::provisioning_router(platform.provisioning_api()))
            .merge(iaas_events::monitoring::monitoring_router(platform.events_index.clone()))
            .layer(axum::middleware::from_fn_with_state(
                platform.auth.issuer().clone(),
                iaas_auth::http::principal_layer,
            ));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(backends)
        .merge(iaas_auth::http::router(platform.auth.clone()))
        .merge(authenticated)
        // (openapi routes go here)
        // (dashboard routes go here)
        .fallback(not_found)
}

async fn not_found(uri: Uri) -> Response {
    let body = json!({ "error": { "code": "not_found", "message": format!("no route for {}", uri.path()) } });
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// Serves `router` on `listener` until `shutdown` completes, then lets in-flight requests
/// finish for at most `config.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutdown requested; finishing in-flight requests");
        // The receiver is gone only if `serve` already returned; nothing to tell then.
        let _ = stop_tx.send(());
    });
    let grace = config.shutdown_grace;
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = &mut server => result,
        () = async {
            // Only a sent signal starts the grace period; a dropped sender means the server ended.
            if stop_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(grace_secs = grace.as_secs(), "grace period over; closing remaining connections");
            Ok(())
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM. If a handler cannot be installed the error is logged
/// and the other signal still works.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}
