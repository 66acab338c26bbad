//! Live-status sockets end with their login, on the whole platform (real auth, real sessions):
//! one session revoked, a logout, a logout-all and a password change each close the sockets of
//! the logins they end (close code 4003) within 5 s while other logins' sockets stay, with the
//! periodic check an hour apart, so it is the store telling the ending that closes them, in
//! one process and from one replica to another through Redis; the 101st
//! socket of one user is refused before the upgrade at the default cap of 100; and the caps an
//! operator configures are the ones applied.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::time::Duration;

use common::{Served, call, ok};
use futures_util::StreamExt as _;
use iaas_platform::HttpLimits;
use iaas_testkit::TestDatabase;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const PASSWORD: &str = "correct horse battery staple";

async fn login(addr: &str, username: &str, password: &str) -> Value {
    let credentials = json!({"username": username, "password": password});
    ok(addr, "POST", "/v1/auth/login", None, &credentials).await
}

fn access(pair: &Value) -> &str {
    pair["access_token"].as_str().unwrap()
}

async fn open(addr: &str, token: &str) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let url = format!("ws://{addr}/v1/ws?access_token={token}");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    let first = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap();
    let Some(Ok(Message::Text(text))) = first else { panic!("no snapshot: {first:?}") };
    assert!(text.contains("\"snapshot\""), "{text}");
    Ok(socket)
}

/// The close code `socket` ends with, within `within`; prints how long it took.
async fn closed_within(socket: &mut Socket, within: Duration) -> u16 {
    let started = tokio::time::Instant::now();
    let deadline = started + within;
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap_or_else(|_| panic!("still open after {within:?}"));
        match next {
            Some(Ok(Message::Close(Some(frame)))) => {
                eprintln!("closed {:.1?} after the ending was answered", started.elapsed());
                return u16::from(frame.code);
            }
            Some(Ok(_)) => {}
            other => panic!("ended without a close frame: {other:?}"),
        }
    }
}

/// Whether `socket` is still open: nothing but frames (no close, no end) for `during`.
async fn stays_open(socket: &mut Socket, during: Duration) {
    if let Ok(next) = tokio::time::timeout(during, socket.next()).await {
        assert!(
            matches!(next, Some(Ok(Message::Text(_) | Message::Ping(_)))),
            "a socket of another login ended: {next:?}"
        );
    }
}

fn family_of(sessions: &Value, index: usize) -> String {
    sessions["sessions"][index]["family"].as_str().unwrap().to_owned()
}

/// Limits under which only a told ending closes a socket within the tests' 5 s: the logins are
/// asked about once an hour.
fn told_only() -> HttpLimits {
    let mut limits = HttpLimits::default();
    limits.live.session_check = Duration::from_secs(3600);
    limits.live.session_recheck = Duration::from_secs(3600);
    limits
}

