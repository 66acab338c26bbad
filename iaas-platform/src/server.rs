//! The HTTP server: routes, the operational endpoints (`/healthz`, `/readyz`, `/metrics`), the
//! layers every request passes (see `http_layers`), JSON errors for unknown routes, graceful
//! shutdown.

use std::future::Future;
use std::io;

use axum::Router;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::http_layers::{HttpLimits, instrumented, not_found};
use crate::platform::Platform;

/// Every route of the platform, behind the default [`HttpLimits`].
pub fn router(platform: &Platform) -> Router {
    router_with_limits(platform, HttpLimits::default())
}

/// Every route of the platform, each request bounded by `limits` (timeout, body size), with
/// request ids, HTTP metrics and JSON error bodies (see [`HttpLimits`]).
pub fn router_with_limits(platform: &Platform, limits: HttpLimits) -> Router {
    // Routes of other crates get the caller from the access token, checked here, locally.
    let live = iaas_provisioning::LiveOptions::default()
        .with_sessions(std::sync::Arc::new(platform.auth.liveness()))
        .with_shutdown(crate::health::draining())
        .with_limits(limits.live);
    let authenticated = iaas_provisioning::live_router_with(
        platform.live.clone(),
        platform.repos.instances.clone(),
        live,
    )
    .merge(iaas_provisioning::provisioning_router(platform.provisioning_api()))
    .merge(iaas_provisioning::outbox_admin_router(platform.repos.outbox.clone()))
    .merge(iaas_events::monitoring::monitoring_router(platform.events_index.clone()))
    .layer(axum::middleware::from_fn_with_state(
        platform.auth.issuer().clone(),
        iaas_auth::http::principal_layer,
    ));
    let readiness =
        platform.readiness().with_trusted_proxies(&platform.auth.config().trusted_proxies);
    let routes = readiness
        .routes(platform.auth.issuer().clone())
        .merge(iaas_auth::http::router(platform.auth.clone()))
        .merge(authenticated)
        .merge(iaas_auth::openapi::openapi_router())
        .merge(iaas_provisioning::openapi::openapi_router())
        .merge(iaas_events::monitoring::openapi::openapi_router())
        .merge(crate::dashboard::router())
        .fallback(not_found);
    instrumented(routes, limits)
}

/// Serves `router` on `listener` until `shutdown` completes, then lets in-flight requests
/// finish for at most `config.shutdown_grace`.
///
/// Each request carries the peer address (`ConnectInfo<SocketAddr>`), so login throttling
/// counts failures per client address rather than for all callers together.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
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

/// Completes `drain` after SIGINT or SIGTERM; meanwhile `/readyz` answers 503
/// `{"status":"draining"}` and live-status sockets close with 1012 (reconnect), while every
/// other request is still served. Pass it to [`serve`] as the shutdown of a process behind a
/// load balancer (the `drain_secs` setting); with a zero `drain` it is [`shutdown_signal`].
pub async fn shutdown_after_drain(drain: std::time::Duration) {
    shutdown_signal().await;
    if !drain.is_zero() {
        crate::health::begin_draining();
        tracing::info!(
            drain_secs = drain.as_secs(),
            "draining: /readyz answers 503 while requests are still served"
        );
        tokio::time::sleep(drain).await;
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
