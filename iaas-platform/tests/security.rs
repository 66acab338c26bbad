//! No password, token or secret in logs, for the whole platform started in this
//! process: every log line of a full flow is captured (a tracing subscriber writing to a buffer,
//! `trace` for the project's crates and `debug` for every dependency, far more than the default
//! `info`), and no secret of the flow appears in it, in any encoding a log line could carry.
//!
//! The flow: the first-run admin account is created; a user registers, fails a login with a
//! wrong password, logs in, refreshes, reads its sessions, changes its password, logs in again
//! with the new one, provisions a PostgreSQL instance (the API makes its database password),
//! logs out everywhere, and an old refresh token is replayed. The secrets: every password
//! (admin, old, new, the wrong one), every access and refresh token and each token's signature,
//! the database password, and the auth key file's signing seed and refresh secret.
//!
//! Security headers and CORS of the dashboard are tested in `dashboard.rs`; this file does not
//! repeat them.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Served, call, ok};
use iaas_platform::HttpLimits;
use serde_json::{Value, json};

/// The captured log: everything the subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Installs the capturing subscriber for the whole test binary (one test lives here, so the
/// global default is this test's alone, whichever runtime thread logs).
fn capture_logs() -> Captured {
    let captured = Captured::default();
    let writer = captured.clone();
    let filter = "debug,iaas_platform=trace,iaas_auth=trace,iaas_docker=trace,iaas_provisioning=trace,iaas_events=trace,\
                  iaas_store=trace,iaas_cache=trace,iaas_core=trace";
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    captured
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
        }
        if pad {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    out
}

