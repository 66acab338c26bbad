//! The first-run admin account, through the real binary: the first start on an empty data
//! directory prints the password once (on stdout, never in the log), the account logs in with
//! it, and a second start on the same directory prints nothing about it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use iaas_testkit::http::post_json;
use iaas_testkit::process::{Exited, Server};

/// Stops it with SIGTERM, asserts a clean exit and returns its whole stdout and log.
async fn stop(running: Server) -> (String, String) {
    let Exited { status, stdout, log } = running.stop().await.unwrap();
    assert!(status.success(), "exit status {status}:\n{log}");
    (stdout, log)
}

#[tokio::test]
async fn the_first_start_prints_a_working_admin_password_once() {
    let data_dir = iaas_testkit::isolation::temp_dir("iaas-admin");

    let first = common::start_binary(&data_dir).await;
    let addr = first.addr().to_owned();
    // The message is written and flushed before the address is logged; read it after stopping.
    let probe = serde_json::json!({"username": "admin", "password": "not the password at all"});
    let status = post_json(&addr, "/v1/auth/login", &probe).await.unwrap().status;
    assert_eq!(status, 401, "the account exists and refuses a wrong password");
    let (stdout, log) = stop(first).await;
    let password = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("password: "))
        .unwrap_or_else(|| panic!("no password on the first start's stdout:\n{stdout}"))
        .to_owned();
    assert_eq!(password.len(), 24, "{password:?}");
    assert!(stdout.contains(&format!("http://{addr}/v1/auth/login")), "{stdout}");
    assert!(!log.contains(&password), "the password never reaches the log");

    let second = common::start_binary(&data_dir).await;
    let credentials = serde_json::json!({"username": "admin", "password": password});
    let (status, body) =
        post_json(second.addr(), "/v1/auth/login", &credentials).await.unwrap().into_json();
    assert_eq!(status, 200, "the printed password logs in: {body}");
    assert!(body["access_token"].as_str().is_some(), "{body}");
    let (stdout, log) = stop(second).await;
    assert!(!stdout.contains("password"), "a later start says nothing about it:\n{stdout}");
    assert!(!log.contains(&password));

    std::fs::remove_dir_all(&data_dir).unwrap();
}
