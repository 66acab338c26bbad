//! The provisioning API's OpenAPI 3.1 document, written by hand from `api.rs` and `http.rs` and
//! checked in at `iaas-provisioning/openapi.json`.
//!
//! The document is compiled into the crate with `include_str!`, so the served text is always
//! the checked-in file; [`openapi_router`] serves it at `GET /v1/openapi/provisioning.json`
//! without authentication. The tests below keep it honest against the router: every route
//! the crate serves has a path in the document, and every `$ref` resolves.
#![cfg(feature = "http")]

use axum::Router;

/// The OpenAPI 3.1 document of the provisioning API (JSON text), as checked in.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// Where [`openapi_router`] serves [`DOCUMENT`].
pub const PATH: &str = "/v1/openapi/provisioning.json";

/// A router answering `GET` [`PATH`] with [`DOCUMENT`] as `application/json`. It needs no
/// state and no caller, so it merges into any router.
pub fn openapi_router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    iaas_core::http::openapi_router(PATH, DOCUMENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_consistent_and_documents_every_route_of_the_crate() {
        let routes = [
            ("/v1/instances", "post"),
            ("/v1/instances", "get"),
            ("/v1/instances/{id}", "get"),
            ("/v1/instances/{id}", "delete"),
            ("/v1/instances/{id}", "patch"),
            ("/v1/instances/{id}/start", "post"),
            ("/v1/instances/{id}/stop", "post"),
            ("/v1/instances/{id}/restart", "post"),
            ("/v1/instances/{id}/info", "get"),
            ("/v1/instances/{id}/stats", "get"),
            ("/v1/instances/{id}/replication", "get"),
            ("/v1/instances/{id}/switchover", "post"),
            ("/v1/instances/{id}/password", "post"),
            ("/v1/instances/{id}/backups", "post"),
            ("/v1/instances/{id}/backups", "get"),
            ("/v1/ws", "get"),
            (PATH, "get"),
        ];
        if let Err(problems) = iaas_testkit::openapi::check_document(DOCUMENT, &routes) {
            panic!("{problems}");
        }
    }
}