/// The forms raw key bytes could be logged in: hex, both base64 alphabets, a Debug array.
fn forms_of_bytes(bytes: &[u8]) -> Vec<String> {
    const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    vec![
        hex(bytes),
        base64(bytes, STANDARD, true),
        base64(bytes, URL_SAFE, false),
        format!("{:?}", &bytes[..8]).trim_end_matches(']').to_owned(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_flow_logs_no_password_token_or_secret() {
    let captured = capture_logs();
    let data_dir = iaas_testkit::isolation::temp_dir("iaas-security-logs");
    let mut settings = common::embedded(&data_dir);
    if let Some(image) =
        std::env::var(iaas_testkit::POSTGRES_IMAGE_VAR).ok().filter(|i| !i.is_empty())
    {
        settings.push((iaas_platform::POSTGRES_IMAGE_VAR, image));
    }
    let limits = HttpLimits::new(Duration::from_secs(30), HttpLimits::DEFAULT_BODY_LIMIT);
    let running = Served::start(common::config(&settings), limits).await;
    let (addr, platform, config) = (&running.addr, &running.platform, &running.config);
    let mut secrets: Vec<(String, String)> = Vec::new();

    // First run: the admin password is printed by the binary (stdout), never logged.
    let admin = iaas_platform::admin::ensure_admin(&platform.auth, platform.repos.users.as_ref())
        .await
        .unwrap()
        .expect("a fresh data directory has no admin yet");
    secrets.push(("the first-run admin password".into(), admin.password.clone()));
    let key_file = std::fs::read(config.auth_key_path()).unwrap();
    assert_eq!(key_file.len(), 64, "the key file is a seed and a secret");
    for (what, bytes) in [("signing seed", &key_file[..32]), ("refresh secret", &key_file[32..])] {
        for form in forms_of_bytes(bytes) {
            secrets.push((format!("the {what} as {form:.12}..."), form));
        }
    }

    let old_password = "old correct horse battery staple";
    let new_password = "new correct horse battery staple";
    let wrong_password = "wrong horse battery staple guess";
    for (what, value) in [
        ("the old password", old_password),
        ("the new password", new_password),
        ("the wrong password", wrong_password),
    ] {
        secrets.push((what.into(), value.into()));
    }
    let mut tokens: Vec<String> = Vec::new();

    let credentials = json!({"username": "carol", "password": old_password});
    ok(addr, "POST", "/v1/auth/register", None, &credentials).await;
    let wrong = json!({"username": "carol", "password": wrong_password});
    let (status, _) = call(addr, "POST", "/v1/auth/login", None, &wrong).await.unwrap();
    assert_eq!(status, 401);
    let first = ok(addr, "POST", "/v1/auth/login", None, &credentials).await;
    let refresh = json!({"refresh_token": first["refresh_token"]});
    let second = ok(addr, "POST", "/v1/auth/refresh", None, &refresh).await;
    let access = second["access_token"].as_str().unwrap().to_owned();
    ok(addr, "GET", "/v1/auth/sessions", Some(&access), &Value::Null).await;
    let change = json!({"current_password": old_password, "new_password": new_password});
    ok(addr, "PUT", "/v1/auth/password", Some(&access), &change).await;
    let credentials = json!({"username": "carol", "password": new_password});
    let third = ok(addr, "POST", "/v1/auth/login", None, &credentials).await;
    let access = third["access_token"].as_str().unwrap().to_owned();
    for pair in [&first, &second, &third] {
        tokens.push(pair["access_token"].as_str().unwrap().to_owned());
        tokens.push(pair["refresh_token"].as_str().unwrap().to_owned());
    }

    let spec = json!({
        "name": "secretdb",
        "spec": {"kind": "postgres", "database": "app", "replicas": 0},
        "resources": {"millicpus": 250, "memory_mib": 256}
    });
    let created = ok(addr, "POST", "/v1/instances", Some(&access), &spec).await;
    let db_password = created["credentials"]["password"].as_str().unwrap().to_owned();
    secrets.push(("the database password".into(), db_password));
    let id = created["instance"]["id"].as_str().unwrap().to_owned();
    let instance = format!("/v1/instances/{id}");
    // Provisioning runs in the background: wait until the engine has the container, so its
    // logs (container creation with the password in its environment) are part of the capture.
    iaas_testkit::wait::eventually(Duration::from_secs(60), || async {
        let (_, found) = call(addr, "GET", &instance, Some(&access), &Value::Null).await.unwrap();
        if found["status"] == "running" { Ok(()) } else { Err(found["status"].clone()) }
    })
    .await
    .unwrap();
    ok(addr, "DELETE", &instance, Some(&access), &Value::Null).await;
    ok(addr, "POST", "/v1/auth/logout-all", Some(&access), &Value::Null).await;
    // A replayed (revoked) refresh token: refused, and its refusal is logged without it.
    let (status, _) = call(addr, "POST", "/v1/auth/refresh", None, &refresh).await.unwrap();
    assert_eq!(status, 401);

    running.stop().await;
    let _ = std::fs::remove_dir_all(&data_dir);

    for token in tokens {
        // A JWT's signature is its secret part; a refresh token is secret whole.
        let signature = token.rsplit('.').next().unwrap().to_owned();
        secrets.push((format!("the token {token:.12}..."), token.clone()));
        if signature != token {
            secrets.push((format!("the signature of {token:.12}..."), signature));
        }
    }

    let log = captured.text();
    // The capture must have seen the flow, or finding nothing proves nothing.
    for expected in ["login", "request"] {
        assert!(log.contains(expected), "the captured log has no {expected:?} line:\n{log}");
    }
    let lines = log.lines().count();
    assert!(lines > 20, "only {lines} log lines were captured");
    let leaks: Vec<String> = secrets
        .iter()
        .filter(|(_, secret)| log.contains(secret.as_str()))
        .map(|(what, _)| what.clone())
        .collect();
    assert!(leaks.is_empty(), "secrets in the log: {leaks:?}");
    eprintln!(
        "logs: {lines} lines ({} bytes) at trace/debug checked against {} secrets: none found",
        log.len(),
        secrets.len()
    );
}
