//! `iaas-load docker-ws`: Docker event -> WebSocket frame latency, end to end, on a running
//! platform and a real Docker engine (target: p99 < 100 ms).
//!
//! The tool signs in (a fresh user, or `--username`/`--password`), provisions `--instances`
//! small generic Docker instances through the API (a busybox shell running a long sleep),
//! waits until they run, and opens `--clients` WebSocket connections to `GET /v1/ws` with the
//! user's token. Then, `--rounds` times, it stops and starts one container (round-robin)
//! *behind the platform's back*, through the engine's API, as an operator or a crash would.
//! The platform learns it only from the engine's event stream: its watcher maps the event,
//! commits the status with its outbox event, the relay hands the event to the bus, and the
//! live-status fan-out sends a frame to every client.
//!
//! Meanwhile the tool follows the engine's events itself and keeps each event's own time
//! (`timeNano`, stamped by the engine). A frame's latency is the time the client received it
//! minus the time of the engine event that caused it: the first event of a run of events
//! mapping to the frame's status ([`iaas_docker::status_for_event`], the platform's own mapping;
//! a clean stop is `die` with exit 0 then `stop`, and the frame comes from the `die`). The
//! engine, the platform and the tool must share one clock: run them on one host.
//!
//! Each frame also carries `at`, the time of the change. The watcher stamps a change with the
//! engine's own time of its event, so `at` no longer splits the path into hops (engine ->
//! watcher comes out as zero); the platform's debug log does (`iaas_provisioning::live=debug`).
//!
//! A frame that does not reach a client within `--frame-timeout` seconds of the engine action
//! is missing: counted, printed, and the run exits with an error (one that arrives later in the
//! same step is in the latencies too). So does a frame with no engine event of its status before
//! it. The instances are deleted at the end, also after a failure (best effort, each failure
//! printed).
//!
//! `--clients 10,100,1000,10000` is a sweep: the rounds run at each count in turn, clients
//! added between the steps; with `--platform-pid` (set by `scripts/load.sh`) each step also
//! reads the platform's resident memory and its CPU at rest from `/proc`, and `--out` draws
//! the steps.
//!
//! ```text
//! iaas-load docker-ws --url http://127.0.0.1:8080 --instances 2 --clients 10 --rounds 30
//! ```

#![allow(clippy::print_stdout, reason = "a command-line tool reports on stdout")]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::{
    EventsOptionsBuilder, ListContainersOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use iaas_core::runtime::{LABEL_INSTANCE, LABEL_MANAGED};
use iaas_docker::status_for_event;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::proc_usage::Usage;
use super::report;

pub mod sweep;

/// Arguments of `iaas-load docker-ws`.
#[derive(Debug, clap::Args)]
pub struct DockerWsArgs {
    /// Base URL of the platform (`http://`; the WebSocket URL is derived from it).
    #[arg(long, env = "IAAS_LOAD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Sign in as this user instead of registering a fresh one.
    #[arg(long, requires = "password")]
    pub username: Option<String>,
    /// The password of `--username`.
    #[arg(long, env = "IAAS_LOAD_PASSWORD", requires = "username")]
    pub password: Option<String>,
    /// Instances provisioned for the run; the rounds go through them in turn.
    #[arg(long, default_value_t = 2)]
    pub instances: usize,
    /// WebSocket clients of the user, each receiving every frame. A rising list (`100,1000`)
    /// is a sweep: the rounds run at each count in turn, clients added between the steps, and
    /// a table of the steps ends the run.
    #[arg(long, value_delimiter = ',', default_value = "10")]
    pub clients: Vec<usize>,
    /// Rounds; each stops one container, then starts it again (two frames per client).
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// Image of the instances (a busybox with `sh` and `sleep`).
    #[arg(long, env = "IAAS_TEST_BUSYBOX_IMAGE", default_value = "busybox:1.36")]
    pub image: String,
    /// Shell script the containers run (`sh -c`). The default sleeps and exits 0 on SIGTERM,
    /// so a stop is immediate and clean (a bare `sleep` as PID 1 ignores SIGTERM: every stop
    /// would wait `--stop-timeout`, then kill, and the instance would pass through `failed`).
    #[arg(long, default_value = "trap 'exit 0' TERM; sleep 86400 & wait")]
    pub script: String,
    /// Seconds the engine waits after SIGTERM before it kills a container it stops.
    #[arg(long, default_value_t = 10)]
    pub stop_timeout: i32,
    /// Seconds after an engine action within which every client must have its frame.
    #[arg(long, default_value_t = 10)]
    pub frame_timeout: u64,
    /// Seconds the provisioned instances get to reach `running`.
    #[arg(long, default_value_t = 120)]
    pub ready_timeout: u64,
    /// The platform's process id on this host: at each step its resident memory and its CPU
    /// while nothing changes are read from `/proc` (`scripts/load.sh` sets it).
    #[arg(long, env = "IAAS_LOAD_PLATFORM_PID")]
    pub platform_pid: Option<u32>,
    /// Seconds of quiet at each step over which the platform's CPU is read.
    #[arg(long, default_value_t = 5)]
    pub idle_secs: u64,
    /// Logins of the user the clients share, in turn (client `i` uses login `i % logins`): the
    /// platform's cost at rest per login, not per socket, shows with more than one.
    #[arg(long, default_value_t = 1)]
    pub logins: usize,
    /// Directory the sweep's plots are written to (`scale-sockets-latency.svg`,
    /// `scale-sockets-cost.svg`).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

/// CPU limit of each instance, in thousandths of a core: a sleeping shell needs none.
const MILLICPUS: u32 = 100;
/// Memory limit of each instance in MiB (the platform's minimum).
const MEMORY_MIB: u32 = 32;
/// How often the setup asks whether an instance runs yet.
const POLL: Duration = Duration::from_millis(200);

/// The statuses the rounds drive an instance through (the platform's names).
const STOPPED: &str = "stopped";
const RUNNING: &str = "running";

/// An engine event about a managed container, reduced to what matching needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEvent {
    /// The instance (`iaas.instance` label).
    pub instance: String,
    /// The engine's action (`die`, `stop`, `start`, ...).
    pub action: String,
    /// The status the platform maps it to, if any.
    pub status: Option<String>,
    /// The engine's own time of the event, nanoseconds since the Unix epoch.
    pub at_ns: i64,
}

