//! The real binary: starts on embedded defaults, answers its health endpoints with JSON, and
//! stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

async fn start(data_dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iaas-platform"))
        .env("IAAS_LISTEN", "127.0.0.1:0")
        .env("IAAS_DATA_DIR", data_dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("addr=").nth(1) {
                return rest.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("the platform exited before listening");
    })
    .await
    .expect("the platform logs its address within 30 s");
    // Keep draining the log so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

async fn get(addr: &str, path: &str) -> (u16, String) {
    request(addr, &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"))
        .await
}

async fn post_json(addr: &str, path: &str, body: &serde_json::Value) -> (u16, String) {
    authorized(addr, "POST", path, None, Some(body)).await
}

async fn authorized(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, String) {
    let body = body.map(ToString::to_string).unwrap_or_default();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    request(addr, &(head + &body)).await
}

async fn request(addr: &str, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

#[tokio::test]
async fn serves_health_then_stops_on_sigterm() {
    let data_dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name("iaas-platform"));
    let (mut child, addr) = start(&data_dir).await;

    let (status, body) = get(&addr, "/healthz").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "ok");

    // Ready once the embedded store and the Docker engine answer.
    let (status, body) = get(&addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["checks"]["store"], "ok");
    assert_eq!(json["checks"]["docker"], "ok");
    assert!(data_dir.join("iaas.db").exists(), "the embedded store lives in IAAS_DATA_DIR");
    assert!(data_dir.join("events.db").exists(), "so does the event log index");

    // The auth API is mounted and the account lands in the embedded store.
    let credentials =
        serde_json::json!({"username": "ada", "password": "correct horse battery staple"});
    let (status, body) = post_json(&addr, "/v1/auth/register", &credentials).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = post_json(&addr, "/v1/auth/login", &credentials).await;
    assert_eq!(status, 200, "{body}");
    let tokens: serde_json::Value = serde_json::from_str(&body).unwrap();
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
    let (status, body) = authorized(&addr, "POST", "/v1/instances", Some(token), Some(&spec)).await;
    assert_eq!(status, 202, "{body}");
    let created: serde_json::Value = serde_json::from_str(&body).unwrap();
    let path = format!("/v1/instances/{}", created["instance"]["id"].as_str().unwrap());
    iaas_testkit::wait::eventually(Duration::from_secs(20), || async {
        let (_, body) = authorized(&addr, "GET", &path, Some(token), None).await;
        let status = serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"].clone();
        if status == "running" { Ok(()) } else { Err(status) }
    })
    .await
    .unwrap();
    let (status, body) = authorized(&addr, "GET", &format!("{path}/info"), Some(token), None).await;
    assert_eq!(status, 200, "{body}");
    // Both events reached the monitoring index through the bus.
    let instance = created["instance"]["id"].as_str().unwrap();
    iaas_testkit::wait::eventually(Duration::from_secs(10), || async {
        let (_, body) =
            authorized(&addr, "GET", &format!("/v1/events?instance={instance}"), Some(token), None)
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
    let (status, body) =
        authorized(&addr, "DELETE", &format!("{path}?purge=true"), Some(token), None).await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = get(&addr, "/no/such/route").await;
    assert_eq!(status, 404);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"]["code"], "not_found");

    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(killed.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the platform exits within 15 s of SIGTERM")
        .unwrap();
    assert!(exit.success(), "exit status {exit}");
    std::fs::remove_dir_all(&data_dir).unwrap();
}

#[tokio::test]
async fn a_bad_configuration_stops_the_start_with_a_named_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_iaas-platform"))
        .env("IAAS_LISTEN", "not-an-address")
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("IAAS_LISTEN"), "{stderr}");
}
