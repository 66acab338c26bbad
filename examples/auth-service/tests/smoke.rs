//! The auth service binary: starts on an embedded store, is live and ready, registers and logs
//! in an account, stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use iaas_testkit::http::{get, post_json};
use iaas_testkit::process::{Server, command, lookup};

#[tokio::test]
async fn registers_and_logs_in_then_stops_on_sigterm() {
    let data_dir = iaas_testkit::isolation::temp_dir("auth-smoke");
    let envs = [
        (iaas_platform::LISTEN_VAR, "127.0.0.1:0".to_owned()),
        (iaas_platform::DATA_DIR_VAR, data_dir.display().to_string()),
    ];
    let running =
        Server::start(command(env!("CARGO_BIN_EXE_auth-service"), "IAAS_", &envs)).await.unwrap();

    let (status, body) = get(running.addr(), "/healthz", None).await.unwrap().into_json();
    assert_eq!((status, &body["status"]), (200, &serde_json::json!("ok")));
    let (status, body) = get(running.addr(), "/readyz", None).await.unwrap().into_json();
    assert_eq!((status, &body["checks"]["store"]), (200, &serde_json::json!("ok")), "{body}");

    let credentials =
        serde_json::json!({"username": "ada", "password": "correct horse battery staple"});
    let (status, body) =
        post_json(running.addr(), "/v1/auth/register", &credentials).await.unwrap().into_json();
    assert_eq!(status, 201, "{body}");
    let (status, body) =
        post_json(running.addr(), "/v1/auth/login", &credentials).await.unwrap().into_json();
    assert_eq!(status, 200, "{body}");
    // The token verifies with the key file the other services read.
    let issuer = iaas_platform::token_issuer(
        &iaas_platform::Config::from_lookup(|k| lookup(&envs, k)).unwrap(),
    )
    .unwrap();
    issuer.verify(body["access_token"].as_str().unwrap()).unwrap();

    let exited = running.stop().await.unwrap();
    assert!(exited.status.success(), "SIGTERM stops it cleanly: {}\n{}", exited.status, exited.log);
    std::fs::remove_dir_all(&data_dir).unwrap();
}
