//! The HTTP API on real Redis: every flow, the bad-input table (exact status and code), 50
//! concurrent refreshes, and Redis going away and coming back.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{Duration, Utc};
use http_body_util::BodyExt as _;
use iaas_auth::http::{AuthUser, router};
use iaas_auth::{
    AuthConfig, AuthService, Claims, KeySet, PasswordConfig, RedisSessionConfig, RedisSessionStore,
    SessionStore, SigningKey, TokenConfig, TokenIssuer,
};
use iaas_core::memory::MemoryUserRepository;
use iaas_core::{Clock, ManualClock, UserId};
use iaas_testkit::isolation::key_prefix;
use iaas_testkit::wait::eventually;
use serde_json::{Value, json};
use tower::ServiceExt as _;

const PASSWORD: &str = "correct horse battery";

fn config(grace_secs: i64) -> AuthConfig {
    let mut config = AuthConfig::default();
    config.passwords = PasswordConfig::insecure_fast_for_tests();
    config.sessions.reuse_grace = Duration::seconds(grace_secs);
    config.default_scopes = vec!["instances:read".into()];
    config
}

fn service(store: Arc<dyn SessionStore>, clock: Arc<ManualClock>, grace_secs: i64) -> AuthService {
    AuthService::new(
        Arc::new(MemoryUserRepository::new()),
        store,
        KeySet::new(SigningKey::ed25519_from_seed("ed-1", &[11; 32]).unwrap()),
        &[12; 32],
        clock,
        config(grace_secs),
    )
    .unwrap()
}

async fn redis_service(
    test: &str,
    grace_secs: i64,
) -> (AuthService, Arc<ManualClock>, iaas_testkit::Service) {
    let server = iaas_testkit::redis().await.unwrap();
    let store = RedisSessionStore::connect(
        RedisSessionConfig::new(server.url()).with_key_prefix(key_prefix(test)),
    )
    .await
    .unwrap();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    (service(Arc::new(store), clock.clone(), grace_secs), clock, server)
}

