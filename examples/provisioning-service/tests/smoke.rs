//! The provisioning service binary: starts on an embedded store, is live and ready (store and
//! Docker engine), checks access tokens with the shared key file, stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use tokio::process::Command;

use iaas_testkit::http::get;
use iaas_testkit::process::{Server, command, lookup};

#[tokio::test]
async fn serves_health_and_instances_then_stops_on_sigterm() {
    let data_dir = iaas_testkit::isolation::temp_dir("provisioning-smoke");
    let envs = [
        (iaas_platform::LISTEN_VAR, "127.0.0.1:0".to_owned()),
        (iaas_platform::DATA_DIR_VAR, data_dir.display().to_string()),
    ];
    let running =
        Server::start(command(env!("CARGO_BIN_EXE_provisioning-service"), "IAAS_", &envs))
            .await
            .unwrap();

    let (status, body) = get(running.addr(), "/healthz", None).await.unwrap().into_json();
    assert_eq!((status, &body["status"]), (200, &serde_json::json!("ok")));
    let (status, body) = get(running.addr(), "/readyz", None).await.unwrap().into_json();
    let checks = (&body["checks"]["store"], &body["checks"]["docker"]);
    assert_eq!((status, checks), (200, (&"ok".into(), &"ok".into())), "{body}");
    let metrics = get(running.addr(), "/metrics", None).await.unwrap();
    assert_eq!(metrics.status, 200, "Prometheus metrics are served");

    let (status, body) = get(running.addr(), "/v1/instances", None).await.unwrap().into_json();
    assert_eq!(status, 401, "no token, no instances: {body}");
    // A token signed with the key file the service read (as the auth service would sign it).
    let issuer = iaas_platform::token_issuer(
        &iaas_platform::Config::from_lookup(|k| lookup(&envs, k)).unwrap(),
    )
    .unwrap();
    let user = iaas_core::UserId::new_random();
    let token = issuer.issue(user, &["instances:read".to_owned()]).unwrap().token;
    let (status, body) =
        get(running.addr(), "/v1/instances", Some(&token)).await.unwrap().into_json();
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(running.addr(), "/no/such/route", None).await.unwrap().into_json();
    assert_eq!((status, &body["error"]["code"]), (404, &serde_json::json!("not_found")));

    let exited = running.stop().await.unwrap();
    assert!(exited.status.success(), "SIGTERM stops it cleanly: {}\n{}", exited.status, exited.log);
    std::fs::remove_dir_all(&data_dir).unwrap();
}

#[tokio::test]
async fn help_names_the_default_port() {
    let output = Command::new(env!("CARGO_BIN_EXE_provisioning-service"))
        .arg("--help")
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("127.0.0.1:8083"), "{help}");
    assert!(help.contains("IAAS_KAFKA_BROKERS") && help.contains("/v1/instances"), "{help}");
}
