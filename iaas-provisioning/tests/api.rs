//! The provisioning API over HTTP, against the real engine: the whole life of an instance, and
//! every kind of bad request answered with the right status and a JSON error.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use iaas_core::{JobQueue as _, Outbox as _};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use http_body_util::BodyExt as _;
use iaas_core::memory::{MemoryInstanceRepository, MemoryUserRepository};
use iaas_core::{
    InstanceRepository as _, Principal, Quota, SystemClock, User, UserId, UserRepository as _,
};
use iaas_docker::{DockerRuntime, DockerWatch};
use iaas_provisioning::{
    JobConfig, Jobs, ProvisioningApi, SCOPE_READ, SCOPE_WRITE, SecretSealer, Watcher,
    WatcherConfig, provisioning_router, run_jobs,
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
        request.extensions_mut().insert(Principal::new(user_id, scopes));
    }
    next.run(request).await
}

struct Harness {
    app: Router,
    /// The API's background work (provisioning, actions, removals).
    background: tokio_util::task::TaskTracker,
    repo: Arc<MemoryInstanceRepository>,
    users: Arc<MemoryUserRepository>,
    docker: bollard::Docker,
    runtime: Arc<DockerRuntime>,
    cancel: CancellationToken,
}

impl Harness {
    /// Waits for the API's background work to end, as the platform does when it stops: a
    /// provisioning that a delete overtook removes what it created only when it ends, and a
    /// test that returned first would leave that container behind.
    async fn settle(&self) {
        // Every job written so far claimed and carried out first (the worker stops claiming
        // once the tracker is closed).
        tokio::time::timeout(Duration::from_secs(120), async {
            while self.repo.job_stats().await.unwrap().pending > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("every job is carried out within 120 s");
        self.background.close();
        self.background.wait().await;
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn harness() -> Harness {
    harness_with(Quota::default()).await
}

async fn harness_with(default_quota: Quota) -> Harness {
    // The test images (PostgreSQL too) and a short stop timeout.
    let runtime = Arc::new(common::runtime().await);
    let docker = runtime.engine().client().unwrap();
    let docker_for_tests = docker.clone();
    let repo = Arc::new(MemoryInstanceRepository::new());
    let repo_for_tests = repo.clone();
    let users = Arc::new(MemoryUserRepository::new());
    let watcher = Arc::new(Watcher::new(
        Arc::new(DockerWatch::new(docker)),
        repo.clone(),
        Arc::new(SystemClock),
        WatcherConfig::default(),
    ));
    let cancel = CancellationToken::new();
    let background = tokio_util::task::TaskTracker::new();
    tokio::spawn({
        let cancel = cancel.clone();
        async move { watcher.run(cancel).await }
    });
    let api = ProvisioningApi {
        repo,
        runtime: runtime.clone(),
        clusters: runtime.clone(),
        clock: Arc::new(SystemClock),
        on_commit: Arc::new(|| {}),
        users: users.clone(),
        quotas: repo_for_tests.clone(),
        default_quota,
        background: background.clone(),
        supervisor: None,
        jobs: Jobs::new(repo_for_tests.clone(), SecretSealer::new(&[1; 32]), JobConfig::default()),
    };
    tokio::spawn(run_jobs(api.clone(), cancel.clone()));
    Harness {
        app: provisioning_router(api).layer(middleware::from_fn(test_auth)),
        background,
        repo: repo_for_tests,
        users,
        docker: docker_for_tests,
        runtime,
        cancel,
    }
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

    // Each action answers at once with the instance in its transitional status.
    let (status, body) =
        call(&h.app, request(Method::POST, &format!("/v1/instances/{id}/stop"), Some(ada), None))
            .await;
    assert_eq!(
        (status, body["instance"]["status"].as_str()),
        (StatusCode::ACCEPTED, Some("stopping")),
        "{body}"
    );
    status_becomes(&h.app, ada, &id, "stopped").await;
    let (status, body) =
        call(&h.app, request(Method::POST, &format!("/v1/instances/{id}/start"), Some(ada), None))
            .await;
    assert_eq!(
        (status, body["instance"]["status"].as_str()),
        (StatusCode::ACCEPTED, Some("starting")),
        "{body}"
    );
    status_becomes(&h.app, ada, &id, "running").await;
    // Starting what runs changes nothing.
    let (status, body) =
        call(&h.app, request(Method::POST, &format!("/v1/instances/{id}/start"), Some(ada), None))
            .await;
    assert_eq!(
        (status, body["instance"]["status"].as_str()),
        (StatusCode::ACCEPTED, Some("running")),
        "{body}"
    );
    let (status, body) = call(
        &h.app,
        request(Method::POST, &format!("/v1/instances/{id}/restart"), Some(ada), None),
    )
    .await;
    assert_eq!(
        (status, body["instance"]["status"].as_str()),
        (StatusCode::ACCEPTED, Some("restarting")),
        "{body}"
    );
    // Another action while one is under way is refused.
    let (status, body) =
        call(&h.app, request(Method::POST, &format!("/v1/instances/{id}/stop"), Some(ada), None))
            .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("invalid_transition")),
        "{body}"
    );
    status_becomes(&h.app, ada, &id, "running").await;

    let (status, body) = call(
        &h.app,
        request(Method::DELETE, &format!("/v1/instances/{id}?purge=true"), Some(ada), None),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::ACCEPTED, Some("deleting")),
        "{body}"
    );
    status_becomes(&h.app, ada, &id, "deleted").await;
    let (status, _) =
        call(&h.app, request(Method::POST, &format!("/v1/instances/{id}/start"), Some(ada), None))
            .await;
    assert_eq!(status, StatusCode::CONFLICT, "a deleted instance cannot start");
    // What the store recorded, in order: each action's transitional status and its outcome,
    // nothing else (no `failed` for what the user asked for).
    let instance_id: iaas_core::InstanceId = id.parse().unwrap();
    let history: Vec<_> =
        h.repo.outbox().into_iter().filter(|event| event.instance_id == instance_id).collect();
    let actions: Vec<String> = history.iter().map(|event| event.action.to_string()).collect();
    let described: Vec<_> =
        history.iter().map(|event| (event.action.to_string(), &event.metadata)).collect();
    assert_eq!(
        actions,
        [
            "created",
            "started",
            "stopping",
            "stopped",
            "starting",
            "started",
            "restarting",
            "restarted",
            "deleting",
            "deleted"
        ],
        "{described:#?}"
    );
    // Deleting again retries the removal and answers the same.
    let (status, body) = call(
        &h.app,
        request(Method::DELETE, &format!("/v1/instances/{id}?purge=true"), Some(ada), None),
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("deleted")), "{body}");
}