/// A `status` frame as one client received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Which client (0-based).
    pub client: usize,
    /// The instance it is about.
    pub instance: String,
    /// The status it reports.
    pub status: String,
    /// When the watcher decided the change (the frame's `at`), ns since the epoch.
    pub decided_ns: i64,
    /// When the client received it, ns since the epoch.
    pub received_ns: i64,
}

/// What a client reads from the socket, besides status frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A status frame.
    Status {
        /// The instance.
        instance: String,
        /// Its new status.
        status: String,
        /// The frame's `at`, ns since the epoch.
        decided_ns: i64,
    },
    /// The snapshot sent on connect (and after a lag).
    Snapshot,
    /// The server dropped `missed` updates for this client.
    Lagged {
        /// How many.
        missed: u64,
    },
    /// The server reports a failure before it closes.
    Error(String),
}

/// Reads one text frame of the live endpoint.
pub fn parse_frame(text: &str) -> Result<Incoming, String> {
    let frame: Value =
        serde_json::from_str(text).map_err(|e| format!("frame is not JSON ({e}): {text}"))?;
    let field = |name: &str| {
        frame
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("frame without a string {name:?}: {text}"))
    };
    match field("type")? {
        "status" => {
            let at = field("at")?;
            let decided = chrono::DateTime::parse_from_rfc3339(at)
                .map_err(|e| format!("frame time {at:?} is not RFC 3339 ({e}): {text}"))?;
            let decided_ns = decided
                .timestamp_nanos_opt()
                .ok_or_else(|| format!("frame time {at:?} is out of range"))?;
            Ok(Incoming::Status {
                instance: field("instance_id")?.to_owned(),
                status: field("status")?.to_owned(),
                decided_ns,
            })
        }
        "snapshot" => Ok(Incoming::Snapshot),
        "lagged" => Ok(Incoming::Lagged {
            missed: frame.get("missed").and_then(Value::as_u64).unwrap_or(0),
        }),
        "error" => Ok(Incoming::Error(field("message").unwrap_or("(no message)").to_owned())),
        other => Err(format!("unknown frame type {other:?}: {text}")),
    }
}

/// A change of an instance's status as the engine's events show it: the time of the first
/// event of a run of events mapping to the same status (a clean stop is `die` (exit 0), then
/// `stop`; the platform's frame follows the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The instance.
    pub instance: String,
    /// The status it reached.
    pub status: String,
    /// The time of the event that made it, ns since the epoch.
    pub at_ns: i64,
    /// That event's action.
    pub action: String,
}

/// The status changes `events` add up to, per instance, in time order.
pub fn transitions(events: &[EngineEvent]) -> Vec<Transition> {
    let mut sorted: Vec<&EngineEvent> = events.iter().filter(|e| e.status.is_some()).collect();
    sorted.sort_by_key(|e| e.at_ns);
    let mut current: HashMap<&str, &str> = HashMap::new();
    let mut out = Vec::new();
    for event in sorted {
        let Some(status) = event.status.as_deref() else { continue };
        if current.insert(event.instance.as_str(), status) != Some(status) {
            out.push(Transition {
                instance: event.instance.clone(),
                status: status.to_owned(),
                at_ns: event.at_ns,
                action: event.action.clone(),
            });
        }
    }
    out
}

