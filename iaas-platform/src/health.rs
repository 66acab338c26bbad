//! Liveness and readiness.
//!
//! `/healthz` answers as long as the process serves HTTP. `/readyz` checks every backend the
//! platform depends on and answers 503 naming those that fail.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use bollard::Docker;
use iaas_core::Outbox;
use serde::Serialize;

/// How long one backend check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What readiness checks need.
#[derive(Clone)]
pub(crate) struct Backends {
    pub(crate) outbox: Arc<dyn Outbox>,
    pub(crate) docker: Docker,
}

/// Body of `/healthz`.
#[derive(Debug, Serialize)]
pub(crate) struct Health {
    status: &'static str,
    version: &'static str,
}

/// Body of `/readyz`.
#[derive(Debug, Serialize)]
pub(crate) struct Readiness {
    status: &'static str,
    checks: BTreeMap<&'static str, String>,
}

pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok", version: env!("CARGO_PKG_VERSION") })
}

pub(crate) async fn readyz(State(backends): State<Backends>) -> (StatusCode, Json<Readiness>) {
    let (store, docker) = tokio::join!(
        check(async { backends.outbox.stats().await.map(drop).map_err(|e| e.to_string()) }),
        check(async { backends.docker.ping().await.map(drop).map_err(|e| e.to_string()) }),
    );
    let checks = BTreeMap::from([("store", store), ("docker", docker)]);
    let ready = checks.values().all(|c| c == "ok");
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { status: if ready { "ready" } else { "not ready" }, checks }))
}

async fn check(probe: impl Future<Output = Result<(), String>>) -> String {
    match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(error)) => format!("unavailable: {error}"),
        Err(_) => format!("unavailable: no answer within {CHECK_TIMEOUT:?}"),
    }
}
