//! The table of hostile requests against the whole platform, started in this process on
//! embedded defaults: each row is sent as raw bytes over TCP (so bodies may be invalid UTF-8,
//! huge or mislabelled) and must be refused with its 4xx status and a JSON error body
//! `{"error":{"code","message"}}` with the expected code. Afterwards nothing changed: both
//! users' instances and event logs read back as before, and no hostile username was registered.
//!
//! Another user's instance must be answered exactly like a missing one (404, not 403), so ids
//! cannot be probed; the victim's instance runs a real container, so a broken ownership check
//! would show (a stop would be accepted, info would answer 200, a delete would change it).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Served;
use iaas_auth::{Claims, KeySet, SigningKey, TokenConfig, TokenIssuer};
use iaas_core::{SystemClock, UserId};
use iaas_platform::HttpLimits;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The request timeout of the platform under test: short, so a slow body is cut quickly, yet
/// far above what any other request here takes (argon2 in a debug build included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The bytes of one HTTP/1.1 request; `Content-Length` is added unless a header names it.
fn raw(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: platform\r\nConnection: close\r\n");
    // An empty value only stops the automatic `Content-Length` (for chunked bodies).
    for (name, value) in headers.iter().filter(|(_, value)| !value.is_empty()) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-length")) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Sends `request` and reads the answer. The request is written while the answer is read, so
/// a server that refuses a huge body early is heard even if it closes before reading it all;
/// the connection stays open for writing until the answer ended, so a short body stays
/// unfinished (a slow client) rather than cut.
async fn exchange(addr: &str, request: Vec<u8>) -> (u16, String) {
    let (mut reader, mut writer) = TcpStream::connect(addr).await.unwrap().into_split();
    let writing = tokio::spawn(async move {
        // The server may close mid-body after answering (413): that is not a failure.
        let _ = writer.write_all(&request).await;
        writer
    });
    let mut response = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), reader.read(&mut chunk)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => response.extend_from_slice(&chunk[..n]),
            // A reset after the answer arrived (the unread rest of a huge body) ends the read.
            Ok(Err(_)) if !response.is_empty() => break,
            Ok(Err(err)) => panic!("reading the answer: {err}"),
            Err(_) => {
                panic!("no complete answer within 20 s: {}", String::from_utf8_lossy(&response))
            }
        }
    }
    drop(writing.await);
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_owned())
}

/// A JSON request with `token` (if any).
fn json_request(method: &str, path: &str, token: Option<&str>, body: &Value) -> Vec<u8> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    raw(method, path, &headers, body.to_string().as_bytes())
}

async fn call(addr: &str, method: &str, path: &str, token: Option<&str>, body: &Value) -> Value {
    let (status, text) = exchange(addr, json_request(method, path, token, body)).await;
    assert!((200..300).contains(&status), "{method} {path}: {status} {text}");
    if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() }
}

/// Registers and logs in `username`; returns its id and access token.
async fn account(addr: &str, username: &str) -> (String, String) {
    let credentials = json!({"username": username, "password": "correct horse battery staple"});
    let user = call(addr, "POST", "/v1/auth/register", None, &credentials).await;
    let tokens = call(addr, "POST", "/v1/auth/login", None, &credentials).await;
    (user["id"].as_str().unwrap().to_owned(), tokens["access_token"].as_str().unwrap().to_owned())
}

/// Unpadded base64url, for hand-made token parts.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Claims the platform would accept for `user`, but for the times.
fn claims(user: &str, issued: i64, expires: i64) -> Claims {
    let config = TokenConfig::default();
    Claims {
        sub: user.to_owned(),
        iss: config.issuer,
        aud: config.audience,
        exp: expires,
        iat: issued,
        nbf: issued,
        jti: "hostile-1".to_owned(),
        scope: "instances:read instances:write events:read".to_owned(),
        sid: None,
    }
}