/// Ada's logins end on `acting`, through its API, while her sockets are open on `serving`:
/// each ending closes its own login's sockets (4003) within 5 s, and only those.
async fn sockets_end_with_their_login_and_only_theirs(acting: &str, serving: &str) {
    let credentials = json!({"username": "ada", "password": PASSWORD});
    ok(acting, "POST", "/v1/auth/register", None, &credentials).await;
    let (laptop, phone) =
        (login(acting, "ada", PASSWORD).await, login(acting, "ada", PASSWORD).await);
    let mut laptop_socket = open(serving, access(&laptop)).await.unwrap();
    let mut phone_socket = open(serving, access(&phone)).await.unwrap();

    // Ada ends the laptop's session: its socket closes, the phone's stays.
    let sessions = ok(acting, "GET", "/v1/auth/sessions", Some(access(&phone)), &Value::Null).await;
    // Oldest login first: the laptop's.
    let laptop_family = family_of(&sessions, 0);
    let path = format!("/v1/auth/sessions/{laptop_family}");
    let (status, body) =
        call(acting, "DELETE", &path, Some(access(&phone)), &Value::Null).await.unwrap();
    assert_eq!(status, 204, "{body}");
    assert_eq!(closed_within(&mut laptop_socket, Duration::from_secs(5)).await, 4003);
    stays_open(&mut phone_socket, Duration::from_secs(3)).await;

    // A logout ends its login's socket.
    let other = login(acting, "ada", PASSWORD).await;
    let mut other_socket = open(serving, access(&other)).await.unwrap();
    let logout = json!({"refresh_token": other["refresh_token"]});
    let (status, body) = call(acting, "POST", "/v1/auth/logout", None, &logout).await.unwrap();
    assert_eq!(status, 204, "{body}");
    assert_eq!(closed_within(&mut other_socket, Duration::from_secs(5)).await, 4003);
    stays_open(&mut phone_socket, Duration::from_secs(1)).await;

    // A logout-all ends every login's socket.
    let other = login(acting, "ada", PASSWORD).await;
    let mut other_socket = open(serving, access(&other)).await.unwrap();
    ok(acting, "POST", "/v1/auth/logout-all", Some(access(&phone)), &Value::Null).await;
    assert_eq!(closed_within(&mut phone_socket, Duration::from_secs(5)).await, 4003);
    assert_eq!(closed_within(&mut other_socket, Duration::from_secs(5)).await, 4003);

    // A password change too.
    let fresh = login(acting, "ada", PASSWORD).await;
    let mut fresh_socket = open(serving, access(&fresh)).await.unwrap();
    let change = json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"});
    ok(acting, "PUT", "/v1/auth/password", Some(access(&fresh)), &change).await;
    assert_eq!(closed_within(&mut fresh_socket, Duration::from_secs(5)).await, 4003);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_end_at_once_with_their_login_and_only_theirs() {
    let served = Served::start_embedded("iaas-live-sessions", told_only()).await;
    sockets_end_with_their_login_and_only_theirs(&served.addr, &served.addr).await;
    served.stop().await;
}

/// Two processes of one platform (one PostgreSQL store, one Redis, one signing key): logins
/// ended through one close the sockets held by the other, told through Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_ended_on_one_replica_closes_its_sockets_on_another_at_once() {
    let postgres = iaas_testkit::postgres().await.unwrap();
    let redis = iaas_testkit::redis().await.unwrap();
    let database = TestDatabase::create(&postgres, "platform_live_told").await.unwrap();
    let shared = iaas_testkit::isolation::temp_dir("iaas-live-told");
    let prefix = format!("{}:", iaas_testkit::isolation::unique_name("live-told"));
    let replica = |n: usize| {
        let mut settings = common::embedded(&shared.join(format!("replica-{n}")));
        settings.extend([
            (iaas_platform::DATABASE_URL_VAR, database.url().to_owned()),
            (iaas_platform::REDIS_URL_VAR, redis.url().to_owned()),
            (iaas_platform::CACHE_PREFIX_VAR, prefix.clone()),
            (iaas_platform::AUTH_KEY_FILE_VAR, shared.join("auth.key").display().to_string()),
            (iaas_platform::SECRETS_KEY_FILE_VAR, shared.join("secrets.key").display().to_string()),
        ]);
        Served::start(common::config(&settings), told_only())
    };
    // One after the other: the first writes the shared key files.
    let acting = replica(0).await;
    let serving = replica(1).await;
    sockets_end_with_their_login_and_only_theirs(&acting.addr, &serving.addr).await;
    serving.stop().await;
    acting.stop().await;
    std::fs::remove_dir_all(&shared).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_101st_socket_of_one_user_is_refused_before_the_upgrade() {
    let served = Served::start_embedded("iaas-live-cap", HttpLimits::default()).await;
    let addr = served.addr.clone();
    let credentials = json!({"username": "many", "password": PASSWORD});
    ok(&addr, "POST", "/v1/auth/register", None, &credentials).await;
    let pair = login(&addr, "many", PASSWORD).await;
    let mut sockets = Vec::new();
    for _ in 0..100 {
        sockets.push(open(&addr, access(&pair)).await.unwrap());
    }
    match open(&addr, access(&pair)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
        }
        Ok(_) => panic!("the 101st socket was opened"),
        Err(other) => panic!("expected 429, got {other}"),
    }
    drop(sockets);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_caps_refuse_a_users_and_the_servers_next_socket() {
    // The settings as an operator writes them, through the same path as the binary's.
    let settings = [("IAAS_LIVE_SOCKETS_PER_USER", "3"), ("IAAS_LIVE_SOCKETS_TOTAL", "5")];
    let config = iaas_platform::Config::from_lookup(|key| {
        settings.iter().find(|(name, _)| *name == key).map(|(_, value)| (*value).to_owned())
    })
    .unwrap();
    let served = Served::start_embedded("iaas-live-caps", HttpLimits::from_config(&config)).await;
    let addr = served.addr.clone();
    let mut pairs = Vec::new();
    for name in ["ann", "bob"] {
        let credentials = json!({"username": name, "password": PASSWORD});
        ok(&addr, "POST", "/v1/auth/register", None, &credentials).await;
        pairs.push(login(&addr, name, PASSWORD).await);
    }
    let refused = |outcome: Result<Socket, tokio_tungstenite::tungstenite::Error>| match outcome {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
            response.status().as_u16()
        }
        Ok(_) => panic!("a socket past the cap was opened"),
        Err(other) => panic!("expected a refusal, got {other}"),
    };
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(open(&addr, access(&pairs[0])).await.unwrap());
    }
    assert_eq!(refused(open(&addr, access(&pairs[0])).await), 429, "ann's 4th, past 3 per user");
    for _ in 0..2 {
        sockets.push(open(&addr, access(&pairs[1])).await.unwrap());
    }
    assert_eq!(refused(open(&addr, access(&pairs[1])).await), 503, "the 6th of all, past 5");
    // A closed socket frees its place.
    drop(sockets.pop());
    iaas_testkit::wait::eventually(Duration::from_secs(5), || async {
        // Opened only to show there is room again.
        open(&addr, access(&pairs[1])).await.map(drop).map_err(|e| e.to_string())
    })
    .await
    .unwrap();
    drop(sockets);
    served.stop().await;
}
