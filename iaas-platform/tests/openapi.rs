//! The OpenAPI documents the platform serves: each is byte for byte its crate's checked-in file
//! and parses as OpenAPI 3.1 JSON; every operation a document names is routed (no fallback 404,
//! no 405); and every route the platform answers under `/v1` (walked from the list kept below)
//! is in some document, while undocumented paths reach the JSON 404 fallback.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use common::Served;
use iaas_platform::HttpLimits;
use iaas_testkit::http::Response;
use serde_json::Value;

/// Each service's document: where the platform serves it and the checked-in file.
const DOCUMENTS: [(&str, &str); 3] = [
    ("/v1/openapi/auth.json", include_str!("../../iaas-auth/openapi.json")),
    ("/v1/openapi/provisioning.json", include_str!("../../iaas-provisioning/openapi.json")),
    ("/v1/openapi/monitoring.json", include_str!("../../iaas-events/openapi.json")),
];

/// Every route the platform's router mounts under `/v1` (and the JWKS beside it), kept by hand
/// beside the router: a route added to a crate without its document fails here once it is
/// listed, and `candidates_the_router_answers_are_documented` catches the ones not listed.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/auth/register"),
    ("POST", "/v1/auth/login"),
    ("POST", "/v1/auth/refresh"),
    ("POST", "/v1/auth/logout"),
    ("POST", "/v1/auth/logout-all"),
    ("PUT", "/v1/auth/password"),
    ("GET", "/v1/auth/sessions"),
    ("GET", "/.well-known/jwks.json"),
    ("POST", "/v1/instances"),
    ("GET", "/v1/instances"),
    ("GET", "/v1/instances/{id}"),
    ("DELETE", "/v1/instances/{id}"),
    ("POST", "/v1/instances/{id}/start"),
    ("POST", "/v1/instances/{id}/stop"),
    ("POST", "/v1/instances/{id}/restart"),
    ("GET", "/v1/instances/{id}/info"),
    ("GET", "/v1/instances/{id}/stats"),
    ("GET", "/v1/instances/{id}/replication"),
    ("GET", "/v1/ws"),
    ("GET", "/v1/quota"),
    ("GET", "/v1/admin/quotas/{username}"),
    ("PUT", "/v1/admin/quotas/{username}"),
    ("DELETE", "/v1/admin/quotas/{username}"),
    ("GET", "/v1/events"),
    ("GET", "/v1/events/stats"),
    ("GET", "/v1/openapi/auth.json"),
    ("GET", "/v1/openapi/provisioning.json"),
    ("GET", "/v1/openapi/monitoring.json"),
];

