//! Live status over a real WebSocket: a client sees its own updates and never another user's.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use common::record_created;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use chrono::Utc;
use futures_util::StreamExt;
use iaas_core::memory::MemoryInstanceRepository;
use iaas_core::{
    EventAction, InfrastructureEvent, Instance, InstanceName, InstanceSpec, NginxSpec, Principal,
    Resources, UserId,
};
use iaas_provisioning::{
    CLOSE_POLICY, CLOSE_RESTARTING, CLOSE_TOKEN_EXPIRED, LiveLimits, LiveOptions, LiveStatus,
    StatusUpdate, live_router_with,
};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Stands in for the auth layer: the test names the user in a header.
async fn test_auth(mut request: Request, next: Next) -> Response {
    let user = request
        .headers()
        .get("x-test-user")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<UserId>().ok());
    let expires_in_ms = request
        .headers()
        .get("x-test-expires-in-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    if let Some(user_id) = user {
        let mut principal = Principal::new(user_id, vec![]);
        principal.expires_at =
            expires_in_ms.map(|ms| Utc::now() + chrono::Duration::milliseconds(ms));
        request.extensions_mut().insert(principal);
    }
    next.run(request).await
}

async fn serve(live: LiveStatus, repo: Arc<MemoryInstanceRepository>) -> String {
    serve_with(live, repo, LiveOptions::default()).await
}

async fn serve_with(
    live: LiveStatus,
    repo: Arc<MemoryInstanceRepository>,
    options: LiveOptions,
) -> String {
    let app = live_router_with(live, repo, options).layer(middleware::from_fn(test_auth));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("ws://{addr}/v1/ws")
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, user: UserId) -> Socket {
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("x-test-user", user.to_string().parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

async fn next_frame(socket: &mut Socket) -> serde_json::Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

async fn instance_of(repo: &MemoryInstanceRepository, owner: UserId, name: &str) -> Instance {
    let instance = Instance::new(
        owner,
        InstanceName::new(name).unwrap(),
        InstanceSpec::Nginx(NginxSpec::default()),
        Resources::default(),
        Utc::now(),
    )
    .unwrap();
    record_created(repo, &instance).await;
    instance
}

fn started(instance: &Instance) -> StatusUpdate {
    StatusUpdate::from_event(&InfrastructureEvent::new(
        instance.id,
        instance.owner,
        instance.kind(),
        EventAction::Started,
        Utc::now(),
    ))
    .unwrap()
}

#[tokio::test]
async fn each_client_sees_its_own_updates_and_never_another_users() {
    let repo = Arc::new(MemoryInstanceRepository::new());
    let live = LiveStatus::default();
    let (ada, bob) = (UserId::new_random(), UserId::new_random());
    let adas = instance_of(&repo, ada, "web").await;
    let bobs = instance_of(&repo, bob, "db").await;
    let url = serve(live.clone(), repo.clone()).await;

    let mut ada_socket = connect(&url, ada).await;
    let mut bob_socket = connect(&url, bob).await;
    let snapshot = next_frame(&mut ada_socket).await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["instances"].as_array().unwrap().len(), 1);
    assert_eq!(snapshot["instances"][0]["id"], adas.id.to_string());
    assert_eq!(next_frame(&mut bob_socket).await["instances"][0]["id"], bobs.id.to_string());

    // Ada's change first, then Bob's: Bob's first status frame must be his own.
    live.send(started(&adas));
    live.send(started(&bobs));
    let frame = next_frame(&mut ada_socket).await;
    assert_eq!(
        (frame["type"].as_str(), frame["instance_id"].as_str()),
        (Some("status"), Some(adas.id.to_string().as_str()))
    );
    assert_eq!(frame["status"], "running");
    let frame = next_frame(&mut bob_socket).await;
    assert_eq!(frame["instance_id"], bobs.id.to_string(), "Bob never sees Ada's instance");
}

#[tokio::test]
async fn a_lagging_client_is_told_and_gets_a_fresh_snapshot() {
    let repo = Arc::new(MemoryInstanceRepository::new());
    let live = LiveStatus::new(4);
    let ada = UserId::new_random();
    let web = instance_of(&repo, ada, "web").await;
    let url = serve(live.clone(), repo.clone()).await;
    let mut socket = connect(&url, ada).await;
    assert_eq!(next_frame(&mut socket).await["type"], "snapshot");

    // Far more updates than the channel holds, while the client reads nothing.
    for _ in 0..200 {
        live.send(started(&web));
    }
    let mut saw_lagged = false;
    for _ in 0..20 {
        let frame = next_frame(&mut socket).await;
        if frame["type"] == "lagged" {
            saw_lagged = true;
            assert!(frame["missed"].as_u64().unwrap() > 0);
            assert_eq!(next_frame(&mut socket).await["type"], "snapshot");
            break;
        }
    }
    assert!(saw_lagged);
}

#[tokio::test]
async fn a_request_without_a_principal_is_401_json() {
    let repo = Arc::new(MemoryInstanceRepository::new());
    let url = serve(LiveStatus::default(), repo).await;
    let request = url.into_client_request().unwrap();
    let err = tokio_tungstenite::connect_async(request).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), 401);
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "unauthenticated");
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// The close frame the server ends `socket` with, within 5 s (other frames are skipped).
async fn close_code(socket: &mut Socket) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("the server closes the socket within 5 s")
            .expect("a close frame before the stream ends")
            .unwrap();
        if let Message::Close(frame) = message {
            let frame = frame.expect("the close frame names its code");
            return (u16::from(frame.code), frame.reason.to_string());
        }
    }
}