fn json_request(method: Method, uri: &str, body: &Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .extension(ConnectInfo(SocketAddr::from(([10, 0, 0, 1], 4000))))
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn bearer(method: Method, uri: &str, token: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

async fn call(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (status, body)
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

async fn register_and_login(app: &Router) -> Value {
    let creds = json!({"username": "ada", "password": PASSWORD});
    let (status, body) = call(app, json_request(Method::POST, "/v1/auth/register", &creds)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, pair) = call(app, json_request(Method::POST, "/v1/auth/login", &creds)).await;
    assert_eq!(status, StatusCode::OK, "{pair}");
    pair
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_works_over_http() {
    let (auth, clock, _server) = redis_service("http_flow", 5).await;
    let app = router(auth);
    let pair = register_and_login(&app).await;
    assert_eq!(pair["token_type"], "Bearer");
    assert_eq!(pair["expires_in"], 900);
    let access = pair["access_token"].as_str().unwrap();

    let (status, sessions) = call(&app, bearer(Method::GET, "/v1/auth/sessions", access)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sessions["sessions"][0]["client"], "10.0.0.1");

    let refresh = json!({"refresh_token": pair["refresh_token"]});
    let (status, next) = call(&app, json_request(Method::POST, "/v1/auth/refresh", &refresh)).await;
    assert_eq!(status, StatusCode::OK, "{next}");
    assert_ne!(next["refresh_token"], pair["refresh_token"]);

    // Reuse of the rotated token outside the grace window: 401, and its sibling is dead too.
    clock.advance(Duration::seconds(10));
    let (status, body) = call(&app, json_request(Method::POST, "/v1/auth/refresh", &refresh)).await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "refresh_token_reused"));
    let sibling = json!({"refresh_token": next["refresh_token"]});
    let (status, body) = call(&app, json_request(Method::POST, "/v1/auth/refresh", &sibling)).await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "refresh_token_invalid"));

    // Password change: every session is revoked, refresh is 401.
    let creds = json!({"username": "ada", "password": PASSWORD});
    let (_, pair) = call(&app, json_request(Method::POST, "/v1/auth/login", &creds)).await;
    clock.advance(Duration::seconds(1));
    let change = json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"});
    let mut request = json_request(Method::PUT, "/v1/auth/password", &change);
    request.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {}", pair["access_token"].as_str().unwrap()).parse().unwrap(),
    );
    let (status, body) = call(&app, request).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let refresh = json!({"refresh_token": pair["refresh_token"]});
    let (status, body) = call(&app, json_request(Method::POST, "/v1/auth/refresh", &refresh)).await;
    // The session was deleted by the revocation, so the token is simply no longer known.
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "refresh_token_invalid"));

    // Logout and logout-all.
    clock.advance(Duration::seconds(1));
    let creds = json!({"username": "ada", "password": "a brand new passphrase"});
    let (_, one) = call(&app, json_request(Method::POST, "/v1/auth/login", &creds)).await;
    let (_, two) = call(&app, json_request(Method::POST, "/v1/auth/login", &creds)).await;
    let body = json!({"refresh_token": one["refresh_token"]});
    let (status, _) = call(&app, json_request(Method::POST, "/v1/auth/logout", &body)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&app, json_request(Method::POST, "/v1/auth/refresh", &body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let two_access = two["access_token"].as_str().unwrap();
    let (status, _) = call(&app, bearer(Method::POST, "/v1/auth/logout-all", two_access)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let body = json!({"refresh_token": two["refresh_token"]});
    let (status, _) = call(&app, json_request(Method::POST, "/v1/auth/refresh", &body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, jwks) =
        call(&app, Request::get("/.well-known/jwks.json").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(jwks["keys"][0]["kid"], "ed-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_is_revoked_and_the_others_live_on() {
    let (auth, clock, _server) = redis_service("http_revoke_one", 5).await;
    let app = router(auth);
    let first = register_and_login(&app).await;
    let creds = json!({"username": "ada", "password": PASSWORD});
    let mut pairs = vec![first];
    for _ in 0..2 {
        clock.advance(Duration::seconds(1));
        let (status, pair) = call(&app, json_request(Method::POST, "/v1/auth/login", &creds)).await;
        assert_eq!(status, StatusCode::OK, "{pair}");
        pairs.push(pair);
    }
    let access = pairs[2]["access_token"].as_str().unwrap().to_owned();
    let (_, listed) = call(&app, bearer(Method::GET, "/v1/auth/sessions", &access)).await;
    let families: Vec<String> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["family"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(families.len(), 3, "{listed}");

    // Someone else cannot end Ada's session: answered like a missing one.
    let bob = json!({"username": "bob", "password": PASSWORD});
    call(&app, json_request(Method::POST, "/v1/auth/register", &bob)).await;
    let (_, bob_pair) = call(&app, json_request(Method::POST, "/v1/auth/login", &bob)).await;
    let bob_access = bob_pair["access_token"].as_str().unwrap();
    let path = format!("/v1/auth/sessions/{}", families[0]);
    let (status, body) = call(&app, bearer(Method::DELETE, &path, bob_access)).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "session_not_found"));
    for bad in ["not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
        let (status, body) =
            call(&app, bearer(Method::DELETE, &format!("/v1/auth/sessions/{bad}"), &access)).await;
        assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "session_not_found"), "{bad}");
    }

    // Ada ends the first one.
    let (status, body) = call(&app, bearer(Method::DELETE, &path, &access)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let refresh = |pair: &Value| json!({"refresh_token": pair["refresh_token"]});
    let (status, body) =
        call(&app, json_request(Method::POST, "/v1/auth/refresh", &refresh(&pairs[0]))).await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "refresh_token_invalid"));
    for alive in &pairs[1..] {
        let (status, body) =
            call(&app, json_request(Method::POST, "/v1/auth/refresh", &refresh(alive))).await;
        assert_eq!(status, StatusCode::OK, "another session died too: {body}");
    }
    let (_, listed) = call(&app, bearer(Method::GET, "/v1/auth/sessions", &access)).await;
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 2, "{listed}");
}