/// One frame with the engine event that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// Engine event -> frame received.
    pub total: Duration,
    /// Engine event -> the watcher's decision (`at`).
    pub to_watcher: Duration,
    /// The watcher's decision -> frame received.
    pub to_client: Duration,
    /// The status of the frame.
    pub status: String,
}

/// Every frame matched to its cause: the latest transition of the frame's instance to the
/// frame's status at or before the frame was received. Frames with no such transition are
/// returned apart. Negative spans (clock steps) count as zero.
pub fn match_frames(transitions: &[Transition], frames: &[Frame]) -> (Vec<Matched>, Vec<Frame>) {
    let mut by_key: HashMap<(&str, &str), Vec<i64>> = HashMap::new();
    for t in transitions {
        by_key.entry((t.instance.as_str(), t.status.as_str())).or_default().push(t.at_ns);
    }
    for times in by_key.values_mut() {
        times.sort_unstable();
    }
    let span = |from: i64, to: i64| Duration::from_nanos(u64::try_from(to - from).unwrap_or(0));
    let mut matched = Vec::with_capacity(frames.len());
    let mut unmatched = Vec::new();
    for frame in frames {
        let cause =
            by_key.get(&(frame.instance.as_str(), frame.status.as_str())).and_then(|times| {
                let before = times.partition_point(|at| *at <= frame.received_ns);
                before.checked_sub(1).map(|i| times[i])
            });
        match cause {
            Some(at_ns) => matched.push(Matched {
                total: span(at_ns, frame.received_ns),
                to_watcher: span(at_ns, frame.decided_ns),
                to_client: span(frame.decided_ns, frame.received_ns),
                status: frame.status.clone(),
            }),
            None => unmatched.push(frame.clone()),
        }
    }
    (matched, unmatched)
}

/// The live endpoint's URL for the platform at `base` (`http://host:port[/]`).
pub fn ws_url(base: &str) -> Result<String, String> {
    let base = base.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("http://") {
        Ok(format!("ws://{rest}/v1/ws"))
    } else if base.starts_with("https://") {
        Err(format!("--url {base}: this tool speaks plain ws:// only; use the http:// address"))
    } else {
        Err(format!("--url {base}: expected an http:// URL"))
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

/// The platform's HTTP API, as much as the tool needs.
struct Api {
    http: reqwest::Client,
    url: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status();
        let bytes =
            response.bytes().await.map_err(|e| format!("{method} {path}: reading body: {e}"))?;
        if !status.is_success() {
            return Err(format!("{method} {path}: {status}: {}", String::from_utf8_lossy(&bytes)));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| format!("{method} {path}: body is not JSON: {e}"))
    }

    /// `--logins` access tokens, each of a login of its own: of `username`, or of a user
    /// registered now.
    async fn sign_in(&self, args: &DockerWsArgs, run: u128) -> Result<Vec<String>, String> {
        let (username, password) = match (&args.username, &args.password) {
            (Some(username), Some(password)) => (username.clone(), password.clone()),
            _ => {
                let (username, password) = (format!("dws{run}"), format!("docker-ws-{run}"));
                let body = json!({"username": username, "password": password});
                self.call(reqwest::Method::POST, "/v1/auth/register", None, Some(&body)).await?;
                (username, password)
            }
        };
        let body = json!({"username": username, "password": password});
        let started = Instant::now();
        let mut tokens = Vec::with_capacity(args.logins);
        for _ in 0..args.logins {
            let pair =
                self.call(reqwest::Method::POST, "/v1/auth/login", None, Some(&body)).await?;
            tokens.push(
                pair.get("access_token")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| format!("login answered without an access token: {pair}"))?,
            );
        }
        if args.logins > 1 {
            println!("{} logins in {:.1?}", args.logins, started.elapsed());
        }
        Ok(tokens)
    }

    /// The platform's `iaas_live_session_checks_total`, if its `/metrics` answers.
    async fn session_checks(&self) -> Option<f64> {
        let response = self.http.get(format!("{}/metrics", self.url)).send().await.ok()?;
        let text = response.error_for_status().ok()?.text().await.ok()?;
        Some(
            text.lines()
                .filter(|line| line.starts_with("iaas_live_session_checks_total"))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }
}

/// The run's instance: its id and name, and its container once it runs.
#[derive(Debug, Clone)]
struct Provisioned {
    id: String,
    name: String,
    container: String,
}

/// What a client task reports to the coordinator.
#[derive(Debug)]
enum Report {
    /// A client got its snapshot (so it is subscribed).
    Ready {
        client: usize,
    },
    Frame(Frame),
    Lagged {
        client: usize,
        missed: u64,
    },
    Closed {
        client: usize,
        reason: String,
    },
}

/// Follows the engine's events about managed containers and sends each to `events`.
fn follow_engine(docker: Docker, events: mpsc::UnboundedSender<EngineEvent>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let label = format!("{LABEL_MANAGED}=true");
        let filters = HashMap::from([("type", vec!["container"]), ("label", vec![label.as_str()])]);
        let mut stream = docker.events(Some(EventsOptionsBuilder::new().filters(&filters).build()));
        while let Some(next) = stream.next().await {
            let message = match next {
                Ok(message) => message,
                Err(err) => {
                    println!("engine event stream failed: {err}; frames after this stay unmatched");
                    return;
                }
            };
            let action = message.action.unwrap_or_default();
            let attributes = message.actor.and_then(|a| a.attributes).unwrap_or_default();
            let (Some(instance), Some(at_ns)) =
                (attributes.get(LABEL_INSTANCE).cloned(), message.time_nano)
            else {
                continue;
            };
            let status = status_for_event(&action, &attributes).map(|s| s.as_str().to_owned());
            if events.send(EngineEvent { instance, action, status, at_ns }).is_err() {
                return;
            }
        }
        println!("engine event stream ended; frames after this stay unmatched");
    })
}