#[tokio::test]
async fn a_socket_ends_when_its_token_expires() {
    let repo = Arc::new(MemoryInstanceRepository::new());
    let url = serve(LiveStatus::default(), repo).await;
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("x-test-user", UserId::new_random().to_string().parse().unwrap());
    request.headers_mut().insert("x-test-expires-in-ms", "800".parse().unwrap());
    let mut socket = tokio_tungstenite::connect_async(request).await.unwrap().0;
    assert_eq!(next_frame(&mut socket).await["type"], "snapshot");
    let (code, reason) = close_code(&mut socket).await;
    assert_eq!((code, reason.as_str()), (CLOSE_TOKEN_EXPIRED, "access token expired"));
}

#[tokio::test]
async fn sockets_past_the_caps_are_refused_before_the_upgrade() {
    let repo = Arc::new(MemoryInstanceRepository::new());
    let mut limits = LiveLimits::default();
    limits.per_user = 3;
    limits.total = 5;
    let url =
        serve_with(LiveStatus::default(), repo, LiveOptions::default().with_limits(limits)).await;
    let (ada, bob) = (UserId::new_random(), UserId::new_random());
    let refused = |user: UserId| {
        let url = url.clone();
        async move {
            let mut request = url.into_client_request().unwrap();
            request.headers_mut().insert("x-test-user", user.to_string().parse().unwrap());
            match tokio_tungstenite::connect_async(request).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                    let body: serde_json::Value =
                        serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
                    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
                    assert!(response.headers().contains_key("retry-after"));
                    response.status().as_u16()
                }
                Ok(_) => panic!("a socket past the cap was opened"),
                Err(other) => panic!("expected an HTTP refusal, got {other}"),
            }
        }
    };
    let mut adas = Vec::new();
    for _ in 0..3 {
        adas.push(connect(&url, ada).await);
    }
    assert_eq!(refused(ada).await, 429, "the fourth socket of one user");
    let _bobs = (connect(&url, bob).await, connect(&url, bob).await);
    assert_eq!(refused(UserId::new_random()).await, 503, "the sixth socket in all");
    // A closed socket gives its place back.
    let mut first = adas.remove(0);
    first.close(None).await.unwrap();
    drop(first);
    let reopened = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut request = url.clone().into_client_request().unwrap();
            request.headers_mut().insert("x-test-user", ada.to_string().parse().unwrap());
            if let Ok((socket, _)) = tokio_tungstenite::connect_async(request).await {
                return socket;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(reopened.is_ok(), "the place of a closed socket never came back");
}

#[tokio::test]
async fn a_message_over_the_limit_closes_the_socket() {
    let repo = Arc::new(MemoryInstanceRepository::new());
    let url = serve(LiveStatus::default(), repo).await;
    let mut socket = connect(&url, UserId::new_random()).await;
    assert_eq!(next_frame(&mut socket).await["type"], "snapshot");
    use futures_util::SinkExt as _;
    socket.send(Message::Text("x".repeat(64 * 1024).into())).await.unwrap();
    let (code, _) = close_code(&mut socket).await;
    assert!(
        code == CLOSE_POLICY || code == u16::from(CloseCode::Size),
        "closed with {code}, not for the size"
    );
}

#[tokio::test]
async fn a_stopping_server_closes_its_sockets_with_1012_and_opens_no_new_one() {
    let repo = Arc::new(MemoryInstanceRepository::new());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let options = LiveOptions::default().with_shutdown(shutdown.clone());
    let url = serve_with(LiveStatus::default(), repo, options).await;
    let user = UserId::new_random();
    let mut socket = connect(&url, user).await;
    assert_eq!(next_frame(&mut socket).await["type"], "snapshot");
    shutdown.cancel();
    let (code, _) = close_code(&mut socket).await;
    assert_eq!(code, CLOSE_RESTARTING);

    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("x-test-user", user.to_string().parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "draining", "{body}");
            assert!(response.headers().contains_key("retry-after"));
        }
        Ok(_) => panic!("a socket was opened on a stopping server"),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
    }
}