/// Requests that plausibly name a route (the architecture's list, common guesses, near misses):
/// any the platform answers must be documented; the others must reach the JSON 404 fallback.
const CANDIDATES: &[(&str, &str)] = &[
    ("GET", "/v1"),
    ("GET", "/v1/auth"),
    ("GET", "/v1/auth/me"),
    ("POST", "/v1/auth/token"),
    ("GET", "/v1/auth/users"),
    ("GET", "/v1/users"),
    ("GET", "/v1/instances/{id}/logs/all"),
    ("GET", "/v1/instances/{id}/info/extra"),
    ("GET", "/v1/events/{id}"),
    ("GET", "/v1/events/stats/daily"),
    ("GET", "/v1/openapi"),
    ("GET", "/v1/openapi/other.json"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/ws/extra"),
    ("GET", "/v1/metrics"),
    ("GET", "/v1/clusters"),
];

/// A platform on embedded defaults, served in this process on a free loopback port.
async fn start() -> Served {
    Served::start_embedded("iaas-openapi", HttpLimits::default()).await
}

/// One HTTP/1.1 exchange (an empty JSON object as the body of a POST or PUT).
async fn send(addr: &str, method: &str, path: &str) -> Response {
    let body = matches!(method, "POST" | "PUT").then(|| serde_json::json!({}));
    iaas_testkit::http::request(addr, method, path, None, body.as_ref()).await.unwrap()
}

/// Whether the answer came from the platform's fallback (no route matched the path).
fn is_fallback(status: u16, body: &str) -> bool {
    status == 404
        && serde_json::from_str::<Value>(body).is_ok_and(|json| {
            json["error"]["code"] == "not_found"
                && json["error"]["message"].as_str().is_some_and(|m| m.starts_with("no route for"))
        })
}

/// `template` with its `{id}` filled in by an id that names nothing.
fn concrete(template: &str) -> String {
    template.replace("{id}", "0190f3a8-7a4e-7c4f-9a51-3f6c2b1d9e01")
}

fn documents() -> Vec<Value> {
    DOCUMENTS.iter().map(|(_, text)| serde_json::from_str(text).unwrap()).collect()
}

fn documented(docs: &[Value], method: &str, template: &str) -> bool {
    docs.iter().any(|doc| doc["paths"][template][method.to_ascii_lowercase()].is_object())
}

#[tokio::test]
async fn each_served_document_is_its_checked_in_file() {
    let running = start().await;
    let served_by_crates = [
        iaas_auth::openapi::DOCUMENT,
        iaas_provisioning::openapi::DOCUMENT,
        iaas_events::monitoring::openapi::DOCUMENT,
    ];
    for ((path, checked_in), compiled) in DOCUMENTS.iter().zip(served_by_crates) {
        let Response { status, headers, body } = send(&running.addr, "GET", path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        let content_type = headers.iter().find(|(name, _)| name == "content-type");
        assert_eq!(content_type.map(|h| h.1.as_str()), Some("application/json"), "GET {path}");
        assert_eq!(body, *checked_in, "GET {path} differs from the checked-in file");
        assert_eq!(compiled, *checked_in, "the crate's DOCUMENT for {path} is stale");
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["openapi"], "3.1.0", "{path}");
        assert!(json["paths"].as_object().is_some_and(|p| !p.is_empty()), "{path} has no paths");
        assert!(
            json["paths"][path]["get"].is_object(),
            "{path} does not document the route that serves it"
        );
    }
    running.stop().await;
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let running = start().await;
    let mut unrouted = Vec::new();
    for doc in documents() {
        for (template, item) in doc["paths"].as_object().unwrap() {
            for method in ["get", "post", "put", "delete", "patch"] {
                if !item[method].is_object() {
                    continue;
                }
                let method = method.to_ascii_uppercase();
                let path = concrete(template);
                let Response { status, body, .. } = send(&running.addr, &method, &path).await;
                if is_fallback(status, &body) || status == 405 {
                    unrouted.push(format!("{method} {path} -> {status} {body}"));
                }
            }
        }
    }
    assert!(unrouted.is_empty(), "documented but not routed:\n{}", unrouted.join("\n"));
    running.stop().await;
}

#[tokio::test]
async fn every_route_is_documented_and_the_rest_fall_through() {
    let docs = documents();
    let missing: Vec<_> =
        ROUTES.iter().filter(|(method, path)| !documented(&docs, method, path)).collect();
    assert!(missing.is_empty(), "routes missing from every document: {missing:?}");

    let running = start().await;
    // The list is true: each listed route is answered by a handler, not the fallback.
    for (method, template) in ROUTES {
        let path = concrete(template);
        let Response { status, body, .. } = send(&running.addr, method, &path).await;
        assert!(
            !is_fallback(status, &body) && status != 405,
            "{method} {path} is listed but not routed: {status} {body}"
        );
    }
    // Whatever else the router answers under /v1 must be documented too.
    for (method, template) in CANDIDATES {
        let path = concrete(template);
        let Response { status, body, .. } = send(&running.addr, method, &path).await;
        let routed = !is_fallback(status, &body);
        assert!(
            !routed || documented(&docs, method, template),
            "{method} {path} is answered ({status} {body}) but documented nowhere"
        );
    }
    running.stop().await;
}
