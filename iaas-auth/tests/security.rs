//! Security checks of the auth service on real Redis, through its HTTP API:
//!
//! - refresh tokens are never stored in clear: after register, login and a refresh, every key
//!   under the test's prefix and every value of every type is read back with SCAN, and neither
//!   token (as sent, as its 32 raw bytes, or those bytes in hex or standard base64) nor the
//!   password appears anywhere;
//! - throttling of password checks: past the free failures one address is held back for one
//!   username (429 `too_many_attempts` with `Retry-After`, even with the right password) with
//!   a delay that doubles, while the owner logging in from elsewhere and other users from the
//!   same address are unaffected; a password change shares the throttle; registrations are
//!   throttled per address.

#![cfg(all(feature = "http", feature = "redis"))]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{Duration, Utc};
use http_body_util::BodyExt as _;
use iaas_auth::http::router;
use iaas_auth::{
    AuthConfig, AuthService, KeySet, PasswordConfig, RedisSessionConfig, RedisSessionStore,
    SigningKey,
};
use iaas_core::ManualClock;
use iaas_core::memory::MemoryUserRepository;
use iaas_testkit::isolation::key_prefix;
use iaas_testkit::wait::eventually;
use redis::AsyncCommands as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

const PASSWORD: &str = "correct horse battery staple";

/// The auth API on the shared Redis under a fresh prefix; returns the router and the prefix.
async fn app(test: &str, config: AuthConfig) -> (Router, String, iaas_testkit::Service) {
    let server = iaas_testkit::redis().await.unwrap();
    let prefix = key_prefix(test);
    let store = RedisSessionStore::connect(
        RedisSessionConfig::new(server.url()).with_key_prefix(prefix.clone()),
    )
    .await
    .unwrap();
    let auth = AuthService::new(
        Arc::new(MemoryUserRepository::new()),
        Arc::new(store),
        KeySet::new(SigningKey::ed25519_from_seed("ed-sec", &[21; 32]).unwrap()),
        &[22; 32],
        Arc::new(ManualClock::new(Utc::now())),
        config,
    )
    .unwrap();
    (router(auth), prefix, server)
}

fn fast_config() -> AuthConfig {
    let mut config = AuthConfig::default();
    config.passwords = PasswordConfig::insecure_fast_for_tests();
    config
}

fn post(uri: &str, body: &Value, client: [u8; 4]) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .extension(ConnectInfo(SocketAddr::from((client, 4000))))
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// Status, `Retry-After` (if any) and JSON body.
async fn call(app: &Router, request: Request<Body>) -> (StatusCode, Option<String>, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let retry_after =
        response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (status, retry_after, body)
}

