//! The provisioning API over HTTP, against the real engine: the whole life of an instance, and
//! every kind of bad request answered with the right status and a JSON error.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use http_body_util::BodyExt as _;
use iaas_core::memory::MemoryInstanceRepository;
use iaas_core::{Principal, SystemClock, UserId};
use iaas_docker::{
    DockerRuntime, DockerRuntimeConfig, DockerWatcher, ProvisioningApi, SCOPE_READ, SCOPE_WRITE,
    WatcherConfig, provisioning_router,
};
use iaas_testkit::wait::eventually;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// Stands in for the auth layer: the user and scopes come from test headers.
async fn test_auth(mut request: axum::extract::Request, next: Next) -> Response {
    let user = request
        .headers()
        .get("x-test-user")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let scopes: Vec<String> = request
        .headers()
        .get("x-test-scopes")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_else(|| vec![SCOPE_READ.to_owned(), SCOPE_WRITE.to_owned()]);
    if let Some(user_id) = user {
        request.extensions_mut().insert(Principal { user_id, scopes });
    }
    next.run(request).await
}

struct Harness {
    app: Router,
    cancel: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn harness() -> Harness {
    let docker = iaas_testkit::docker().await.unwrap();
    let mut config = DockerRuntimeConfig::default();
    config.stop_timeout = Duration::from_secs(5);
    let runtime = Arc::new(DockerRuntime::new(docker.clone(), config));
    let repo = Arc::new(MemoryInstanceRepository::new());
    let watcher = Arc::new(DockerWatcher::new(
        docker,
        repo.clone(),
        Arc::new(SystemClock),
        WatcherConfig::default(),
    ));
    let cancel = CancellationToken::new();
    tokio::spawn({
        let cancel = cancel.clone();
        async move { watcher.run(cancel).await }
    });
    let api = ProvisioningApi {
        repo,
        runtime: runtime.clone(),
        clusters: runtime,
        clock: Arc::new(SystemClock),
        on_commit: Arc::new(|| {}),
    };
    Harness { app: provisioning_router(api).layer(middleware::from_fn(test_auth)), cancel }
}

fn request(method: Method, uri: &str, user: Option<UserId>, body: Option<&Value>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(user) = user {
        builder = builder.header("x-test-user", user.to_string());
    }
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

async fn call(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() })
}

fn sleeper(name: &str) -> Value {
    json!({
        "name": name,
        "spec": {"kind": "docker", "image": iaas_testkit::busybox_image(),
                 "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 300 & wait"]},
        "resources": {"millicpus": 250, "memory_mib": 64}
    })
}

async fn status_becomes(app: &Router, user: UserId, id: &str, want: &str) {
    eventually(Duration::from_secs(15), || async {
        let (_, body) =
            call(app, request(Method::GET, &format!("/v1/instances/{id}"), Some(user), None)).await;
        if body["status"] == want { Ok(()) } else { Err(body["status"].clone()) }
    })
    .await
    .unwrap_or_else(|last| panic!("status never became {want}: {last}"));
}