/// One row of the table.
struct Row {
    name: String,
    request: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn row(name: impl Into<String>, request: Vec<u8>, status: u16, code: &'static str) -> Row {
    Row { name: name.into(), request, status, code }
}

/// What a user can see of the state: their instances and their event log.
async fn snapshot(addr: &str, token: &str) -> (Value, Value) {
    let instances = call(addr, "GET", "/v1/instances", Some(token), &Value::Null).await;
    let events = call(addr, "GET", "/v1/events?limit=500", Some(token), &Value::Null).await;
    (instances, events)
}

#[tokio::test]
async fn hostile_requests_get_4xx_json_errors_and_change_nothing() {
    let limits = HttpLimits::new(REQUEST_TIMEOUT, HttpLimits::DEFAULT_BODY_LIMIT);
    let running = Served::start_embedded("iaas-hostile", limits).await;
    let addr = running.addr.clone();
    let (alice_id, alice) = account(&addr, "alice").await;
    let (bob_id, bob) = account(&addr, "bob").await;

    // Alice's instance runs a real container, so a request of Bob's that got through would act.
    let spec = common::sleeper("victim");
    let created = call(&addr, "POST", "/v1/instances", Some(&alice), &spec).await;
    let id = created["instance"]["id"].as_str().unwrap().to_owned();
    let instance = format!("/v1/instances/{id}");
    iaas_testkit::wait::eventually(Duration::from_secs(30), || async {
        let found = call(&addr, "GET", &instance, Some(&alice), &Value::Null).await;
        if found["status"] == "running" { Ok(()) } else { Err(found["status"].clone()) }
    })
    .await
    .unwrap();
    // Its `created` and `started` events are indexed before the state is taken.
    iaas_testkit::wait::eventually(Duration::from_secs(10), || async {
        let (_, events) = snapshot(&addr, &alice).await;
        let n = events["entries"].as_array().map_or(0, Vec::len);
        if n >= 2 { Ok(()) } else { Err(n) }
    })
    .await
    .unwrap();
    let alice_before = snapshot(&addr, &alice).await;
    let bob_before = snapshot(&addr, &bob).await;

    // Tokens that must all be refused.
    let issuer = running.platform.auth.issuer();
    let now = i64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
    )
    .unwrap();
    let expired = issuer.sign_claims(&claims(&alice_id, now - 7200, now - 3600)).unwrap();
    let kid =
        call(&addr, "GET", "/.well-known/jwks.json", None, &Value::Null).await["keys"][0]["kid"]
            .as_str()
            .unwrap()
            .to_owned();
    let forged_key = |key: SigningKey| {
        TokenIssuer::new(KeySet::new(key), TokenConfig::default(), Arc::new(SystemClock))
            .issue(alice_id.parse::<UserId>().unwrap(), &["instances:read".to_owned()])
            .unwrap()
            .token
    };
    let hs256 = forged_key(SigningKey::hs256(kid.clone(), &[7u8; 32]).unwrap());
    let other_key = forged_key(SigningKey::generate_ed25519(kid.clone()).unwrap());
    let payload = serde_json::to_vec(&claims(&alice_id, now, now + 600)).unwrap();
    let alg_none = format!(
        "{}.{}.",
        b64url(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#).as_bytes()),
        b64url(&payload)
    );
    // Alice's own token with Bob's id swapped into the payload.
    let parts: Vec<&str> = alice.split('.').collect();
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        b64url(&serde_json::to_vec(&claims(&bob_id, now, now + 600)).unwrap()),
        parts[2]
    );
    let huge_token = "a".repeat(16 * 1024);

    let json_ct = ("Content-Type", "application/json");
    let bob_auth = format!("Bearer {bob}");
    let alice_auth = format!("Bearer {alice}");
    let as_bob =
        |method: &str, path: &str| raw(method, path, &[("Authorization", bob_auth.as_str())], b"");
    let as_alice = |method: &str, path: &str| {
        raw(method, path, &[("Authorization", alice_auth.as_str())], b"")
    };
    let create = |body: &[u8]| {
        raw("POST", "/v1/instances", &[json_ct, ("Authorization", alice_auth.as_str())], body)
    };
    let register = |body: &[u8]| raw("POST", "/v1/auth/register", &[json_ct], body);
    let with_token = |path: &str, value: &str| raw("GET", path, &[("Authorization", value)], b"");
    let deep = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
    let huge_site =
        json!({"name": "big", "spec": {"kind": "nginx", "site_config": "x".repeat(1 << 20)}})
            .to_string()
            .into_bytes();
    let huge_user =
        json!({"username": "big", "password": "p".repeat(1 << 20)}).to_string().into_bytes();
    // Over the routers' own 64 KiB limit, under the platform's 1 MiB one.
    let big_site =
        json!({"name": "big", "spec": {"kind": "nginx", "site_config": "x".repeat(100 << 10)}})
            .to_string()
            .into_bytes();
    let big_user =
        json!({"username": "big", "password": "p".repeat(100 << 10)}).to_string().into_bytes();
    let chunked = |path: &str, body: &[u8]| {
        let mut bytes = format!("{:x}\r\n", body.len()).into_bytes();
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(b"\r\n0\r\n\r\n");
        raw(
            "POST",
            path,
            &[
                json_ct,
                ("Authorization", alice_auth.as_str()),
                ("Transfer-Encoding", "chunked"),
                ("Content-Length", ""),
            ],
            &bytes,
        )
    };