async fn register(app: &Router, username: &str) {
    let creds = json!({"username": username, "password": PASSWORD});
    let (status, _, body) = call(app, post("/v1/auth/register", &creds, [10, 0, 0, 1])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn login(
    app: &Router,
    username: &str,
    password: &str,
    client: [u8; 4],
) -> (StatusCode, Option<String>, Value) {
    let creds = json!({"username": username, "password": password});
    call(app, post("/v1/auth/login", &creds, client)).await
}

/// Every key under `prefix` with the bytes of its value(s), whatever the Redis type.
async fn dump(url: &str, prefix: &str) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut dumped = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut conn).await.unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![conn.get(&key).await.unwrap()],
            "hash" => {
                let pairs: Vec<(Vec<u8>, Vec<u8>)> = conn.hgetall(&key).await.unwrap();
                pairs.into_iter().flat_map(|(field, value)| [field, value]).collect()
            }
            "set" => conn.smembers(&key).await.unwrap(),
            "zset" => conn.zrange(&key, 0, -1).await.unwrap(),
            "list" => conn.lrange(&key, 0, -1).await.unwrap(),
            // Gone between SCAN and TYPE (an expiry): nothing to read.
            "none" => Vec::new(),
            other => panic!(
                "key {} has a type this check cannot read: {other}",
                String::from_utf8_lossy(&key)
            ),
        };
        dumped.push((key, values));
    }
    dumped
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// The forms a leaked refresh token could take in storage.
fn forms_of(token: &str) -> Vec<(String, Vec<u8>)> {
    let raw = URL_SAFE_NO_PAD.decode(token).unwrap();
    assert_eq!(raw.len(), 32, "a refresh token is 32 random bytes");
    vec![
        ("the token".to_owned(), token.as_bytes().to_vec()),
        ("its raw bytes".to_owned(), raw.clone()),
        ("its bytes in hex".to_owned(), hex::encode(&raw).into_bytes()),
        ("its bytes in base64".to_owned(), STANDARD.encode(&raw).into_bytes()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_and_passwords_are_never_stored_in_clear() {
    let (app, prefix, server) = app("security_at_rest", fast_config()).await;
    register(&app, "ada").await;
    let (status, _, first) = login(&app, "ada", PASSWORD, [10, 0, 0, 1]).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let first_token = first["refresh_token"].as_str().unwrap().to_owned();
    let refresh = json!({"refresh_token": first_token});
    let (status, _, second) = call(&app, post("/v1/auth/refresh", &refresh, [10, 0, 0, 1])).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let second_token = second["refresh_token"].as_str().unwrap().to_owned();
    // A second login keeps a live session beside the rotated family.
    let (status, _, third) = login(&app, "ada", PASSWORD, [10, 0, 0, 2]).await;
    assert_eq!(status, StatusCode::OK, "{third}");
    let third_token = third["refresh_token"].as_str().unwrap().to_owned();

    let stored = dump(server.url(), &prefix).await;
    // The check is only worth something if the sessions are there to be read.
    assert!(stored.len() >= 2, "expected the sessions under {prefix}, found {} keys", stored.len());
    let mut needles = vec![("the password".to_owned(), PASSWORD.as_bytes().to_vec())];
    for token in [&first_token, &second_token, &third_token] {
        needles.extend(forms_of(token));
    }
    let mut bytes_read = 0;
    for (key, values) in &stored {
        for (what, needle) in &needles {
            let key_text = String::from_utf8_lossy(key);
            assert!(!contains(key, needle), "{what} appears in the key {key_text}");
            for value in values {
                bytes_read += value.len();
                assert!(!contains(value, needle), "{what} appears in the value of {key_text}");
            }
        }
    }
    eprintln!(
        "at rest: {} keys, {bytes_read} value bytes checked against {} forms of 3 refresh \
         tokens and the password: none found",
        stored.len(),
        needles.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_logins_hold_back_one_address_for_one_username_and_never_the_owner_elsewhere() {
    let mut config = fast_config();
    let first_delay = Duration::seconds(3);
    config.throttle.first_delay = first_delay;
    let free = config.throttle.free_failures;
    let (app, _prefix, _server) = app("security_throttle", config).await;
    register(&app, "victim").await;
    register(&app, "bystander").await;
    let attacker = [10, 9, 9, 9];

    for attempt in 1..=free {
        let (status, _, body) = login(&app, "victim", "not the password", attacker).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {attempt}: {body}");
    }
    // Past the free failures the attacker's next try waits, the right password included:
    // refused before the password is looked at.
    for password in ["not the password", PASSWORD] {
        let (status, retry_after, body) = login(&app, "victim", password, attacker).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(body["error"]["code"], "too_many_attempts", "{body}");
        let secs: i64 = retry_after.expect("a 429 carries Retry-After").parse().unwrap();
        assert!((1..=first_delay.num_seconds()).contains(&secs), "Retry-After {secs}s");
    }
    // The real owner, from anywhere else, is not locked out by what the attacker did.
    let (status, _, body) = login(&app, "victim", PASSWORD, [10, 0, 0, 7]).await;
    assert_eq!(status, StatusCode::OK, "the owner is locked out by someone else: {body}");
    // Another user is unaffected, even from the attacker's address.
    let (status, _, body) = login(&app, "bystander", PASSWORD, attacker).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // When the delay has passed the attacker may try again; the next failure doubles it.
    let retried = eventually(StdDuration::from_secs(10), || {
        let app = app.clone();
        async move {
            let (status, _, _) = login(&app, "victim", "still not it", attacker).await;
            if status == StatusCode::UNAUTHORIZED { Ok(()) } else { Err(status) }
        }
    })
    .await;
    retried.unwrap_or_else(|err| panic!("the delay never ended: {err}"));
    let (status, retry_after, _) = login(&app, "victim", PASSWORD, attacker).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let secs: i64 = retry_after.unwrap().parse().unwrap();
    let doubled = 2 * first_delay.num_seconds();
    assert!((first_delay.num_seconds()..=doubled).contains(&secs), "Retry-After {secs}s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_current_passwords_on_a_password_change_are_throttled_like_logins() {
    // A stolen access token must not be a faster way to guess the password than a login.
    let mut config = fast_config();
    config.throttle.first_delay = Duration::seconds(30);
    let (app, _prefix, _server) = app("security_password_change", config).await;
    register(&app, "owner").await;
    let (_, _, tokens) = login(&app, "owner", PASSWORD, [10, 0, 0, 1]).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let thief = [10, 6, 6, 6];
    let change = |current: String| {
        let body = json!({"current_password": current, "new_password": "a brand new passphrase"});
        let mut request = post("/v1/auth/password", &body, thief);
        *request.method_mut() = Method::PUT;
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, format!("Bearer {access}").parse().unwrap());
        request
    };
    let mut answers = Vec::new();
    for guess in 0..20 {
        let (status, _, body) = call(&app, change(format!("guess number {guess}"))).await;
        answers.push((status, body["error"]["code"].as_str().unwrap_or_default().to_owned()));
    }
    let refused = answers.iter().filter(|(s, _)| *s == StatusCode::UNAUTHORIZED).count();
    let throttled = answers
        .iter()
        .filter(|(s, code)| *s == StatusCode::TOO_MANY_REQUESTS && code == "too_many_attempts")
        .count();
    assert_eq!((refused, throttled), (5, 15), "{answers:?}");
    // The right password is held back too while the delay runs.
    let (status, _, _) = call(&app, change(PASSWORD.to_owned())).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // The owner logging in from home is unaffected.
    let (status, _, body) = login(&app, "owner", PASSWORD, [10, 0, 0, 1]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_throttled_per_client_address() {
    let mut config = fast_config();
    config.throttle.max_registrations_per_client = 3;
    let (app, _prefix, _server) = app("security_register", config).await;
    let burst = [10, 7, 7, 7];
    let mut statuses = Vec::new();
    for n in 0..5 {
        let creds = json!({"username": format!("burst{n}"), "password": PASSWORD});
        let (status, retry_after, body) =
            call(&app, post("/v1/auth/register", &creds, burst)).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(body["error"]["code"], "too_many_attempts", "{body}");
            assert!(retry_after.is_some(), "a 429 carries Retry-After");
        }
        statuses.push(status);
    }
    let created = StatusCode::CREATED;
    let throttled = StatusCode::TOO_MANY_REQUESTS;
    assert_eq!(statuses, [created, created, created, throttled, throttled]);
    // Another address registers freely.
    let creds = json!({"username": "elsewhere", "password": PASSWORD});
    let (status, _, body) = call(&app, post("/v1/auth/register", &creds, [10, 0, 0, 2])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}