/// Connects client `client` and forwards what it reads to `reports`.
async fn connect_client(
    url: &str,
    token: &str,
    client: usize,
    reports: mpsc::UnboundedSender<Report>,
) -> Result<JoinHandle<()>, String> {
    let mut request =
        url.into_client_request().map_err(|e| format!("WebSocket request to {url}: {e}"))?;
    let authorization = format!("Bearer {token}")
        .parse::<tokio_tungstenite::tungstenite::http::HeaderValue>()
        .map_err(|e| format!("the access token is no header value: {e}"))?;
    request.headers_mut().insert("authorization", authorization);
    // The protocol's default read buffer (128 KiB) is zeroed on every read: at 10,000 clients
    // that memset was a sixth of the machine's CPU, taken from the platform under test.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(CLIENT_READ_BUFFER_BYTES);
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), false)
            .await
            .map_err(|e| format!("client {client}: connecting to {url}: {e}"))?;
    Ok(tokio::spawn(async move {
        let reason = loop {
            let message = match socket.next().await {
                Some(Ok(message)) => message,
                Some(Err(err)) => break format!("read failed: {err}"),
                None => break "closed by the server".to_owned(),
            };
            let received_ns = now_ns();
            let Message::Text(text) = message else { continue };
            let report = match parse_frame(&text) {
                Ok(Incoming::Status { instance, status, decided_ns }) => {
                    Report::Frame(Frame { client, instance, status, decided_ns, received_ns })
                }
                Ok(Incoming::Snapshot) => Report::Ready { client },
                Ok(Incoming::Lagged { missed }) => Report::Lagged { client, missed },
                Ok(Incoming::Error(message)) => break format!("server error frame: {message}"),
                Err(err) => break err,
            };
            if reports.send(report).is_err() {
                return;
            }
        };
        let _ = reports.send(Report::Closed { client, reason });
    }))
}

/// Counters of the run besides the frames.
#[derive(Debug, Default)]
struct Tally {
    lagged: u64,
    closed: Vec<String>,
    missing: u64,
    /// Frames with no engine event of their status before them (the tool's engine event
    /// stream failed, or the platform reported a change the engine did not).
    unmatched: u64,
}

/// The coordinator's view of the clients' reports.
struct Inbox {
    reports: mpsc::UnboundedReceiver<Report>,
    frames: Vec<Frame>,
    tally: Tally,
}

impl Inbox {
    fn take(&mut self, report: Report) {
        match report {
            Report::Ready { .. } => {}
            Report::Frame(frame) => self.frames.push(frame),
            Report::Lagged { client, missed } => {
                println!("client {client} lagged: {missed} updates dropped for it");
                self.tally.lagged += missed;
            }
            Report::Closed { client, reason } => {
                println!("client {client} closed: {reason}");
                self.tally.closed.push(format!("client {client}: {reason}"));
            }
        }
    }

    /// Waits until `clients` distinct clients have a frame of `instance` reaching `status`
    /// received after `since_ns`, or `deadline`; returns how many had it.
    async fn await_frames(
        &mut self,
        instance: &str,
        status: &str,
        since_ns: i64,
        clients: usize,
        deadline: Instant,
    ) -> usize {
        let wanted =
            |f: &Frame| f.instance == instance && f.status == status && f.received_ns >= since_ns;
        let mut got: HashSet<usize> =
            self.frames.iter().filter(|f| wanted(f)).map(|f| f.client).collect();
        while got.len() < clients {
            match tokio::time::timeout_at(deadline.into(), self.reports.recv()).await {
                Ok(Some(report)) => {
                    if let Report::Frame(frame) = &report
                        && wanted(frame)
                    {
                        got.insert(frame.client);
                    }
                    self.take(report);
                }
                Ok(None) | Err(_) => break,
            }
        }
        got.len()
    }
}