/// Signs `claims` with `alg`/`kid`/`key` by hand, for forged tokens.
fn forge(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let head = URL_SAFE_NO_PAD.encode(header.to_string());
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signature = URL_SAFE_NO_PAD.encode(sign(format!("{head}.{body}").as_bytes()));
    format!("{head}.{body}.{signature}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_exact_status_and_code() {
    let (auth, clock, _server) = redis_service("http_bad_input", 5).await;
    let issuer = auth.issuer().clone();
    let app = router(auth);
    let pair = register_and_login(&app).await;
    let good = pair["access_token"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = good.split('.').collect();

    let now = clock.now().timestamp();
    let claims = |f: &dyn Fn(&mut Claims)| {
        let mut c = Claims {
            sub: UserId::new_random().to_string(),
            iss: "iaas-auth".into(),
            aud: "iaas".into(),
            exp: now + 900,
            iat: now,
            nbf: now,
            jti: "j".into(),
            scope: String::new(),
            sid: None,
        };
        f(&mut c);
        issuer.sign_claims(&c).unwrap()
    };
    let payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let public = URL_SAFE_NO_PAD.decode(issuer.jwks()["keys"][0]["x"].as_str().unwrap()).unwrap();
    let confused = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("ed-1".into());
        jsonwebtoken::encode(&header, &payload, &jsonwebtoken::EncodingKey::from_secret(&public))
            .unwrap()
    };
    let alg_none = forge(&json!({"alg": "none", "kid": "ed-1"}), &payload, |_| Vec::new());
    let other = TokenIssuer::new(
        KeySet::new(SigningKey::ed25519_from_seed("ed-9", &[1; 32]).unwrap()),
        TokenConfig::default(),
        clock.clone(),
    );
    let unknown_kid = other.issue(UserId::new_random(), &[]).unwrap().token;
    let mut elevated = payload.clone();
    elevated["scope"] = json!("admin");
    let tampered =
        format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(elevated.to_string()), parts[2]);

    let sessions = |token: &str| bearer(Method::GET, "/v1/auth/sessions", token);
    let login = |body: Body, content_type: Option<&str>| {
        let mut builder = Request::post("/v1/auth/login");
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        builder.body(body).unwrap()
    };
    let creds = |username: Value| {
        Body::from(json!({"username": username, "password": PASSWORD}).to_string())
    };
    let mut non_utf8 = br#"{"username": "ad"#.to_vec();
    non_utf8.extend_from_slice(&[0xff, 0xfe]);
    non_utf8.extend_from_slice(br#"a", "password": "correct horse battery"}"#);
    let ten_mb = vec![b' '; 10 * 1024 * 1024];

    let table: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        ("alg none", sessions(&alg_none), StatusCode::UNAUTHORIZED, "token_algorithm_not_allowed"),
        (
            "HS256 signed with the EdDSA public key",
            sessions(&confused),
            StatusCode::UNAUTHORIZED,
            "token_algorithm_mismatch",
        ),
        ("unknown kid", sessions(&unknown_kid), StatusCode::UNAUTHORIZED, "token_unknown_key"),
        ("tampered payload", sessions(&tampered), StatusCode::UNAUTHORIZED, "token_bad_signature"),
        (
            "expired",
            sessions(&claims(&|c| c.exp = now - 3600)),
            StatusCode::UNAUTHORIZED,
            "token_expired",
        ),
        (
            "not yet valid",
            sessions(&claims(&|c| c.nbf = now + 3600)),
            StatusCode::UNAUTHORIZED,
            "token_not_yet_valid",
        ),
        (
            "wrong aud",
            sessions(&claims(&|c| c.aud = "other".into())),
            StatusCode::UNAUTHORIZED,
            "token_wrong_audience",
        ),
        (
            "wrong iss",
            sessions(&claims(&|c| c.iss = "evil".into())),
            StatusCode::UNAUTHORIZED,
            "token_wrong_issuer",
        ),
        (
            "malformed JWT header",
            sessions(&format!("eyJub3Qi.{}.{}", parts[1], parts[2])),
            StatusCode::UNAUTHORIZED,
            "token_malformed",
        ),
        ("not a JWT", sessions("abc"), StatusCode::UNAUTHORIZED, "token_malformed"),
        (
            "no Authorization header",
            Request::get("/v1/auth/sessions").body(Body::empty()).unwrap(),
            StatusCode::UNAUTHORIZED,
            "missing_token",
        ),
        (
            "Basic instead of Bearer",
            Request::get("/v1/auth/sessions")
                .header(header::AUTHORIZATION, "Basic YWRhOng=")
                .body(Body::empty())
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "missing_token",
        ),
        (
            "10 MB body",
            login(Body::from(ten_mb), Some("application/json")),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "empty username",
            login(creds(json!("")), Some("application/json")),
            StatusCode::BAD_REQUEST,
            "invalid_username",
        ),
        (
            "over-long username",
            login(creds(json!("a".repeat(65))), Some("application/json")),
            StatusCode::BAD_REQUEST,
            "invalid_username",
        ),
        (
            "non-ASCII username",
            login(creds(json!("adé")), Some("application/json")),
            StatusCode::BAD_REQUEST,
            "invalid_username",
        ),
        (
            "non-UTF-8 username",
            login(Body::from(non_utf8), Some("application/json")),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "wrong content type",
            login(creds(json!("ada")), Some("text/plain")),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "no content type",
            login(creds(json!("ada")), None),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "not JSON",
            login(Body::from("{username"), Some("application/json")),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "missing field",
            login(Body::from(r#"{"username":"ada"}"#), Some("application/json")),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "weak password",
            json_request(
                Method::POST,
                "/v1/auth/register",
                &json!({"username": "bob", "password": "short"}),
            ),
            StatusCode::BAD_REQUEST,
            "weak_password",
        ),
        (
            "taken username",
            json_request(
                Method::POST,
                "/v1/auth/register",
                &json!({"username": "ADA", "password": PASSWORD}),
            ),
            StatusCode::CONFLICT,
            "username_taken",
        ),
        (
            "wrong password",
            json_request(
                Method::POST,
                "/v1/auth/login",
                &json!({"username": "ada", "password": "wrong password!"}),
            ),
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        ),
        (
            "garbage refresh token",
            json_request(Method::POST, "/v1/auth/refresh", &json!({"refresh_token": "x"})),
            StatusCode::UNAUTHORIZED,
            "refresh_token_invalid",
        ),
    ];
    for (case, request, status, want) in table {
        let (got, body) = call(&app, request).await;
        assert_eq!((got, code(&body)), (status, want), "{case}: {body}");
        assert!(body["error"]["message"].is_string(), "{case}: {body}");
    }
    // The untouched token still works, so each case failed for its own reason.
    assert_eq!(call(&app, sessions(&good)).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_user_enforces_scopes_without_calling_the_auth_service() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let auth = service(Arc::new(iaas_auth::MemorySessionStore::new()), clock.clone(), 5);
    // Another service knows only the public key from the JWKS.
    let x = auth.issuer().jwks()["keys"][0]["x"].as_str().unwrap().to_owned();
    let verifier = TokenIssuer::new(
        KeySet::new(SigningKey::ed25519_public("ed-1", &x).unwrap()),
        TokenConfig::default(),
        clock.clone(),
    );
    async fn write(user: AuthUser) -> Result<String, iaas_auth::AuthError> {
        user.require_scope("instances:write")?;
        Ok(user.0.user.to_string())
    }
    async fn read(user: AuthUser) -> Result<String, iaas_auth::AuthError> {
        user.require_scope("instances:read")?;
        Ok(user.0.user.to_string())
    }
    let app =
        Router::new().route("/write", get(write)).route("/read", get(read)).with_state(verifier);
    let user = UserId::new_random();
    let token = auth.issuer().issue(user, &["instances:read".into()]).unwrap().token;

    let response = app.clone().oneshot(bearer(Method::GET, "/read", &token)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, body) = call(&app, bearer(Method::GET, "/write", &token)).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "insufficient_scope"));
}

async fn race_refreshes(app: &Router, token: &Value) -> Vec<(StatusCode, Value)> {
    let body = json!({"refresh_token": token});
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (app, body) = (app.clone(), body.clone());
            tokio::spawn(async move {
                call(&app, json_request(Method::POST, "/v1/auth/refresh", &body)).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_refreshes_outside_the_grace_window_make_at_most_one_member() {
    let (auth, _clock, _server) = redis_service("http_race", 0).await;
    let app = router(auth);
    let pair = register_and_login(&app).await;
    let outcomes = race_refreshes(&app, &pair["refresh_token"]).await;
    let ok = outcomes.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert!(ok <= 1, "{ok} successes");
    for (status, body) in &outcomes {
        assert!(!status.is_server_error(), "{status} {body}");
        if *status != StatusCode::OK {
            assert_eq!(*status, StatusCode::UNAUTHORIZED, "{body}");
        }
    }
    let access = pair["access_token"].as_str().unwrap();
    let (_, sessions) = call(&app, bearer(Method::GET, "/v1/auth/sessions", access)).await;
    assert!(sessions["sessions"].as_array().unwrap().is_empty(), "the replayed family is revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_refreshes_inside_the_grace_window_get_one_successor() {
    let (auth, _clock, _server) = redis_service("http_race_grace", 5).await;
    let app = router(auth);
    let pair = register_and_login(&app).await;
    let outcomes = race_refreshes(&app, &pair["refresh_token"]).await;
    let successors: std::collections::HashSet<String> = outcomes
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::OK, "{body}");
            body["refresh_token"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(successors.len(), 1);
    let access = pair["access_token"].as_str().unwrap();
    let (_, sessions) = call(&app, bearer(Method::GET, "/v1/auth/sessions", access)).await;
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_gives_503_json_and_recovers_by_itself() {
    let redis = iaas_testkit::RestartableRedis::start(false).await.unwrap();
    let store = RedisSessionStore::connect(
        RedisSessionConfig::new(redis.url()).with_timeout(StdDuration::from_millis(300)),
    )
    .await
    .unwrap();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let app = router(service(Arc::new(store), clock, 5));
    let pair = register_and_login(&app).await;
    let creds = json!({"username": "ada", "password": PASSWORD});

    redis.kill().await.unwrap();
    let refresh = json!({"refresh_token": pair["refresh_token"]});
    for request in [
        json_request(Method::POST, "/v1/auth/refresh", &refresh),
        json_request(Method::POST, "/v1/auth/login", &creds),
    ] {
        let (status, body) = call(&app, request).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            "{body}"
        );
    }

    // Redis comes back empty (no persistence): the service reconnects without help.
    redis.restart().await.unwrap();
    let recovered = eventually(StdDuration::from_secs(15), || async {
        let (status, body) = call(&app, json_request(Method::POST, "/v1/auth/login", &creds)).await;
        if status == StatusCode::OK { Ok(body) } else { Err(format!("{status} {body}")) }
    })
    .await
    .unwrap();
    let refresh = json!({"refresh_token": recovered["refresh_token"]});
    let (status, body) = call(&app, json_request(Method::POST, "/v1/auth/refresh", &refresh)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A route of another crate: it sees the caller only as a core `Principal`.
async fn whoami(principal: Option<axum::Extension<iaas_core::Principal>>) -> String {
    principal.map_or_else(|| "anonymous".to_owned(), |axum::Extension(p)| p.user_id.to_string())
}

#[tokio::test]
async fn the_principal_layer_hands_other_routers_the_caller() {
    let auth = service(
        Arc::new(iaas_auth::MemorySessionStore::new()),
        Arc::new(ManualClock::new(Utc::now())),
        5,
    );
    let others =
        Router::new().route("/v1/whoami", get(whoami)).layer(axum::middleware::from_fn_with_state(
            auth.issuer().clone(),
            iaas_auth::http::principal_layer,
        ));
    let app = router(auth.clone()).merge(others);
    let pair = register_and_login(&app).await;
    let access = pair["access_token"].as_str().unwrap();
    let user = auth.issuer().verify(access).unwrap().user;

    let text = |request: Request<Body>| {
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8(bytes.to_vec()).unwrap())
        }
    };
    assert_eq!(
        text(bearer(Method::GET, "/v1/whoami", access)).await,
        (StatusCode::OK, user.to_string())
    );
    let anonymous = Request::builder().uri("/v1/whoami").body(Body::empty()).unwrap();
    assert_eq!(text(anonymous).await, (StatusCode::OK, "anonymous".to_owned()));
    let (status, body) = call(&app, bearer(Method::GET, "/v1/whoami", "not.a.token")).await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "token_malformed"));

    // A WebSocket upgrade may carry the token in the query; an ordinary request may not.
    let upgrade = Request::builder()
        .uri(format!("/v1/whoami?access_token={access}"))
        .header(header::UPGRADE, "websocket")
        .body(Body::empty())
        .unwrap();
    assert_eq!(text(upgrade).await, (StatusCode::OK, user.to_string()));
    let plain = Request::builder()
        .uri(format!("/v1/whoami?access_token={access}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(text(plain).await, (StatusCode::OK, "anonymous".to_owned()));
}
