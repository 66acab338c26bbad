//! The real binary: starts on embedded defaults, answers its health endpoints with JSON, and
//! stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::time::Duration;

use iaas_testkit::process::command;

/// One request with an optional bearer `token` and JSON `body`: the status and the body.
async fn authorized(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, String) {
    let response = iaas_testkit::http::request(addr, method, path, token, body).await.unwrap();
    (response.status, response.body)
}

/// Registers `ada` (201) and logs in (200): the token pair.
async fn register_and_login(addr: &str) -> serde_json::Value {
    let credentials =
        serde_json::json!({"username": "ada", "password": "correct horse battery staple"});
    let (status, body) =
        authorized(addr, "POST", "/v1/auth/register", None, Some(&credentials)).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = authorized(addr, "POST", "/v1/auth/login", None, Some(&credentials)).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Creates the instance of `spec` (202) and waits until it is `running`: its create answer and
/// its path.
async fn create_and_wait_running(
    addr: &str,
    token: &str,
    spec: &serde_json::Value,
) -> (serde_json::Value, String) {
    let (status, body) = authorized(addr, "POST", "/v1/instances", Some(token), Some(spec)).await;
    assert_eq!(status, 202, "{body}");
    let created: serde_json::Value = serde_json::from_str(&body).unwrap();
    let path = format!("/v1/instances/{}", created["instance"]["id"].as_str().unwrap());
    iaas_testkit::wait::eventually(Duration::from_secs(30), || async {
        let (_, body) = authorized(addr, "GET", &path, Some(token), None).await;
        let status = serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"].clone();
        if status == "running" { Ok(()) } else { Err(status) }
    })
    .await
    .unwrap();
    (created, path)
}

#[tokio::test]
async fn serves_health_then_stops_on_sigterm() {
    let data_dir = iaas_testkit::isolation::temp_dir("iaas-platform");
    let running = common::start_binary(&data_dir).await;
    let addr = running.addr();

    let (status, body) = authorized(addr, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "ok");

    // Ready once the embedded store and the Docker engine answer.
    let (status, body) = authorized(addr, "GET", "/readyz", None, None).await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["checks"]["store"], "ok");
    assert_eq!(json["checks"]["docker"], "ok");
    assert!(data_dir.join("iaas.db").exists(), "the embedded store lives in IAAS_DATA_DIR");
    assert!(data_dir.join("events.db").exists(), "so does the event log index");

    // The auth API is mounted and the account lands in the embedded store.
    let tokens = register_and_login(addr).await;
    assert!(tokens["access_token"].as_str().is_some_and(|t| t.split('.').count() == 3));
    assert!(data_dir.join("auth.key").exists());

    // Provision through the API on embedded defaults: the watcher reports it running.
    let token = tokens["access_token"].as_str().unwrap();
    let spec = serde_json::json!({
        "name": "worker",
        "spec": {"kind": "docker", "image": iaas_testkit::busybox_image(),
                 "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 300 & wait"]},
        "resources": {"millicpus": 250, "memory_mib": 64}
    });
    let (created, path) = create_and_wait_running(addr, token, &spec).await;
    let (status, body) = authorized(addr, "GET", &format!("{path}/info"), Some(token), None).await;
    assert_eq!(status, 200, "{body}");
    // Both events reached the monitoring index through the bus.
    let instance = created["instance"]["id"].as_str().unwrap();
    iaas_testkit::wait::eventually(Duration::from_secs(10), || async {
        let (_, body) =
            authorized(addr, "GET", &format!("/v1/events?instance={instance}"), Some(token), None)
                .await;
        let found: Vec<String> =
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["entries"]
                .as_array()
                .map(|entries| {
                    entries
                        .iter()
                        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                        .collect()
                })
                .unwrap_or_default();
        let wanted = ["docker created", "docker started"];
        if wanted.iter().all(|w| found.iter().any(|f| f == w)) { Ok(()) } else { Err(found) }
    })
    .await
    .unwrap();
    common::delete_and_wait(addr, &path, token).await;

    let (status, body) = authorized(addr, "GET", "/no/such/route", None, None).await;
    assert_eq!(status, 404);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"]["code"], "not_found");

    let exited = running.stop().await.unwrap();
    assert!(exited.status.success(), "SIGTERM stops it cleanly: {}\n{}", exited.status, exited.log);
    std::fs::remove_dir_all(&data_dir).unwrap();
}