/// Runs `iaas-load docker-ws`.
pub async fn run(args: DockerWsArgs) -> Result<(), String> {
    if args.instances == 0 || args.rounds == 0 || args.logins == 0 {
        return Err("--instances, --rounds and --logins must be above 0".to_owned());
    }
    if args.clients.is_empty()
        || args.clients[0] == 0
        || args.clients.windows(2).any(|pair| pair[0] >= pair[1])
    {
        return Err("--clients: one count or a rising list of counts, each above 0".to_owned());
    }
    let url = args.url.trim_end_matches('/').to_owned();
    let ws = ws_url(&url)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))?;
    let api = Api { http, url };
    let docker = Docker::connect_with_defaults()
        .map_err(|e| format!("connecting to the Docker engine (DOCKER_HOST): {e}"))?
        .negotiate_version()
        .await
        .map_err(|e| format!("negotiating the Docker engine's API version: {e}"))?;
    let run = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
    let tokens = api.sign_in(&args, run).await?;
    let token = tokens[0].clone();

    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let engine = follow_engine(docker.clone(), events_tx);
    let mut instances = Vec::new();
    let outcome = async {
        provision(&args, &api, &docker, &token, run, &mut instances).await?;
        let run = Run { args: &args, docker: &docker, tokens: &tokens, ws: &ws, api: &api };
        run.sweep(&instances, events_rx).await
    }
    .await;
    engine.abort();
    // Best effort: every instance created is deleted, whatever happened before.
    for instance in &instances {
        let path = format!("/v1/instances/{}?purge=true", instance.id);
        match api.call(reqwest::Method::DELETE, &path, Some(&token), None).await {
            Ok(_) => println!("deleted {} ({})", instance.name, instance.id),
            Err(err) => println!("could not delete {} ({}): {err}", instance.name, instance.id),
        }
    }
    outcome
}

/// Creates the run's instances and waits until each runs, noting its container.
async fn provision(
    args: &DockerWsArgs,
    api: &Api,
    docker: &Docker,
    token: &str,
    run: u128,
    instances: &mut Vec<Provisioned>,
) -> Result<(), String> {
    let started = Instant::now();
    for i in 0..args.instances {
        let name = format!("dws{run}-{i}");
        let body = json!({
            "name": name,
            "spec": {"kind": "docker", "image": args.image, "command": ["sh", "-c", args.script]},
            "resources": {"millicpus": MILLICPUS, "memory_mib": MEMORY_MIB},
        });
        let reply =
            api.call(reqwest::Method::POST, "/v1/instances", Some(token), Some(&body)).await?;
        let id = reply["instance"]["id"]
            .as_str()
            .ok_or_else(|| format!("create answered without an instance id: {reply}"))?;
        instances.push(Provisioned { id: id.to_owned(), name, container: String::new() });
    }
    let ready_by = Instant::now() + Duration::from_secs(args.ready_timeout);
    for instance in instances.iter_mut() {
        let path = format!("/v1/instances/{}", instance.id);
        loop {
            let reply = api.call(reqwest::Method::GET, &path, Some(token), None).await?;
            let status = reply["status"].as_str().unwrap_or("?");
            match status {
                RUNNING => break,
                "failed" | "deleted" => {
                    return Err(format!("instance {} ended {status}: {reply}", instance.name));
                }
                _ if Instant::now() >= ready_by => {
                    return Err(format!(
                        "instance {} still {status} after {} s",
                        instance.name, args.ready_timeout
                    ));
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_INSTANCE}={}", instance.id)],
        )]);
        let containers = docker
            .list_containers(Some(ListContainersOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(|e| format!("listing the containers of {}: {e}", instance.name))?;
        instance.container = containers.into_iter().find_map(|c| c.id).ok_or_else(|| {
            format!("instance {} runs without a running container", instance.name)
        })?;
    }
    println!(
        "{} instances of {} running in {:.1?}",
        instances.len(),
        args.image,
        started.elapsed()
    );
    Ok(())
}

/// What each client reads into: a status frame is a few hundred bytes.
const CLIENT_READ_BUFFER_BYTES: usize = 4096;

/// Clients connected at once while a step adds them.
const CONNECTING_AT_ONCE: usize = 32;

/// What every step of a run shares.
struct Run<'a> {
    args: &'a DockerWsArgs,
    docker: &'a Docker,
    tokens: &'a [String],
    ws: &'a str,
    api: &'a Api,
}

