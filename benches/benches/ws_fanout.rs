//! Live status fan-out: one status event reaching N subscribed WebSocket clients (N = 1, 100,
//! 1,000) over real loopback connections through `iaas_provisioning::live_router_with`, beside a raw
//! `tokio::sync::broadcast` channel with N receiver tasks in the same run.
//!
//! A third variant, `websocket_per_client`, is the endpoint as it was before a frame was
//! serialized once per update: each client's task builds and serializes its own frame from the
//! update (the previous `serve` loop of `iaas-provisioning/src/http.rs`, kept here so the same run
//! compares both).
//!
//! One iteration hands one `started` event to `LiveStatus` (as the bus does once the watcher's
//! transaction committed) and waits until every client has received its frame; criterion
//! reports that time (the slowest client). Every client also records its own per-frame latency
//! (event time to frame received and parsed), and the bench prints p50 / p99 / max of those per
//! N. The target is Docker event -> WebSocket frame p99 < 100 ms.
//!
//! All clients belong to the same user, so each event is a frame for every one of them (the
//! worst case: a user's own instances are never filtered out). Server and clients share the
//! runtime (2 cores on ci-2c), so the figures include the clients' own work.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a bench panics to report a failure")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use futures_util::StreamExt;
use iaas_core::memory::MemoryInstanceRepository;
use iaas_core::{
    EventAction, EventHandler, InfrastructureEvent, Instance, InstanceId, InstanceKind,
    InstanceName, InstanceRepository, InstanceSpec, NginxSpec, Principal, Resources, UserId,
};
use iaas_provisioning::{LiveLimits, LiveOptions, LiveStatus, StatusUpdate, live_router_with};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const CLIENTS: [usize; 3] = [1, 100, 1_000];

/// Per-frame latencies recorded by the clients, in microseconds.
type Latencies = Arc<Mutex<Vec<u64>>>;

fn micros_since(at: DateTime<Utc>) -> u64 {
    u64::try_from((Utc::now() - at).num_microseconds().unwrap_or(0)).unwrap_or(0)
}

/// Stands in for the auth layer: the user comes from a header.
async fn bench_auth(mut request: Request, next: Next) -> Response {
    let user = request
        .headers()
        .get("x-bench-user")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<UserId>().ok());
    if let Some(user_id) = user {
        request.extensions_mut().insert(Principal::new(user_id, vec![]));
    }
    next.run(request).await
}

/// The endpoint under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `iaas_provisioning::live_router`: one frame per update, shared by every client.
    Shared,
    /// The previous loop: every client serializes its own frame.
    PerClient,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Shared => "websocket",
            Endpoint::PerClient => "websocket_per_client",
        }
    }
}

/// The previous `serve` loop of the live endpoint (snapshot reduced to an empty list).
fn per_client_router(live: LiveStatus) -> Router {
    async fn upgrade(
        State(live): State<LiveStatus>,
        Extension(principal): Extension<Principal>,
        socket: WebSocketUpgrade,
    ) -> Response {
        socket.on_upgrade(move |socket| per_client_serve(socket, principal.user_id, live))
    }
    Router::new().route("/v1/ws", get(upgrade)).with_state(live)
}