#[tokio::test]
async fn a_delete_racing_the_provisioning_leaves_no_container_behind() {
    let h = harness().await;
    let ada = UserId::new_random();
    let mut ids = Vec::new();
    for round in 0..5 {
        let (status, body) = call(
            &h.app,
            request(
                Method::POST,
                "/v1/instances",
                Some(ada),
                Some(&sleeper(&format!("race{round}"))),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let id = body["instance"]["id"].as_str().unwrap().to_owned();
        // A growing head start, so the delete lands before, during and after the creation.
        tokio::time::sleep(Duration::from_millis(40 * round)).await;
        let (status, body) =
            call(&h.app, request(Method::DELETE, &format!("/v1/instances/{id}"), Some(ada), None))
                .await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::ACCEPTED, Some("deleting")),
            "{body}"
        );
        ids.push(id);
    }
    for id in ids {
        let label = format!("iaas.instance={id}");
        eventually(Duration::from_secs(20), || async {
            let left = h
                .docker
                .list_containers(Some(
                    bollard::query_parameters::ListContainersOptionsBuilder::new()
                        .all(true)
                        .filters(&std::collections::HashMap::from([(
                            "label",
                            vec![label.as_str()],
                        )]))
                        .build(),
                ))
                .await
                .unwrap();
            if left.is_empty() { Ok(()) } else { Err(left.len()) }
        })
        .await
        .unwrap_or_else(|left| panic!("instance {id} still has {left} container(s)"));
    }
    // The deletes' jobs end after their containers are gone (they record `deleted` last),
    // and a provisioning the delete overtook may have made the owner's network and no
    // container yet: once all of them ended, nothing is counted and the network is gone too.
    h.settle().await;
    let quota: Value = call(&h.app, request(Method::GET, "/v1/quota", Some(ada), None)).await.1;
    assert_eq!(quota["usage"]["instances"], 0, "{quota}");
    let network = h.runtime.user_network(ada);
    assert!(h.docker.inspect_network(&network, None).await.is_err(), "{network} is left");
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
async fn a_new_instance_on_a_taken_host_port_ends_failed_with_nothing_left() {
    let h = harness().await;
    let ada = UserId::new_random();
    let port = common::fixed_host_port();
    let holder = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let mut body = sleeper("blocked");
    body["spec"]["ports"] = json!([{"container": 80, "host": port}]);
    let (status, body) =
        call(&h.app, request(Method::POST, "/v1/instances", Some(ada), Some(&body))).await;
    // Accepted: the engine, not the API, knows whether the port is free.
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["instance"]["spec"]["ports"], json!([{"container": 80, "host": port}]));
    let id = body["instance"]["id"].as_str().unwrap().to_owned();
    status_becomes(&h.app, ada, &id, "failed").await;
    let docker = iaas_testkit::docker().await.unwrap();
    let label = format!("iaas.instance={id}");
    let filters = std::collections::HashMap::from([("label", vec![label.as_str()])]);
    let left = docker
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    assert!(left.is_empty(), "rolled back: {left:?}");
    drop(holder);
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

    // An instance pinned to a host port, stopped; then something outside the platform takes
    // the port, so starting it again is refused by the engine.
    let free = common::fixed_host_port();
    let mut pinned = sleeper("pinned");
    pinned["spec"]["ports"] = json!([{"container": 80, "host": free}]);
    let (status, body) =
        call(&h.app, request(Method::POST, "/v1/instances", Some(ada), Some(&pinned))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let pinned = body["instance"]["id"].as_str().unwrap().to_owned();
    status_becomes(&h.app, ada, &pinned, "running").await;
    let (status, _) = call(
        &h.app,
        request(Method::POST, &format!("/v1/instances/{pinned}/stop"), Some(ada), None),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    status_becomes(&h.app, ada, &pinned, "stopped").await;
    // The engine's port proxy may let go of the port a moment after the container stopped.
    let holder = eventually(Duration::from_secs(10), || async {
        std::net::TcpListener::bind(("127.0.0.1", free)).map_err(|err| err.to_string())
    })
    .await
    .unwrap_or_else(|err| panic!("port {free} stayed taken after the stop: {err}"));

    let post = |body: &str, content_type: &str| {
        Request::builder()
            .method(Method::POST)
            .uri("/v1/instances")
            .header("x-test-user", ada.to_string())
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let with_ports = |ports: Value| {
        let mut body = sleeper("ported");
        body["spec"]["ports"] = ports;
        post(&body.to_string(), "application/json")
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
            "host port 0",
            with_ports(json!([{"container": 80, "host": 0}])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "privileged host port",
            with_ports(json!([{"container": 80, "host": 80}])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "host port listed twice",
            with_ports(json!([{"container": 80, "host": 18080}, {"container": 81, "host": 18080}])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "a host port outside the allowed range",
            with_ports(json!([{"container": 80, "host": 40_000}])),
            StatusCode::FORBIDDEN,
            "port_not_allowed",
        ),
        (
            "Redis' port, where the platform's session store listens",
            with_ports(json!([{"container": 80, "host": 6379}])),
            StatusCode::FORBIDDEN,
            "port_not_allowed",
        ),
        (
            "PostgreSQL's port",
            with_ports(json!([{"container": 80, "host": 5432}])),
            StatusCode::FORBIDDEN,
            "port_not_allowed",
        ),
        (
            "Kafka's port",
            with_ports(json!([{"container": 80, "host": 9092}])),
            StatusCode::FORBIDDEN,
            "port_not_allowed",
        ),
        (
            "port entry of the wrong shape",
            with_ports(json!([{"container": 80, "host": "x"}])),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "a host port another instance publishes",
            with_ports(json!([{"container": 8080, "host": free}])),
            StatusCode::CONFLICT,
            "port_taken",
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
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{case}");
        if code == "port_taken" {
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(&free.to_string()), "the port is named: {message}");
        }
    }
    // Nothing was stored for any refused request: the two instances made above are all.
    let names: Vec<String> = h
        .repo
        .list_instances_by_owner(ada)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name.to_string())
        .collect();
    assert_eq!(names, ["taken", "pinned"]);
    // A start while the host port is taken is accepted (starting), the engine refuses it, and
    // the instance goes back to stopped with the refusal, port named, in its event.
    let (status, body) = call(
        &h.app,
        request(Method::POST, &format!("/v1/instances/{pinned}/start"), Some(ada), None),
    )
    .await;
    assert_eq!(
        (status, body["instance"]["status"].as_str()),
        (StatusCode::ACCEPTED, Some("starting")),
        "{body}"
    );
    status_becomes(&h.app, ada, &pinned, "stopped").await;
    let pinned_id: iaas_core::InstanceId = pinned.parse().unwrap();
    let refusal =
        h.repo.outbox().into_iter().rfind(|event| event.instance_id == pinned_id).unwrap();
    assert_eq!(refusal.action.as_str(), "stopped", "{refusal:?}");
    assert_eq!(refusal.metadata.get("refused").map(String::as_str), Some("starting"));
    let error = refusal.metadata.get("error").cloned().unwrap_or_default();
    assert!(error.contains(&free.to_string()), "the port is named: {error}");
    drop(holder);
    let (status, _) = call(
        &h.app,
        request(Method::DELETE, &format!("/v1/instances/{pinned}?purge=true"), Some(ada), None),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    status_becomes(&h.app, ada, &pinned, "deleted").await;
    let (status, _) = call(
        &h.app,
        request(Method::DELETE, &format!("/v1/instances/{taken}?purge=true"), Some(ada), None),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    status_becomes(&h.app, ada, &taken, "deleted").await;
}

/// A 5xx body names no internal detail: no exec output, socket path or engine message.
fn assert_generic(body: &Value) {
    let message = body["error"]["message"].as_str().unwrap_or_default();
    for leak in ["psql", "socket", "/var/run", "PGSQL", "exited with status", "container "] {
        assert!(!message.contains(leak), "a 5xx message leaks {leak:?}: {message}");
    }
}

async fn view(
    app: &Router,
    user: UserId,
    id: &str,
    view: &str,
) -> (StatusCode, Value, Option<String>) {
    let response = app
        .clone()
        .oneshot(request(Method::GET, &format!("/v1/instances/{id}/{view}"), Some(user), None))
        .await
        .unwrap();
    let status = response.status();
    let retry_after =
        response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap(), retry_after)
}

#[tokio::test]
async fn postgres_views_are_transient_while_it_starts_its_password_rotates_and_views_409_once_stopped()
 {
    let h = harness().await;
    let ada = UserId::new_random();
    let body = json!({"name": "views", "spec": {"kind": "postgres", "database": "app"}});
    let (status, created) =
        call(&h.app, request(Method::POST, "/v1/instances", Some(ada), Some(&body))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["instance"]["id"].as_str().unwrap().to_owned();
    // Polls as fast as the engine answers from the moment the instance is `running`: the first
    // reads hit a server still running initdb (what schemathesis caught as a 500 naming psql's
    // socket). Each answer is a 200 or a clean 503 with Retry-After, never a 500.
    eventually(Duration::from_secs(60), || async {
        let (_, body) =
            call(&h.app, request(Method::GET, &format!("/v1/instances/{id}"), Some(ada), None))
                .await;
        if body["status"] == "running" { Ok(()) } else { Err(body["status"].clone()) }
    })
    .await
    .unwrap();
    let transient = std::cell::Cell::new(0);
    eventually(Duration::from_secs(90), || async {
        let (status, body, retry_after) = view(&h.app, ada, &id, "replication").await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(body["error"]["code"], "unavailable", "{body}");
            assert_eq!(retry_after.as_deref(), Some("2"), "a 503 says when to retry");
            assert_generic(&body);
            transient.set(transient.get() + 1);
            return Err(body);
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        Ok(body)
    })
    .await
    .unwrap();
    eprintln!("replication answered 503 {} time(s) while PostgreSQL started", transient.get());
    let (status, body, _) = view(&h.app, ada, &id, "stats").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A new application password: the old one stops working, the new one works; nobody else
    // can ask for it, and only a PostgreSQL instance has one.
    use sqlx::Connection as _;
    let first = created["credentials"]["password"].as_str().unwrap().to_owned();
    // The provisioning's copy of the credentials is gone once the instance runs; a server that
    // is no highly available cluster has no platform secrets kept either (nothing needs them).
    let instance_id: iaas_core::InstanceId = id.parse().unwrap();
    assert_eq!(h.repo.kept_secrets(instance_id).await.unwrap(), None);
    assert_eq!(h.repo.platform_secrets(instance_id).await.unwrap(), None);
    let (_, info, _) = view(&h.app, ada, &id, "info").await;
    let port = info["endpoints"][0]["port"].as_u64().unwrap();
    let url = |password: &str| format!("postgres://app:{password}@127.0.0.1:{port}/app");
    sqlx::PgConnection::connect(&url(&first)).await.expect("the first password works");
    let rotate = |user: UserId| {
        request(Method::POST, &format!("/v1/instances/{id}/password"), Some(user), None)
    };
    let (status, answer) = call(&h.app, rotate(UserId::new_random())).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, answer) = call(&h.app, rotate(ada)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["credentials"]["user"], "app");
    let second = answer["credentials"]["password"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    sqlx::PgConnection::connect(&url(&second)).await.expect("the new password works");
    let refused = sqlx::PgConnection::connect(&url(&first)).await;
    assert!(refused.is_err(), "the old password still works");
    let events = h.repo.claim("test-reader", 10_000, Duration::from_secs(1)).await.unwrap();
    h.repo.release("test-reader").await.unwrap();
    let changed: Vec<_> = events
        .iter()
        .map(|e| &e.event)
        .filter(|e| e.action == iaas_core::EventAction::ConfigChanged)
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(!format!("{changed:?}").contains(&second), "the event holds no password");

    let (status, _) =
        call(&h.app, request(Method::POST, &format!("/v1/instances/{id}/stop"), Some(ada), None))
            .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    status_becomes(&h.app, ada, &id, "stopped").await;
    for live in ["replication", "stats"] {
        let (status, body, _) = view(&h.app, ada, &id, live).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("not_running")),
            "{live} of a stopped instance: {body}"
        );
    }
    let (status, body) = call(&h.app, rotate(ada)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_running"))
    );
    let (status, body, _) = view(&h.app, ada, &id, "info").await;
    assert_eq!(status, StatusCode::OK, "info describes a stopped instance too: {body}");
    assert_eq!(body["status"], "stopped", "{body}");
    assert_eq!(body["nodes"][0]["running"], false, "{body}");

    // Behind the recorded status (the engine saw the stop before the store did), the engine's
    // own answer is a conflict too, which the API reports the same way.
    let runtime = common::runtime().await;
    let instance_id = id.parse().unwrap();
    let replication = iaas_core::ClusterSource::replication_status(&runtime, instance_id).await;
    assert!(matches!(replication, Err(iaas_core::Error::Conflict { .. })), "{replication:?}");
    let stats = iaas_core::ClusterSource::cluster_stats(&runtime, instance_id).await;
    assert!(matches!(stats, Err(iaas_core::Error::Conflict { .. })), "{stats:?}");

    let (status, _) = call(
        &h.app,
        request(Method::DELETE, &format!("/v1/instances/{id}?purge=true"), Some(ada), None),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    status_becomes(&h.app, ada, &id, "deleted").await;
}

#[tokio::test]
async fn info_of_an_instance_stopped_by_its_user_says_stopped_whatever_its_exit_code() {
    let h = harness().await;
    let ada = UserId::new_random();
    // `sleep` as PID 1 has no SIGTERM handler, so the stop ends it with SIGKILL after the stop
    // timeout: exit 137, which the info used to report as `failed`.
    let body = json!({
        "name": "stubborn",
        "spec": {"kind": "docker", "image": iaas_testkit::busybox_image(), "command": ["sleep", "300"]},
        "resources": {"millicpus": 250, "memory_mib": 64}
    });
    let (status, body) =
        call(&h.app, request(Method::POST, "/v1/instances", Some(ada), Some(&body))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["instance"]["id"].as_str().unwrap().to_owned();
    status_becomes(&h.app, ada, &id, "running").await;
    let (status, body, _) = view(&h.app, ada, &id, "info").await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("running")), "{body}");

    let (status, _) =
        call(&h.app, request(Method::POST, &format!("/v1/instances/{id}/stop"), Some(ada), None))
            .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    status_becomes(&h.app, ada, &id, "stopped").await;
    let runtime = common::runtime().await;
    let instance_id: iaas_core::InstanceId = id.parse().unwrap();
    let info = iaas_core::ClusterSource::cluster_info(&runtime, instance_id).await.unwrap();
    let container = info.nodes[0].container_id.clone().unwrap();
    let state = runtime
        .engine()
        .client()
        .unwrap()
        .inspect_container(&container, None)
        .await
        .unwrap()
        .state
        .unwrap();
    assert_eq!(state.exit_code, Some(137), "the case under test: killed after the stop timeout");

    let (status, body, _) = view(&h.app, ada, &id, "info").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "stopped", "the info agrees with the instance: {body}");
    assert_eq!(body["nodes"][0]["running"], false);
    // Reconciliation agrees too: nothing to repair, the instance stays stopped.
    let watcher = Watcher::new(
        Arc::new(DockerWatch::new(h.docker.clone())),
        h.repo.clone(),
        Arc::new(SystemClock),
        WatcherConfig::default(),
    );
    watcher.reconcile().await.unwrap();
    let (_, instance) =
        call(&h.app, request(Method::GET, &format!("/v1/instances/{id}"), Some(ada), None)).await;
    assert_eq!(instance["status"], "stopped", "{instance}");
    // Not a PostgreSQL instance, and not running: the status is what is reported first.
    let (status, body, _) = view(&h.app, ada, &id, "replication").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_running"))
    );

    let (status, _) = call(
        &h.app,
        request(Method::DELETE, &format!("/v1/instances/{id}?purge=true"), Some(ada), None),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    status_becomes(&h.app, ada, &id, "deleted").await;
}

fn as_admin(mut request: Request<Body>) -> Request<Body> {
    request.headers_mut().insert("x-test-scopes", "admin".parse().unwrap());
    request
}

/// A user held to a quota of 2 instances: the third is refused with the limit, what is in use
/// and what was asked; `GET /v1/quota` shows it; only an administrator may raise it, and then
/// the third fits.
#[tokio::test]
async fn quotas_hold_and_only_admins_override_them() {
    let h = harness_with(Quota { instances: 2, ..Quota::default() }).await;
    let now = chrono::Utc::now();
    let ada = User {
        id: UserId::new_random(),
        username: "ada".into(),
        password_hash: "$argon2id$x".into(),
        scopes: vec![],
        created_at: now,
        password_changed_at: now,
    };
    h.users.create_user(&ada).await.unwrap();
    let post = |body: &Value| request(Method::POST, "/v1/instances", Some(ada.id), Some(body));
    let mut ids = Vec::new();
    for name in ["one", "two"] {
        let (status, body) = call(&h.app, post(&sleeper(name))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.push(body["instance"]["id"].as_str().unwrap().to_owned());
    }
    let (status, body) = call(&h.app, post(&sleeper("three"))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("quota_exceeded")),
        "{body}"
    );
    assert_eq!(
        body["error"]["quota"],
        json!({"limit": "instances", "allowed": 2, "used": 2, "requested": 1})
    );
    let mut huge = sleeper("huge");
    huge["resources"] = json!({"millicpus": 250, "memory_mib": 1_000_000});
    let (status, body) = call(&h.app, post(&huge)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["quota"]["limit"], "instance_memory_mib", "{body}");

    let (status, body) = call(&h.app, request(Method::GET, "/v1/quota", Some(ada.id), None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["limits"]["instances"], 2);
    assert_eq!(body["usage"], json!({"instances": 2, "millicpus": 500, "memory_mib": 128}));

    // Ada cannot raise her own quota; an administrator can, for her alone.
    let raise = json!({"instances": 3});
    let path = "/v1/admin/quotas/ada";
    let (status, body) = call(&h.app, request(Method::PUT, path, Some(ada.id), Some(&raise))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("insufficient_scope"))
    );
    let admin = UserId::new_random();
    let (status, body) =
        call(&h.app, as_admin(request(Method::PUT, path, Some(admin), Some(&raise)))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["limits"]["instances"].as_u64(), body["override"].clone()), (Some(3), raise));
    // Usernames are stored lowercased; an administrator may type them in any case.
    let (status, body) =
        call(&h.app, as_admin(request(Method::GET, "/v1/admin/quotas/ADA", Some(admin), None)))
            .await;
    assert_eq!((status, body["username"].as_str()), (StatusCode::OK, Some("ada")), "{body}");
    let (status, body) = call(&h.app, post(&sleeper("three"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    ids.push(body["instance"]["id"].as_str().unwrap().to_owned());

    for (what, request, status, code) in [
        (
            "an unknown user",
            as_admin(request(Method::GET, "/v1/admin/quotas/nobody", Some(admin), None)),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "an unknown limit",
            as_admin(request(Method::PUT, path, Some(admin), Some(&json!({"cpus": 1})))),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "no token",
            request(Method::GET, "/v1/quota", None, None),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
    ] {
        let (got, body) = call(&h.app, request).await;
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{what}: {body}");
    }
    let (status, body) =
        call(&h.app, as_admin(request(Method::DELETE, path, Some(admin), None))).await;
    assert_eq!(
        (status, body["override"].clone(), body["limits"]["instances"].as_u64()),
        (StatusCode::OK, json!({}), Some(2))
    );

    for id in ids {
        let (status, _) = call(
            &h.app,
            request(Method::DELETE, &format!("/v1/instances/{id}?purge=true"), Some(ada.id), None),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        status_becomes(&h.app, ada.id, &id, "deleted").await;
    }
    // Deleted while provisioning: the provisionings remove what they made when they end.
    h.settle().await;
    let left = h
        .docker
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&std::collections::HashMap::from([(
                    "label",
                    vec![format!("iaas.owner={}", ada.id)],
                )]))
                .build(),
        ))
        .await
        .unwrap();
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

#[tokio::test]
async fn switchover_is_only_for_the_owners_highly_available_clusters() {
    let h = harness().await;
    let (owner, other) = (UserId::new_random(), UserId::new_random());
    let (status, created) =
        call(&h.app, request(Method::POST, "/v1/instances", Some(owner), Some(&sleeper("plain"))))
            .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["instance"]["id"].as_str().unwrap().to_owned();
    let uri = format!("/v1/instances/{id}/switchover");
    let switch =
        |user: Option<UserId>, body: Option<&Value>| request(Method::POST, &uri, user, body);

    // Another tenant learns nothing, not even that the instance exists.
    let (status, body) = call(&h.app, switch(Some(other), Some(&json!({})))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, _) = call(&h.app, switch(None, Some(&json!({})))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let read_only = Request::builder()
        .method(Method::POST)
        .uri(&uri)
        .header("x-test-user", owner.to_string())
        .header("x-test-scopes", SCOPE_READ)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(call(&h.app, read_only).await.0, StatusCode::FORBIDDEN);

    // Only PostgreSQL has a password to rotate.
    let (status, body) = call(
        &h.app,
        request(Method::POST, &format!("/v1/instances/{id}/password"), Some(owner), None),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("unsupported")),
        "{body}"
    );
    // The owner's instance is no highly available cluster.
    let (status, body) = call(&h.app, switch(Some(owner), Some(&json!({})))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("not_highly_available")),
        "{body}"
    );
    // Bodies that are not the expected shape.
    for bad in
        [json!({"target": ""}), json!({"target": "m".repeat(33)}), json!({"extra": 1}), json!([])]
    {
        let (status, body) = call(&h.app, switch(Some(owner), Some(&bad))).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {status} {body}"
        );
        assert!(body["error"]["code"].is_string(), "{bad}: a JSON error: {body}");
    }
    let (status, _) = call(&h.app, switch(Some(owner), None)).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Backups likewise: another tenant's instance is missing, a plain one has none.
    let backups = format!("/v1/instances/{id}/backups");
    for (user, method, body) in [(other, Method::POST, Some(json!({}))), (other, Method::GET, None)]
    {
        let (status, _) = call(&h.app, request(method, &backups, Some(user), body.as_ref())).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (status, body) =
        call(&h.app, request(Method::POST, &backups, Some(owner), Some(&json!({"type": "full"}))))
            .await;
    assert_eq!(body["error"]["code"], "not_highly_available", "{status} {body}");
    let (status, body) = call(&h.app, request(Method::GET, &backups, Some(owner), None)).await;
    assert_eq!(body["error"]["code"], "not_highly_available", "{status} {body}");
    let (status, _) = call(
        &h.app,
        request(Method::POST, &backups, Some(owner), Some(&json!({"type": "weekly"}))),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(
        &h.app,
        request(
            Method::POST,
            &format!("/v1/instances/{}/switchover", UserId::new_random()),
            Some(owner),
            Some(&json!({})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Specs that cannot be highly available are refused before anything is created.
    for spec in [
        json!({"kind": "postgres", "database": "app", "ha": true}),
        json!({"kind": "postgres", "database": "app", "replicas": 1, "synchronous": true}),
    ] {
        let body = json!({"name": "ha-bad", "spec": spec});
        let (status, answer) =
            call(&h.app, request(Method::POST, "/v1/instances", Some(owner), Some(&body))).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid")),
            "{spec}: {answer}"
        );
    }
    // A restore reads only the caller's own highly available clusters.
    let restore = |from: &str| {
        json!({"name": "copy", "spec": {"kind": "postgres", "database": "app", "replicas": 1,
               "ha": true, "restore": {"from": from}}})
    };
    let (status, body) =
        call(&h.app, request(Method::POST, "/v1/instances", Some(other), Some(&restore(&id))))
            .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "{body}"
    );
    let (status, body) =
        call(&h.app, request(Method::POST, "/v1/instances", Some(owner), Some(&restore(&id))))
            .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid")),
        "{body}"
    );
    let plain_restore = json!({"name": "copy", "spec": {"kind": "postgres", "database": "app",
        "restore": {"from": id}}});
    let (status, body) =
        call(&h.app, request(Method::POST, "/v1/instances", Some(owner), Some(&plain_restore)))
            .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid")),
        "{body}"
    );
    let (_, listed) = call(&h.app, request(Method::GET, "/v1/instances", Some(owner), None)).await;
    assert_eq!(
        listed["instances"].as_array().map(Vec::len),
        Some(1),
        "nothing was created: {listed}"
    );

    let (status, _) = call(
        &h.app,
        request(Method::DELETE, &format!("/v1/instances/{id}?purge=true"), Some(owner), None),
    )
    .await;
    assert!(status.is_success());
    h.settle().await;
}

/// An instance of `owner` stored as `status` directly (nothing on the engine: the replica
/// count is only stored by the API, and the supervisor, which meets it, does not run here).
async fn stored(h: &Harness, owner: UserId, name: &str, ha: bool, status: &str) -> String {
    use iaas_core::{
        EventAction, InfrastructureEvent, Instance, InstanceName, InstanceSpec, InstanceStatus,
        PostgresSpec, Resources,
    };
    let mut spec = PostgresSpec::new("app", 2);
    spec.ha = ha;
    let resources = Resources { millicpus: 600, memory_mib: 256 };
    let now = chrono::Utc::now();
    let name = InstanceName::new(name).unwrap();
    let mut instance =
        Instance::new(owner, name, InstanceSpec::Postgres(spec), resources, now).unwrap();
    instance.status = status.parse::<InstanceStatus>().unwrap();
    let event =
        InfrastructureEvent::new(instance.id, owner, instance.kind(), EventAction::Created, now);
    h.repo.create_instance(&instance, &event).await.unwrap();
    instance.id.to_string()
}

#[tokio::test]
async fn the_replica_count_changes_only_for_the_owners_running_clusters_within_the_quota() {
    // Room for the three instances below with 3 replicas in the first, not 4 (each container
    // costs 600 millicores: 1,800 for the plain one, 3,000 for the stopped cluster, 3,600 and
    // 4,200 for the first one with 3 and 4 replicas).
    let h = harness_with(Quota { millicpus: 8_500, ..Quota::default() }).await;
    let (owner, other) = (UserId::new_random(), UserId::new_random());
    let cluster = stored(&h, owner, "ha", true, "running").await;
    let plain = stored(&h, owner, "plain", false, "running").await;
    let stopped = stored(&h, owner, "resting", true, "stopped").await;
    let patch = |id: &str, user: Option<UserId>, body: Value| {
        request(Method::PATCH, &format!("/v1/instances/{id}"), user, Some(&body))
    };
    let code = |body: &Value| body["error"]["code"].as_str().map(str::to_owned);

    // Another tenant learns nothing; no token, or a read-only one, changes nothing.
    let (status, body) = call(&h.app, patch(&cluster, Some(other), json!({"replicas": 3}))).await;
    assert_eq!((status, code(&body).as_deref()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, _) = call(&h.app, patch(&cluster, None, json!({"replicas": 3}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut read_only = patch(&cluster, Some(owner), json!({"replicas": 3}));
    read_only.headers_mut().insert("x-test-scopes", SCOPE_READ.parse().unwrap());
    assert_eq!(call(&h.app, read_only).await.0, StatusCode::FORBIDDEN);

    // Only a running highly available cluster, and only a count it can have.
    let (status, body) = call(&h.app, patch(&plain, Some(owner), json!({"replicas": 3}))).await;
    assert_eq!(
        (status, code(&body).as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("not_highly_available"))
    );
    let (status, body) = call(&h.app, patch(&stopped, Some(owner), json!({"replicas": 3}))).await;
    assert_eq!((status, code(&body).as_deref()), (StatusCode::CONFLICT, Some("not_running")));
    for count in [0, 6] {
        let (status, body) =
            call(&h.app, patch(&cluster, Some(owner), json!({"replicas": count}))).await;
        assert_eq!(
            (status, code(&body).as_deref()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid")),
            "{count}: {body}"
        );
    }
    for bad in [
        json!({"replicas": 300}),
        json!({"replicas": -1}),
        json!({"replicas": "3"}),
        json!({}),
        json!({"replicas": 3, "ha": false}),
        json!([3]),
    ] {
        let (status, body) = call(&h.app, patch(&cluster, Some(owner), bad.clone())).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {status} {body}"
        );
        assert!(code(&body).is_some(), "{bad}: a JSON error: {body}");
    }

    // The count it has: nothing changes. A new one: stored with its event.
    let (status, body) = call(&h.app, patch(&cluster, Some(owner), json!({"replicas": 2}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let version = body["version"].as_u64().unwrap();
    let (status, body) = call(&h.app, patch(&cluster, Some(owner), json!({"replicas": 3}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["spec"]["replicas"], 3);
    assert_eq!(body["version"].as_u64(), Some(version + 1));
    let (_, read) =
        call(&h.app, request(Method::GET, &format!("/v1/instances/{cluster}"), Some(owner), None))
            .await;
    assert_eq!(read["spec"]["replicas"], 3, "{read}");

    // One more member is past the quota (the stopped cluster still holds its share).
    let (status, body) = call(&h.app, patch(&cluster, Some(owner), json!({"replicas": 4}))).await;
    assert_eq!(
        (status, code(&body).as_deref()),
        (StatusCode::FORBIDDEN, Some("quota_exceeded")),
        "{body}"
    );
    let (_, read) =
        call(&h.app, request(Method::GET, &format!("/v1/instances/{cluster}"), Some(owner), None))
            .await;
    assert_eq!(read["spec"]["replicas"], 3, "nothing changed: {read}");

    // The backup schedule: set, then turned off with null; an empty change is no change.
    let schedule = json!({"backup_schedule": {"every_hours": 24, "keep": 7}});
    let (status, body) = call(&h.app, patch(&cluster, Some(owner), schedule)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["spec"]["backup_schedule"], json!({"every_hours": 24, "keep": 7}));
    assert_eq!(body["spec"]["replicas"], 3, "the count stays: {body}");
    for bad in [
        json!({"backup_schedule": {"every_hours": 0, "keep": 1}}),
        json!({"backup_schedule": {"every_hours": 1, "keep": 31}}),
    ] {
        let (status, body) = call(&h.app, patch(&cluster, Some(owner), bad.clone())).await;
        assert_eq!(
            (status, code(&body).as_deref()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid")),
            "{bad}: {body}"
        );
    }
    for bad in [json!({}), json!({"backup_schedule": {"every_hours": 1}})] {
        let (status, body) = call(&h.app, patch(&cluster, Some(owner), bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, body) =
        call(&h.app, patch(&cluster, Some(owner), json!({"backup_schedule": null}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(body["spec"].get("backup_schedule").is_none(), "turned off: {body}");
}