#[tokio::test]
async fn a_bad_configuration_stops_the_start_with_a_named_error() {
    let envs = [(iaas_platform::LISTEN_VAR, "not-an-address".to_owned())];
    let output =
        command(env!("CARGO_BIN_EXE_iaas-platform"), "IAAS_", &envs).output().await.unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("IAAS_LISTEN"), "{stderr}");
}

/// The engine's socket as the suite reaches it (`DOCKER_HOST`, else the standard path).
fn engine_socket() -> std::path::PathBuf {
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let path = host.strip_prefix("unix://").unwrap_or("/var/run/docker.sock");
    std::path::PathBuf::from(path)
}

/// Serves `at` as a Unix socket that forwards each connection to the engine's socket: the
/// engine "appears" at `at` when this starts.
fn forward_engine(at: &std::path::Path) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::UnixListener::bind(at).unwrap();
    let engine = engine_socket();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let engine = engine.clone();
            tokio::spawn(async move {
                if let Ok(mut upstream) = tokio::net::UnixStream::connect(&engine).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    })
}

#[tokio::test]
async fn starts_without_an_engine_and_uses_it_once_it_appears() {
    let data_dir = iaas_testkit::isolation::temp_dir("iaas-no-engine");
    let socket = data_dir.join("docker.sock");
    let address = format!("unix://{}", socket.display());
    let mut settings = common::embedded(&data_dir);
    settings.push((iaas_platform::DOCKER_HOST_VAR, address.clone()));
    settings.push((iaas_platform::LOG_VAR, "info".to_owned()));
    let running = iaas_testkit::process::Server::start(command(
        env!("CARGO_BIN_EXE_iaas-platform"),
        "IAAS_",
        &settings,
    ))
    .await
    .expect("the platform starts with no engine at its socket");
    let addr = running.addr();

    let (status, _) = authorized(addr, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    let (status, body) = authorized(addr, "GET", "/readyz", None, None).await;
    assert_eq!(status, 503, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["checks"]["store"], "ok", "{body}");
    let docker = json["checks"]["docker"].as_str().unwrap_or_default();
    assert!(docker.contains(&address), "/readyz names the engine it looks for: {body}");

    // Auth serves; provisioning refuses with a code and a hint, storing nothing.
    let tokens = register_and_login(addr).await;
    let token = tokens["access_token"].as_str().unwrap();
    let (status, body) =
        authorized(addr, "POST", "/v1/instances", Some(token), Some(&common::sleeper("early")))
            .await;
    assert_eq!(status, 503, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"]["code"], "engine_unavailable", "{body}");
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&address) && message.contains("DOCKER_HOST"), "{body}");
    let (status, body) = authorized(addr, "GET", "/v1/instances", Some(token), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["instances"],
        serde_json::json!([])
    );

    // The engine appears: ready without a restart, and provisioning works end to end (the
    // watcher reconnected, so the instance reaches `running`).
    let forwarder = forward_engine(&socket);
    iaas_testkit::wait::eventually(Duration::from_secs(30), || async {
        let (status, body) = authorized(addr, "GET", "/readyz", None, None).await;
        if status == 200 { Ok(()) } else { Err(body) }
    })
    .await
    .expect("ready once the engine answers");
    // The watcher follows the engine once it appears, so the instance reaches `running`.
    let (_, path) = create_and_wait_running(addr, token, &common::sleeper("late")).await;
    common::delete_and_wait(addr, &path, token).await;

    let exited = running.stop().await.unwrap();
    assert!(exited.status.success(), "{}\n{}", exited.status, exited.log);
    forwarder.abort();
    std::fs::remove_dir_all(&data_dir).unwrap();
}
