//! Liveness and readiness.
//!
//! `/healthz` answers as long as the process serves HTTP. `/readyz` reports each backend the
//! platform depends on; it grows a check per backend as the service crates are mounted.

use axum::Json;
use serde::Serialize;

/// Body of `/healthz` and `/readyz`.
#[derive(Debug, Serialize)]
pub(crate) struct Health {
    status: &'static str,
    version: &'static str,
}

pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok", version: env!("CARGO_PKG_VERSION") })
}

pub(crate) async fn readyz() -> Json<Health> {
    Json(Health { status: "ready", version: env!("CARGO_PKG_VERSION") })
}