#[tokio::test]
async fn an_instance_lives_through_the_api() {
    let h = harness().await;
    let (ada, bob) = (UserId::new_random(), UserId::new_random());

    let (status, body) =
        call(&h.app, request(Method::POST, "/v1/instances", Some(ada), Some(&sleeper("worker"))))
            .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["instance"]["id"].as_str().unwrap().to_owned();
    assert_eq!(body["instance"]["status"], "provisioning");
    status_becomes(&h.app, ada, &id, "running").await;

    // Bob sees nothing of Ada's, not even that it exists.
    let (status, body) =
        call(&h.app, request(Method::GET, &format!("/v1/instances/{id}"), Some(bob), None)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (_, body) = call(&h.app, request(Method::GET, "/v1/instances", Some(bob), None)).await;
    assert_eq!(body["instances"], json!([]));
    let (status, _) =
        call(&h.app, request(Method::POST, &format!("/v1/instances/{id}/stop"), Some(bob), None))
            .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) =
        call(&h.app, request(Method::GET, &format!("/v1/instances/{id}/info"), Some(ada), None))
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["nodes"].as_array().unwrap().len(), 1);

    let (status, _) =
        call(&h.app, request(Method::POST, &format!("/v1/instances/{id}/stop"), Some(ada), None))
            .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    status_becomes(&h.app, ada, &id, "stopped").await;
    let (status, _) =
        call(&h.app, request(Method::POST, &format!("/v1/instances/{id}/start"), Some(ada), None))
            .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    status_becomes(&h.app, ada, &id, "running").await;

    let (status, body) = call(
        &h.app,
        request(Method::DELETE, &format!("/v1/instances/{id}?purge=true"), Some(ada), None),
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("deleted")), "{body}");
    let (status, _) =
        call(&h.app, request(Method::POST, &format!("/v1/instances/{id}/start"), Some(ada), None))
            .await;
    assert_eq!(status, StatusCode::CONFLICT, "a deleted instance cannot start");
}

#[tokio::test]
async fn an_unknown_image_ends_failed_with_the_reason() {
    let h = harness().await;
    let ada = UserId::new_random();
    let body =
        json!({"name": "ghost", "spec": {"kind": "docker", "image": "iaas-no-such/image:0"}});
    let (status, body) =
        call(&h.app, request(Method::POST, "/v1/instances", Some(ada), Some(&body))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["instance"]["id"].as_str().unwrap().to_owned();
    status_becomes(&h.app, ada, &id, "failed").await;
}

#[tokio::test]
async fn bad_requests_get_the_exact_status_and_code() {
    let h = harness().await;
    let ada = UserId::new_random();
    let (status, body) =
        call(&h.app, request(Method::POST, "/v1/instances", Some(ada), Some(&sleeper("taken"))))
            .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let taken = body["instance"]["id"].as_str().unwrap().to_owned();

    let post = |body: &str, content_type: &str| {
        Request::builder()
            .method(Method::POST)
            .uri("/v1/instances")
            .header("x-test-user", ada.to_string())
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let huge =
        json!({"name": "big", "spec": {"kind": "nginx", "site_config": "x".repeat(200_000)}})
            .to_string();
    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "no principal",
            request(Method::GET, "/v1/instances", None, None),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            "read-only token",
            Request::builder()
                .method(Method::POST)
                .uri("/v1/instances")
                .header("x-test-user", ada.to_string())
                .header("x-test-scopes", SCOPE_READ)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(sleeper("x").to_string()))
                .unwrap(),
            StatusCode::FORBIDDEN,
            "insufficient_scope",
        ),
        (
            "wrong content type",
            post(&sleeper("x").to_string(), "text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "broken JSON",
            post("{\"name\":", "application/json"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "unknown field",
            post(r#"{"name":"a","spec":{"kind":"nginx"},"privileged":true}"#, "application/json"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "huge body",
            post(&huge, "application/json"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "path traversal in the name",
            post(r#"{"name":"../etc","spec":{"kind":"nginx"}}"#, "application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "memory below the minimum",
            post(
                r#"{"name":"tiny","spec":{"kind":"nginx"},"resources":{"millicpus":100,"memory_mib":4}}"#,
                "application/json",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "k8s",
            post(r#"{"name":"cluster","spec":{"kind":"k8s"}}"#, "application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported",
        ),
        (
            "duplicate name",
            post(&sleeper("taken").to_string(), "application/json"),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            "not an id",
            request(Method::GET, "/v1/instances/not-a-uuid", Some(ada), None),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "unknown action",
            request(
                Method::POST,
                &format!("/v1/instances/{}/explode", iaas_core::InstanceId::new_random()),
                Some(ada),
                None,
            ),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (case, request, status, code) in cases {
        let (got, body) = call(&h.app, request).await;
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{case}: {body}");
    }
    let (status, _) = call(
        &h.app,
        request(Method::DELETE, &format!("/v1/instances/{taken}?purge=true"), Some(ada), None),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}