impl Run<'_> {
    /// The rounds at each count of `--clients` in turn, clients added between the steps.
    async fn sweep(
        &self,
        instances: &[Provisioned],
        mut engine_events: mpsc::UnboundedReceiver<EngineEvent>,
    ) -> Result<(), String> {
        let args = self.args;
        let alone = args.platform_pid.map(Usage::of).transpose()?;
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let mut inbox = Inbox { reports: reports_rx, frames: Vec::new(), tally: Tally::default() };
        let mut clients: Vec<JoinHandle<()>> = Vec::new();
        let mut engine = Vec::new();
        let mut steps = Vec::new();
        let outcome = async {
            for &count in &args.clients {
                self.connect(&mut clients, count, &reports_tx, &mut inbox).await?;
                let mut step = self
                    .rounds(instances, count, &mut inbox, &mut engine_events, &mut engine)
                    .await?;
                if let (Some(pid), Some(alone)) = (args.platform_pid, alone) {
                    self.read_usage(pid, alone, &mut step).await?;
                }
                steps.push(step);
            }
            Ok::<(), String>(())
        }
        .await;
        for client in &clients {
            client.abort();
        }
        // The steps done are shown whatever ended the sweep.
        sweep::print_table(&steps);
        outcome?;
        let tally = &inbox.tally;
        if tally.missing > 0 || tally.unmatched > 0 || !tally.closed.is_empty() {
            return Err(format!(
                "{} frames missing, {} without their engine event, {} clients closed early",
                tally.missing,
                tally.unmatched,
                tally.closed.len()
            ));
        }
        if let Some(dir) = &args.out {
            for path in sweep::draw(&steps, dir)? {
                println!("wrote {}", path.display());
            }
        }
        Ok(())
    }

    /// Connects clients until `count` are, and waits until each new one has its snapshot (so
    /// it is subscribed).
    async fn connect(
        &self,
        clients: &mut Vec<JoinHandle<()>>,
        count: usize,
        reports: &mpsc::UnboundedSender<Report>,
        inbox: &mut Inbox,
    ) -> Result<(), String> {
        let started = Instant::now();
        let from = clients.len();
        let within = Duration::from_secs(self.args.frame_timeout);
        let mut connecting = futures_util::stream::iter(from..count)
            .map(|client| async move {
                tokio::time::timeout(
                    within,
                    connect_client(
                        self.ws,
                        &self.tokens[client % self.tokens.len()],
                        client,
                        reports.clone(),
                    ),
                )
                .await
                .map_err(|_| format!("client {client}: no WebSocket within {within:?}"))?
            })
            .buffer_unordered(CONNECTING_AT_ONCE);
        while let Some(connected) = connecting.next().await {
            clients.push(connected?);
        }
        let mut ready = 0;
        let ready_by = Instant::now() + Duration::from_secs(self.args.frame_timeout.max(30));
        while ready < count - from {
            match tokio::time::timeout_at(ready_by.into(), inbox.reports.recv()).await {
                // A snapshot of an older client (sent again after it lagged) is not a new one.
                Ok(Some(Report::Ready { client })) if client >= from => ready += 1,
                Ok(Some(other)) => inbox.take(other),
                Ok(None) | Err(_) => {
                    return Err(format!(
                        "{ready} of {} new clients got their snapshot",
                        count - from
                    ));
                }
            }
        }
        println!("{count} clients connected ({} new in {:.1?})", count - from, started.elapsed());
        Ok(())
    }

    /// The platform's memory with the clients connected, and its CPU over `--idle-secs` while
    /// nothing changes.
    async fn read_usage(
        &self,
        pid: u32,
        alone: Usage,
        step: &mut sweep::Step,
    ) -> Result<(), String> {
        let before = Usage::of(pid)?;
        let checks_before = self.api.session_checks().await;
        let window = Duration::from_secs(self.args.idle_secs);
        tokio::time::sleep(window).await;
        let after = Usage::of(pid)?;
        if let (Some(before), Some(after)) = (checks_before, self.api.session_checks().await) {
            step.session_checks_per_sec = Some((after - before) / window.as_secs_f64());
        }
        step.rss_kib = Some(after.rss_kib);
        step.kib_per_client =
            Some(after.rss_kib.saturating_sub(alone.rss_kib) as f64 / step.clients as f64);
        step.idle_cpu_percent = Some(before.cpu_percent_until(&after, window));
        Ok(())
    }

    /// `--rounds` rounds with `count` clients connected.
    async fn rounds(
        &self,
        instances: &[Provisioned],
        count: usize,
        inbox: &mut Inbox,
        engine_events: &mut mpsc::UnboundedReceiver<EngineEvent>,
        engine: &mut Vec<EngineEvent>,
    ) -> Result<sweep::Step, String> {
        let args = self.args;
        let rounds_started = Instant::now();
        // A client may still get a frame of the provisioning or of an earlier step: only frames
        // of this step's rounds count.
        let rounds_start_ns = now_ns();
        let missing_before = inbox.tally.missing;
        let frame_timeout = Duration::from_secs(args.frame_timeout);
        for round in 0..args.rounds {
            let instance = &instances[round % instances.len()];
            let mut line = format!("round {:>3}/{} {}:", round + 1, args.rounds, instance.name);
            for status in [STOPPED, RUNNING] {
                let since_ns = now_ns();
                let action = if status == STOPPED {
                    self.docker
                        .stop_container(
                            &instance.container,
                            Some(StopContainerOptionsBuilder::new().t(args.stop_timeout).build()),
                        )
                        .await
                } else {
                    self.docker.start_container(&instance.container, None).await
                };
                action.map_err(|e| format!("{status}: engine action on {}: {e}", instance.name))?;
                let deadline = Instant::now() + frame_timeout;
                let got = inbox.await_frames(&instance.id, status, since_ns, count, deadline).await;
                let missing = count - got.min(count);
                if missing > 0 {
                    println!(
                        "  {missing} of {count} clients had no {status} frame of {} within {} s",
                        instance.name, args.frame_timeout
                    );
                }
                inbox.tally.missing += missing as u64;
                while let Ok(event) = engine_events.try_recv() {
                    engine.push(event);
                }
                let round_frames: Vec<Frame> = inbox
                    .frames
                    .iter()
                    .filter(|f| {
                        f.instance == instance.id && f.status == status && f.received_ns >= since_ns
                    })
                    .cloned()
                    .collect();
                let (mut matched, _) = match_frames(&transitions(engine), &round_frames);
                matched.sort_by_key(|m| m.total);
                line.push_str(&format!(
                    "  {status} {got}/{count} p50 {:.1?} max {:.1?}",
                    report::percentile(&matched.iter().map(|m| m.total).collect::<Vec<_>>(), 0.5),
                    matched.last().map(|m| m.total).unwrap_or_default(),
                ));
            }
            println!("{line}");
        }
        let elapsed = rounds_started.elapsed();
        // Frames still in flight when the last round gave up, and the last engine events.
        while let Ok(report) = inbox.reports.try_recv() {
            inbox.take(report);
        }
        while let Ok(event) = engine_events.try_recv() {
            engine.push(event);
        }
        // This step's frames leave the inbox: a sweep to 10,000 clients would otherwise keep
        // every frame of every step.
        let (before, frames): (Vec<Frame>, Vec<Frame>) = std::mem::take(&mut inbox.frames)
            .into_iter()
            .partition(|f| f.received_ns < rounds_start_ns);
        if !before.is_empty() {
            println!(
                "{} frames from before the rounds (provisioning, earlier step) left out",
                before.len()
            );
        }
        let (matched, unmatched) = match_frames(&transitions(engine), &frames);
        inbox.tally.unmatched += unmatched.len() as u64;
        let missing = inbox.tally.missing - missing_before;
        print_report(args, count, &matched, &unmatched, &inbox.tally, missing, elapsed);
        Ok(sweep::Step::new(count, &matched, missing))
    }
}