    let mut rows = vec![
        // Another user's instance: 404, exactly like a missing one.
        row("bob reads alice's instance", as_bob("GET", &instance), 404, "not_found"),
        row("bob starts it", as_bob("POST", &format!("{instance}/start")), 404, "not_found"),
        row("bob stops it", as_bob("POST", &format!("{instance}/stop")), 404, "not_found"),
        row("bob restarts it", as_bob("POST", &format!("{instance}/restart")), 404, "not_found"),
        row("bob deletes it", as_bob("DELETE", &format!("{instance}?purge=true")), 404, "not_found"),
        row("bob reads its info", as_bob("GET", &format!("{instance}/info")), 404, "not_found"),
        row("bob reads its stats", as_bob("GET", &format!("{instance}/stats")), 404, "not_found"),
        row(
            "bob reads its replication",
            as_bob("GET", &format!("{instance}/replication")),
            404,
            "not_found",
        ),
        row(
            "a missing id answers the same",
            as_bob("GET", "/v1/instances/0190f3a8-7a4e-7c4f-9a51-3f6c2b1d9e01"),
            404,
            "not_found",
        ),
        // Path traversal and control characters.
        row("traversal in the id", as_alice("GET", "/v1/instances/..%2F..%2Fetc%2Fpasswd"), 404, "not_found"),
        row("dot segments in the path", as_alice("GET", "/v1/instances/../../etc/passwd"), 404, "not_found"),
        row("a NUL in the id", as_alice("GET", "/v1/instances/%00"), 404, "not_found"),
        row(
            "traversal in an instance name",
            create(br#"{"name":"../../etc/passwd","spec":{"kind":"nginx"}}"#),
            422,
            "invalid",
        ),
        row(
            "a NUL in an instance name",
            create(br#"{"name":"db\u0000x","spec":{"kind":"nginx"}}"#),
            422,
            "invalid",
        ),
        row(
            "CR LF in an instance name",
            create(br#"{"name":"db\r\nx-injected: 1","spec":{"kind":"nginx"}}"#),
            422,
            "invalid",
        ),
        row(
            "traversal in a username",
            register(br#"{"username":"../../root","password":"correct horse battery"}"#),
            400,
            "invalid_username",
        ),
        row(
            "a control character in a username",
            register(br#"{"username":"ad\u0007min","password":"correct horse battery"}"#),
            400,
            "invalid_username",
        ),
        // Kinds and fields the platform does not know.
        row("an unknown kind", create(br#"{"name":"vm1","spec":{"kind":"vm"}}"#), 400, "invalid_request"),
        row("kind k8s", create(br#"{"name":"k1","spec":{"kind":"k8s"}}"#), 422, "unsupported"),
        row(
            "an unknown top-level field",
            create(br#"{"name":"x1","spec":{"kind":"nginx"},"privileged":true}"#),
            400,
            "invalid_request",
        ),
        row(
            "a host mount smuggled into the spec",
            create(br#"{"name":"x2","spec":{"kind":"docker","image":"busybox","volumes":["/:/host"]}}"#),
            400,
            "invalid_request",
        ),
        // Huge and deeply nested bodies.
        row("a 1 MiB instance body", create(&huge_site), 413, "payload_too_large"),
        row("a 1 MiB register body", register(&huge_user), 413, "payload_too_large"),
        row("a 100 KiB instance body", create(&big_site), 413, "payload_too_large"),
        row("a 100 KiB register body", register(&big_user), 413, "payload_too_large"),
        row("a chunked 100 KiB instance body", chunked("/v1/instances", &big_site), 413, "payload_too_large"),
        row("a chunked 100 KiB register body", chunked("/v1/auth/register", &big_user), 413, "payload_too_large"),
        row(
            "a declared 10 GB login body",
            raw("POST", "/v1/auth/login", &[json_ct, ("Content-Length", "10000000000")], b"{}"),
            413,
            "payload_too_large",
        ),
        row("JSON nested 5000 deep (register)", register(&deep(5000)), 400, "invalid_request"),
        row("JSON nested 5000 deep (instances)", create(&deep(5000)), 400, "invalid_request"),
        // Slow bodies: 100 bytes announced, 10 sent, the connection held open.
        row(
            "a slow register body",
            raw("POST", "/v1/auth/register", &[json_ct, ("Content-Length", "100")], b"{\"username"),
            408,
            "request_timeout",
        ),
        row(
            "a slow instance body",
            raw(
                "POST",
                "/v1/instances",
                &[json_ct, ("Authorization", alice_auth.as_str()), ("Content-Length", "100")],
                b"{\"name\":\"s",
            ),
            408,
            "request_timeout",
        ),
        // Invalid UTF-8.
        row(
            "invalid UTF-8 in a register body",
            register(b"{\"username\":\"\xff\xfe\",\"password\":\"correct horse battery\"}"),
            400,
            "invalid_request",
        ),
        row(
            "invalid UTF-8 in an instance body",
            create(b"{\"name\":\"\xc3\x28\",\"spec\":{\"kind\":\"nginx\"}}"),
            400,
            "invalid_request",
        ),
        // Wrong content types.
        row(
            "register as text/plain",
            raw("POST", "/v1/auth/register", &[("Content-Type", "text/plain")], br#"{"username":"carol","password":"correct horse battery"}"#),
            415,
            "unsupported_media_type",
        ),
        row(
            "login as a form",
            raw("POST", "/v1/auth/login", &[("Content-Type", "application/x-www-form-urlencoded")], b"username=alice&password=x"),
            415,
            "unsupported_media_type",
        ),
        row(
            "an instance without a content type",
            raw("POST", "/v1/instances", &[("Authorization", alice_auth.as_str())], br#"{"name":"x3","spec":{"kind":"nginx"}}"#),
            415,
            "unsupported_media_type",
        ),
        row(
            "an instance as application/json-patch+json",
            raw("POST", "/v1/instances", &[("Content-Type", "application/json-patch+json"), ("Authorization", alice_auth.as_str())], br#"{"name":"x4","spec":{"kind":"nginx"}}"#),
            415,
            "unsupported_media_type",
        ),
        // Missing, garbage, expired and forged tokens, on a provisioning and an auth route.
        row("no token (instances)", raw("GET", "/v1/instances", &[], b""), 401, "unauthenticated"),
        row("no token (sessions)", raw("GET", "/v1/auth/sessions", &[], b""), 401, "missing_token"),
        row("no token (events)", raw("GET", "/v1/events", &[], b""), 401, "unauthenticated"),
        row("a Basic credential", with_token("/v1/instances", "Basic YWxpY2U6eA=="), 401, "missing_token"),
        row("an empty bearer", with_token("/v1/instances", "Bearer "), 401, "missing_token"),
        row("a garbage token", with_token("/v1/instances", "Bearer garbage"), 401, "token_malformed"),
        row("a garbage token (sessions)", with_token("/v1/auth/sessions", "Bearer a.b.c"), 401, "token_malformed"),
        row("a 16 KiB token", with_token("/v1/instances", &format!("Bearer {huge_token}")), 401, "token_malformed"),
        row("an expired token", with_token("/v1/instances", &format!("Bearer {expired}")), 401, "token_expired"),
        row("an expired token (sessions)", with_token("/v1/auth/sessions", &format!("Bearer {expired}")), 401, "token_expired"),
        row("alg none", with_token("/v1/instances", &format!("Bearer {alg_none}")), 401, "token_algorithm_not_allowed"),
        row("alg none (sessions)", with_token("/v1/auth/sessions", &format!("Bearer {alg_none}")), 401, "token_algorithm_not_allowed"),
        row("HS256 where EdDSA is pinned", with_token("/v1/instances", &format!("Bearer {hs256}")), 401, "token_algorithm_mismatch"),
        row("HS256 where EdDSA is pinned (events)", with_token("/v1/events", &format!("Bearer {hs256}")), 401, "token_algorithm_mismatch"),
        row("another key with the same kid", with_token("/v1/instances", &format!("Bearer {other_key}")), 401, "token_bad_signature"),
        row("a payload swapped to another user", with_token("/v1/instances", &format!("Bearer {swapped}")), 401, "token_bad_signature"),
        row(
            "a token in the query of a plain request",
            raw("GET", &format!("/v1/instances?access_token={alice}"), &[], b""),
            401,
            "unauthenticated",
        ),
        // Injection into the event search filters.
        row("SQL in type", as_bob("GET", "/v1/events?type=postgres%27%20OR%20%271%27%3D%271"), 400, "invalid_query"),
        row("SQL in instance", as_bob("GET", "/v1/events?instance=1%20OR%201%3D1"), 400, "invalid_query"),
        row("SQL in action", as_bob("GET", "/v1/events?action=started%3BDROP%20TABLE%20entries"), 400, "invalid_query"),
        row("SQL in from", as_bob("GET", "/v1/events?from=2026-01-01%27%20OR%201%3D1--"), 400, "invalid_query"),
        row("SQL in cursor", as_bob("GET", "/v1/events?cursor=1_%27%20OR%201%3D1--"), 400, "invalid_query"),
        row("a 300-byte q", as_bob("GET", &format!("/v1/events?q={}", "a".repeat(300))), 400, "invalid_query"),
        row("from after to", as_bob("GET", "/v1/events?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z"), 400, "invalid_query"),
        // Negative and huge pagination.
        row("limit -1", as_bob("GET", "/v1/events?limit=-1"), 400, "invalid_query"),
        row("limit 0", as_bob("GET", "/v1/events?limit=0"), 400, "invalid_query"),
        row("limit 501", as_bob("GET", "/v1/events?limit=501"), 400, "invalid_query"),
        row("limit 2^64", as_bob("GET", "/v1/events?limit=18446744073709551616"), 400, "invalid_query"),
        row("limit 1e3", as_bob("GET", "/v1/events?limit=1e3"), 400, "invalid_query"),
        row("bucket 0", as_bob("GET", "/v1/events/stats?bucket=0"), 400, "invalid_query"),
        row("bucket -1", as_bob("GET", "/v1/events/stats?bucket=-1"), 400, "invalid_query"),
        row("bucket 2^64", as_bob("GET", "/v1/events/stats?bucket=18446744073709551616"), 400, "invalid_query"),
        row(
            "one-second buckets over 56 years",
            as_bob("GET", "/v1/events/stats?bucket=1&from=1970-01-01T00:00:00Z&to=2026-01-01T00:00:00Z"),
            400,
            "invalid_query",
        ),
    ];
    // A second register of an existing user must not change it either.
    rows.push(row(
        "registering alice again",
        register(br#"{"username":"ALICE","password":"another horse battery"}"#),
        409,
        "username_taken",
    ));

    let mut failures = Vec::new();
    for row in &rows {
        let (status, body) = exchange(&addr, row.request.clone()).await;
        let parsed = serde_json::from_str::<Value>(&body).ok();
        let code = parsed.as_ref().and_then(|json| json["error"]["code"].as_str());
        let has_message = parsed.as_ref().is_some_and(|json| json["error"]["message"].is_string());
        if status != row.status || code != Some(row.code) || !has_message {
            let sent =
                String::from_utf8_lossy(&row.request[..row.request.len().min(400)]).into_owned();
            failures.push(format!(
                "{}: expected {} {:?}, got {status} {body}\n  sent: {sent:?}",
                row.name, row.status, row.code
            ));
        }
    }

    // Text searches that look like query syntax are words to match, and only ever the caller's.
    for q in [
        "%27%20OR%201%3D1%20--",
        "*%3A*",
        "%7B%22match_all%22%3A%7B%7D%7D",
        "docker%20OR%20NOT%20x",
        "NEAR(docker%20started)",
    ] {
        let path = format!("/v1/events?q={q}");
        let (status, body) = exchange(&addr, as_bob("GET", &path)).await;
        let entries = serde_json::from_str::<Value>(&body).ok().map(|json| json["entries"].clone());
        if status != 200 || entries != Some(json!([])) {
            failures
                .push(format!("bob GET {path}: expected 200 with no entries, got {status} {body}"));
        }
        let (status, body) = exchange(&addr, as_alice("GET", &path)).await;
        if status != 200 {
            failures.push(format!("alice GET {path}: expected 200, got {status} {body}"));
        }
    }
    let (status, body) = exchange(&addr, as_bob("GET", &format!("/v1/events?instance={id}"))).await;
    if status != 200 || !body.contains(r#""entries":[]"#) {
        failures.push(format!(
            "bob searching alice's instance: expected 200 and nothing, got {status} {body}"
        ));
    }

    // Nothing changed: the instances and event logs read back as before, no account was made.
    let alice_after = snapshot(&addr, &alice).await;
    let bob_after = snapshot(&addr, &bob).await;
    let mut created = Vec::new();
    for username in ["../../root", "ad\u{7}min", "carol", "big"] {
        if running.platform.repos.users.find_user_by_username(username).await.unwrap().is_some() {
            created.push(username);
        }
    }
    // Clean up before judging, so a failing row leaves no container behind.
    common::delete_and_wait(&addr, &instance, &alice).await;
    running.stop().await;

    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    assert_eq!(alice_after, alice_before, "alice's state changed");
    assert_eq!(bob_after, bob_before, "bob's state changed");
    assert!(created.is_empty(), "hostile registrations created {created:?}");
}

/// The host-port policy as the platform wires it: with a range that covers every unprivileged
/// port, the ports of the platform's own listener and backends are still refused, with 403
/// `port_not_allowed`, and nothing is stored; a port in the range that is none of them is
/// accepted.
#[tokio::test]
async fn tenants_cannot_publish_on_the_platforms_own_ports() {
    let data_dir = iaas_testkit::isolation::temp_dir("iaas-own-ports");
    // The configured listener (the test serves on a port of its own: what matters is what the
    // policy is built from; `Config::own_ports` has a unit test for every backend's URL).
    let mut settings = common::embedded(&data_dir);
    settings.retain(|(key, _)| *key != iaas_platform::LISTEN_VAR);
    settings.extend([
        (iaas_platform::LISTEN_VAR, "127.0.0.1:24680".to_owned()),
        (iaas_platform::HOST_PORT_RANGE_VAR, "1024-65535".to_owned()),
    ]);
    let running = Served::start(common::config(&settings), HttpLimits::default()).await;
    let addr = running.addr.clone();
    let (_, token) = account(&addr, "mallory").await;
    let mut failures = Vec::new();
    for (what, port) in [
        ("the platform's own listener", 24_680),
        ("Redis", 6379),
        ("PostgreSQL", 5432),
        ("Kafka", 9092),
    ] {
        let mut spec = common::sleeper("squatter");
        spec["spec"]["ports"] = json!([{"container": 80, "host": port}]);
        let (status, text) =
            exchange(&addr, json_request("POST", "/v1/instances", Some(&token), &spec)).await;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status != 403 || body["error"]["code"] != "port_not_allowed" {
            failures.push(format!("{what} ({port}): {status} {text}"));
        }
    }
    let stored = call(&addr, "GET", "/v1/instances", Some(&token), &Value::Null).await;
    running.stop().await;
    std::fs::remove_dir_all(&data_dir).unwrap();
    assert!(failures.is_empty(), "accepted: {failures:#?}");
    assert_eq!(stored["instances"], json!([]), "nothing stored for a refused port");
}

/// 20 creates of one user at once against a quota of 5 instances, through the whole platform
/// on its embedded store and the real engine: exactly 5 are accepted and exist, the 15 others
/// are refused with 403 `quota_exceeded`.
#[tokio::test]
async fn concurrent_creates_never_overshoot_a_quota() {
    let data_dir = iaas_testkit::isolation::temp_dir("iaas-quota-race");
    let mut settings = common::embedded(&data_dir);
    settings.push((iaas_platform::QUOTA_INSTANCES_VAR, "5".to_owned()));
    let running = Served::start(common::config(&settings), HttpLimits::default()).await;
    let addr = running.addr.clone();
    let (_, token) = account(&addr, "greedy").await;
    let creates: Vec<_> = (0..20)
        .map(|n| {
            let (addr, token) = (addr.clone(), token.clone());
            tokio::spawn(async move {
                let spec = common::sleeper(&format!("worker-{n}"));
                exchange(&addr, json_request("POST", "/v1/instances", Some(&token), &spec)).await
            })
        })
        .collect();
    let mut answers = std::collections::BTreeMap::<u16, usize>::new();
    let mut refusals = Vec::new();
    for create in creates {
        let (status, text) = create.await.unwrap();
        *answers.entry(status).or_default() += 1;
        if status == 403 {
            refusals.push(serde_json::from_str::<Value>(&text).unwrap());
        }
    }
    // Deleted once provisioned: a delete racing a provisioning is swept by the watcher's next
    // reconciliation, which a platform stopped right away would not run (leaving containers).
    let instances = iaas_testkit::wait::eventually(Duration::from_secs(60), || async {
        let listed = call(&addr, "GET", "/v1/instances", Some(&token), &Value::Null).await;
        let instances = listed["instances"].as_array().cloned().unwrap_or_default();
        let settled = instances.iter().all(|i| i["status"] == "running" || i["status"] == "failed");
        if settled { Ok(instances) } else { Err(listed) }
    })
    .await
    .unwrap();
    for instance in &instances {
        let path = format!("/v1/instances/{}?purge=true", instance["id"].as_str().unwrap());
        call(&addr, "DELETE", &path, Some(&token), &Value::Null).await;
    }
    running.stop().await;
    std::fs::remove_dir_all(&data_dir).unwrap();
    assert_eq!(answers, std::collections::BTreeMap::from([(202, 5), (403, 15)]));
    assert_eq!(instances.len(), 5);
    for refusal in refusals {
        assert_eq!(refusal["error"]["code"], "quota_exceeded", "{refusal}");
        assert_eq!(refusal["error"]["quota"]["limit"], "instances", "{refusal}");
    }
}

/// A JSON body of exactly `size` bytes: `{"username":"...","pad":"xxx..."}` padded to size.
fn padded(prefix: &str, size: usize) -> Vec<u8> {
    let head = format!("{{{prefix},\"pad\":\"");
    let tail = "\"}";
    let pad = size - head.len() - tail.len();
    format!("{head}{}{tail}", "x".repeat(pad)).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_limit_setting_holds_for_every_route_at_the_byte() {
    // Raised well above the routers' own 64 KiB default: the setting, not a router, decides
    // (and a body of megabytes within it is read and judged like a small one).
    const LIMIT: usize = 4 * 1024 * 1024;
    let data_dir = iaas_testkit::isolation::temp_dir("iaas-body-limit");
    let settings = common::embedded(&data_dir);
    let running =
        Served::start(common::config(&settings), HttpLimits::new(REQUEST_TIMEOUT, LIMIT)).await;
    let addr = running.addr.clone();
    let (_, token) = account(&addr, "bodies").await;
    let json_ct = ("Content-Type", "application/json");
    let auth = format!("Bearer {token}");
    let mut failures = Vec::new();
    for (what, path, prefix, headers) in [
        ("register", "/v1/auth/register", r#""username":"padded""#, vec![json_ct]),
        (
            "create",
            "/v1/instances",
            r#""name":"padded","spec":{"kind":"nginx"}"#,
            vec![json_ct, ("Authorization", auth.as_str())],
        ),
    ] {
        for (size, too_large) in [(2_000_000, false), (LIMIT, false), (LIMIT + 1, true)] {
            let (status, text) =
                exchange(&addr, raw("POST", path, &headers, &padded(prefix, size))).await;
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let refused = status == 413 && body["error"]["code"] == "payload_too_large";
            // At the limit the body is read and judged on its content (an unknown field: 400).
            if refused != too_large || (!too_large && status != 400) {
                failures.push(format!("{what} with {size} bytes: {status} {text}"));
            }
        }
    }
    running.stop().await;
    std::fs::remove_dir_all(&data_dir).ok();
    assert!(failures.is_empty(), "{failures:#?}");
}