async fn per_client_serve(mut socket: WebSocket, user: UserId, live: LiveStatus) {
    let mut updates = live.watch();
    let snapshot = WsMessage::Text(Utf8Bytes::from_static(r#"{"type":"snapshot","instances":[]}"#));
    if socket.send(snapshot).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            update = updates.recv() => {
                let frame = match update {
                    Ok(update) if update.is_for(user) => {
                        let update = update.update();
                        json!({
                            "type": "status",
                            "instance_id": update.instance_id,
                            "status": update.status,
                            "event": update.event,
                            "at": update.at,
                        })
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => panic!("a bench client lagged"),
                    Err(RecvError::Closed) => return,
                };
                if socket.send(WsMessage::Text(Utf8Bytes::from(frame.to_string()))).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// `endpoint` on a loopback port, with one instance of `owner` in its store.
async fn serve(endpoint: Endpoint, live: LiveStatus, owner: UserId) -> (String, Instance) {
    let repo = Arc::new(MemoryInstanceRepository::new());
    let instance = Instance::new(
        owner,
        InstanceName::new("web").unwrap(),
        InstanceSpec::Nginx(NginxSpec::default()),
        Resources::default(),
        Utc::now(),
    )
    .unwrap();
    let created = InfrastructureEvent::new(
        instance.id,
        owner,
        instance.kind(),
        EventAction::Created,
        Utc::now(),
    );
    repo.create_instance(&instance, &created).await.unwrap();
    let app = match endpoint {
        Endpoint::Shared => {
            // Every client is the one owner's: the per-user cap must not be what is measured.
            let mut limits = LiveLimits::default();
            limits.per_user = limits.total;
            live_router_with(live, repo, LiveOptions::default().with_limits(limits))
        }
        Endpoint::PerClient => per_client_router(live),
    }
    .layer(middleware::from_fn(bench_auth));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("ws://{addr}/v1/ws"), instance)
}

/// `n` WebSocket clients of `owner`, each reporting every status frame's latency to `done`
/// once it has read its snapshot; abort the tasks returned to disconnect them.
async fn connect_clients(
    url: &str,
    owner: UserId,
    n: usize,
    latencies: &Latencies,
    done: &mpsc::UnboundedSender<()>,
) -> Vec<JoinHandle<()>> {
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("x-bench-user", owner.to_string().parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let (latencies, done, ready) = (latencies.clone(), done.clone(), ready_tx.clone());
        clients.push(tokio::spawn(async move {
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else { continue };
                let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
                match frame["type"].as_str() {
                    Some("snapshot") => {
                        let _ = ready.send(());
                    }
                    Some("status") => {
                        let at: DateTime<Utc> = frame["at"].as_str().unwrap().parse().unwrap();
                        latencies.lock().unwrap().push(micros_since(at));
                        let _ = done.send(());
                    }
                    other => panic!("unexpected frame {other:?}: {text}"),
                }
            }
        }));
    }
    // Subscribed (the server subscribes before it sends the snapshot).
    for _ in 0..n {
        ready_rx.recv().await.unwrap();
    }
    clients
}

/// `n` tasks receiving from a raw broadcast channel, recording latencies like the clients.
fn spawn_receivers(
    sender: &broadcast::Sender<StatusUpdate>,
    n: usize,
    latencies: &Latencies,
    done: &mpsc::UnboundedSender<()>,
) {
    for _ in 0..n {
        let mut receiver = sender.subscribe();
        let (latencies, done) = (latencies.clone(), done.clone());
        tokio::spawn(async move {
            while let Ok(update) = receiver.recv().await {
                latencies.lock().unwrap().push(micros_since(update.at));
                let _ = done.send(());
            }
        });
    }
}

/// Waits until `n` receipts arrived.
async fn all_received(done: &mut mpsc::UnboundedReceiver<()>, n: usize) {
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(10), done.recv()).await.unwrap().unwrap();
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short vector"
    )]
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

fn report(what: &str, n: usize, latencies: &Latencies) {
    let mut all = std::mem::take(&mut *latencies.lock().unwrap());
    all.sort_unstable();
    eprintln!(
        "ws_fanout {what} clients={n}: frames={} p50={} us p99={} us max={} us",
        all.len(),
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(0),
    );
}

fn fanout(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("ws_fanout");
    group.sample_size(10);
    for n in CLIENTS {
        for endpoint in [Endpoint::Shared, Endpoint::PerClient] {
            // The platform's path: LiveStatus -> the endpoint -> N WebSockets on loopback.
            let live = LiveStatus::default();
            let owner = UserId::new_random();
            let latencies = Latencies::default();
            let (done_tx, done_rx) = mpsc::unbounded_channel();
            let done_rx = Arc::new(tokio::sync::Mutex::new(done_rx));
            let (instance, clients) = rt.block_on(async {
                let (url, instance) = serve(endpoint, live.clone(), owner).await;
                let clients = connect_clients(&url, owner, n, &latencies, &done_tx).await;
                (instance, clients)
            });
            let (id, kind) = (instance.id, instance.kind());
            group.bench_function(BenchmarkId::new(endpoint.name(), n), |b| {
                b.to_async(&rt).iter_custom(|iterations| {
                    let (live, done_rx) = (live.clone(), done_rx.clone());
                    async move {
                        let mut done_rx = done_rx.lock().await;
                        let started = Instant::now();
                        for _ in 0..iterations {
                            let event = InfrastructureEvent::new(
                                id,
                                owner,
                                kind,
                                EventAction::Started,
                                Utc::now(),
                            );
                            live.handle(&event).await.unwrap();
                            all_received(&mut done_rx, n).await;
                        }
                        started.elapsed()
                    }
                });
            });
            report(endpoint.name(), n, &latencies);
            // Disconnect, so the next variant runs without this one's sockets.
            for client in clients {
                client.abort();
            }
        }
        let (owner, id, kind) =
            (UserId::new_random(), InstanceId::new_random(), InstanceKind::Nginx);
        let latencies = Latencies::default();

        // Baseline: the same updates on a raw broadcast channel to N tasks.
        let (sender, _) = broadcast::channel::<StatusUpdate>(1024);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let done_rx = Arc::new(tokio::sync::Mutex::new(done_rx));
        rt.block_on(async { spawn_receivers(&sender, n, &latencies, &done_tx) });
        group.bench_function(BenchmarkId::new("raw_broadcast", n), |b| {
            b.to_async(&rt).iter_custom(|iterations| {
                let (sender, done_rx) = (sender.clone(), done_rx.clone());
                async move {
                    let mut done_rx = done_rx.lock().await;
                    let started = Instant::now();
                    for _ in 0..iterations {
                        let event = InfrastructureEvent::new(
                            id,
                            owner,
                            kind,
                            EventAction::Started,
                            Utc::now(),
                        );
                        sender.send(StatusUpdate::from_event(&event).unwrap()).unwrap();
                        all_received(&mut done_rx, n).await;
                    }
                    started.elapsed()
                }
            });
        });
        report("raw_broadcast", n, &latencies);
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