fn print_report(
    args: &DockerWsArgs,
    clients: usize,
    matched: &[Matched],
    unmatched: &[Frame],
    tally: &Tally,
    missing: u64,
    elapsed: Duration,
) {
    println!(
        "\n{} rounds, {} instances, {clients} clients, {:.1} s; frames: {} matched, {} unmatched, {missing} missing, {} lagged so far",
        args.rounds,
        args.instances,
        elapsed.as_secs_f64(),
        matched.len(),
        unmatched.len(),
        tally.lagged,
    );
    report::print_header("path");
    /// A row: its name, the status it is limited to, the span it reports.
    type Row = (&'static str, Option<&'static str>, fn(&Matched) -> Duration);
    let rows: [Row; 3] = [
        ("frame", None, |m| m.total),
        (STOPPED, Some(STOPPED), |m| m.total),
        (RUNNING, Some(RUNNING), |m| m.total),
    ];
    for (name, status, span) in rows {
        let mut latencies: Vec<Duration> =
            matched.iter().filter(|m| status.is_none_or(|s| m.status == s)).map(span).collect();
        let errors = if name == "frame" { missing } else { 0 };
        report::print_row(name, &mut latencies, errors, elapsed);
    }
    println!("frame: engine event -> frame at the client; stopped / running: the same by status");
    for frame in unmatched.iter().take(5) {
        println!("unmatched frame (no engine event of its status before it): {frame:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn event(instance: &str, action: &str, status: Option<&str>, at_ms: i64) -> EngineEvent {
        EngineEvent {
            instance: instance.to_owned(),
            action: action.to_owned(),
            status: status.map(str::to_owned),
            at_ns: at_ms * MS,
        }
    }

    fn frame(
        client: usize,
        instance: &str,
        status: &str,
        decided_ms: i64,
        received_ms: i64,
    ) -> Frame {
        Frame {
            client,
            instance: instance.to_owned(),
            status: status.to_owned(),
            decided_ns: decided_ms * MS,
            received_ns: received_ms * MS,
        }
    }

    #[test]
    fn a_clean_stop_is_one_transition_at_its_first_event() {
        let events = [
            event("a", "kill", None, 100),
            event("a", "stop", Some(STOPPED), 130),
            event("a", "die", Some(STOPPED), 120),
            event("a", "start", Some(RUNNING), 500),
        ];
        let got = transitions(&events);
        let summary: Vec<_> =
            got.iter().map(|t| (t.status.as_str(), t.at_ns / MS, t.action.as_str())).collect();
        assert_eq!(summary, vec![(STOPPED, 120, "die"), (RUNNING, 500, "start")]);
    }

    #[test]
    fn each_instance_has_its_own_transitions() {
        let events = [
            event("a", "die", Some(STOPPED), 100),
            event("b", "die", Some(STOPPED), 110),
            event("a", "stop", Some(STOPPED), 120),
        ];
        let got = transitions(&events);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!((got[1].instance.as_str(), got[1].at_ns), ("b", 110 * MS));
    }

    #[test]
    fn a_frame_matches_the_latest_change_before_it_and_splits_into_hops() {
        let changes = transitions(&[
            event("a", "die", Some(STOPPED), 100),
            event("a", "start", Some(RUNNING), 200),
            event("a", "die", Some(STOPPED), 300),
        ]);
        let (matched, unmatched) = match_frames(
            &changes,
            &[frame(0, "a", STOPPED, 305, 340), frame(1, "a", RUNNING, 210, 260)],
        );
        assert!(unmatched.is_empty());
        assert_eq!(
            (matched[0].total, matched[0].to_watcher, matched[0].to_client),
            (Duration::from_millis(40), Duration::from_millis(5), Duration::from_millis(35))
        );
        assert_eq!(matched[1].total, Duration::from_millis(60));
    }

    #[test]
    fn a_frame_without_a_cause_is_unmatched() {
        let changes = transitions(&[event("a", "die", Some(STOPPED), 100)]);
        let frames = [
            frame(0, "a", RUNNING, 50, 60),   // no running change at all
            frame(0, "a", STOPPED, 40, 50),   // before the change
            frame(0, "b", STOPPED, 100, 150), // another instance
        ];
        let (matched, unmatched) = match_frames(&changes, &frames);
        assert!(matched.is_empty(), "{matched:?}");
        assert_eq!(unmatched, frames.to_vec());
    }

    #[test]
    fn a_clock_step_counts_as_zero_rather_than_wrapping() {
        let changes = transitions(&[event("a", "die", Some(STOPPED), 100)]);
        let (matched, _) = match_frames(&changes, &[frame(0, "a", STOPPED, 90, 120)]);
        assert_eq!(matched[0].to_watcher, Duration::ZERO);
        assert_eq!(matched[0].to_client, Duration::from_millis(30));
    }

    #[test]
    fn status_frames_and_others_are_read() {
        let status = parse_frame(
            r#"{"at":"2026-11-25T17:00:00.000123Z","event":"docker.stopped","instance_id":"i-1","status":"stopped","type":"status"}"#,
        );
        assert_eq!(
            status,
            Ok(Incoming::Status {
                instance: "i-1".to_owned(),
                status: STOPPED.to_owned(),
                decided_ns: 1_795_626_000_000_123_000,
            })
        );
        assert_eq!(parse_frame(r#"{"type":"snapshot","instances":[]}"#), Ok(Incoming::Snapshot));
        assert_eq!(
            parse_frame(r#"{"type":"lagged","missed":3}"#),
            Ok(Incoming::Lagged { missed: 3 })
        );
        for bad in ["nope", r#"{"type":"status"}"#, r#"{"type":"odd"}"#] {
            assert!(parse_frame(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn the_live_url_follows_the_platform_url() {
        assert_eq!(ws_url("http://127.0.0.1:8080/").as_deref(), Ok("ws://127.0.0.1:8080/v1/ws"));
        assert!(ws_url("https://example.test").is_err());
        assert!(ws_url("127.0.0.1:8080").is_err());
    }
}
