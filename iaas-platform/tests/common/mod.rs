//! Shared by the platform's test binaries: the platform served in this process ([`Served`]),
//! the real binary ([`start_binary`]), and JSON calls over a real socket ([`call`], [`ok`]).

#![allow(dead_code, unreachable_pub, reason = "each test binary uses part of this shared module")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use iaas_platform::{Config, HttpLimits, Platform};
use iaas_testkit::process::{Server, command};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longer than any answer may take: the platform's request timeout in these tests is at most
/// 5 s, a Redis call's timeout is shorter still, and argon2 in a debug build takes about a
/// second.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the platform's background tasks may take to stop.
const PLATFORM_STOP_DEADLINE: Duration = Duration::from_secs(60);
/// How long starting the platform may take (with Kafka: creating the events topic, bounded at
/// 10 s by the platform itself, and joining the consumer groups in the background).
const PLATFORM_START_DEADLINE: Duration = Duration::from_secs(120);

/// The configuration of `settings` (variable, value) alone, plus the inherited `DOCKER_HOST`
/// (the engine the suite uses); nothing else from the environment.
pub fn config(settings: &[(&str, String)]) -> Config {
    Config::from_lookup(|key| {
        iaas_testkit::process::lookup(settings, key)
            .or_else(|| std::env::var(key).ok().filter(|_| key == iaas_platform::DOCKER_HOST_VAR))
    })
    .unwrap()
}

/// The settings of a platform on embedded defaults in `data_dir`, on a free loopback port.
pub fn embedded(data_dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        (iaas_platform::LISTEN_VAR, "127.0.0.1:0".to_owned()),
        (iaas_platform::DATA_DIR_VAR, data_dir.display().to_string()),
    ]
}

/// A platform served in this process on a free loopback port.
pub struct Served {
    /// Where it listens.
    pub addr: String,
    /// The running platform, for its ports and metrics.
    pub platform: Platform,
    /// The configuration it runs on.
    pub config: Config,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
    /// A data directory of its own, removed by [`Served::stop`].
    data_dir: Option<PathBuf>,
}

impl Served {
    /// Starts the platform of `config` and serves its router, each request bounded by `limits`.
    pub async fn start(config: Config, limits: HttpLimits) -> Self {
        let platform = tokio::time::timeout(PLATFORM_START_DEADLINE, Platform::start(&config))
            .await
            .expect("the platform starts within 120 s")
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let router = iaas_platform::router_with_limits(&platform, limits);
        let (stop, stopped) = oneshot::channel::<()>();
        let served = config.clone();
        let server = tokio::spawn(async move {
            iaas_platform::serve(listener, router, &served, async {
                let _ = stopped.await;
            })
            .await
        });
        Self { addr, platform, config, stop, server, data_dir: None }
    }

    /// [`Served::start`] on embedded defaults in a new data directory named after `prefix`,
    /// removed again by [`Served::stop`].
    pub async fn start_embedded(prefix: &str, limits: HttpLimits) -> Self {
        let data_dir = iaas_testkit::isolation::temp_dir(prefix);
        let served = Self::start(config(&embedded(&data_dir)), limits).await;
        Self { data_dir: Some(data_dir), ..served }
    }

    /// Stops serving (graceful, within 30 s) and shuts the platform down (its background
    /// tasks within 60 s).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.server)
            .await
            .expect("the server stops within 30 s")
            .unwrap()
            .unwrap();
        // The relay and the Kafka consumers finish their work in flight and commit: against a
        // wedged broker that must fail the test, not hang CI.
        tokio::time::timeout(PLATFORM_STOP_DEADLINE, self.platform.shutdown())
            .await
            .expect("the platform's background tasks (relay, consumers, watcher) stop within 60 s");
        if let Some(data_dir) = self.data_dir {
            std::fs::remove_dir_all(&data_dir).unwrap();
        }
    }
}

/// Starts the real binary on embedded defaults in `data_dir` (no inherited `IAAS_*` setting,
/// `RUST_LOG=info`) and waits for it to log its address.
pub async fn start_binary(data_dir: &Path) -> Server {
    let mut settings = embedded(data_dir);
    settings.push((iaas_platform::LOG_VAR, "info".to_owned()));
    Server::start(command(env!("CARGO_BIN_EXE_iaas-platform"), "IAAS_", &settings)).await.unwrap()
}

/// Sends one JSON request (no body when `body` is `Null`) with `token` if any; `Err` when there
/// is no complete answer within [`CLIENT_TIMEOUT`] or the body is neither empty nor JSON.
pub async fn call(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> Result<(u16, Value), String> {
    let body = Some(body).filter(|body| !body.is_null());
    let request = iaas_testkit::http::request_text(addr, method, path, token, body);
    let response = iaas_testkit::http::send_within(addr, request.as_bytes(), CLIENT_TIMEOUT)
        .await
        .map_err(|err| err.to_string())?;
    if response.body.trim().is_empty() {
        return Ok((response.status, Value::Null));
    }
    serde_json::from_str(&response.body).map(|json| (response.status, json)).map_err(|err| {
        format!("status {}, body not JSON ({err}): {}", response.status, response.body)
    })
}

/// The body of a `POST /v1/instances` for a busybox shell named `name` that sleeps and exits
/// cleanly on SIGTERM (a tenth of a core, 32 MiB).
pub fn sleeper(name: &str) -> Value {
    serde_json::json!({
        "name": name,
        "spec": {"kind": "docker", "image": iaas_testkit::busybox_image(),
                 "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 300 & wait"]},
        "resources": {"millicpus": 100, "memory_mib": 32}
    })
}

/// [`call`], asserting a 2xx answer; returns its body.
pub async fn ok(addr: &str, method: &str, path: &str, token: Option<&str>, body: &Value) -> Value {
    let (status, answer) = call(addr, method, path, token, body).await.unwrap();
    assert!((200..300).contains(&status), "{method} {path}: {status} {answer}");
    answer
}

/// `DELETE {path}?purge=true` as `token`, asserting it is accepted (202, `deleting`), then waits
/// until the instance reads `deleted` (its containers are gone).
pub async fn delete_and_wait(addr: &str, path: &str, token: &str) {
    let (status, body) =
        call(addr, "DELETE", &format!("{path}?purge=true"), Some(token), &Value::Null)
            .await
            .unwrap();
    assert_eq!((status, body["status"].as_str()), (202, Some("deleting")), "{body}");
    iaas_testkit::wait::eventually(Duration::from_secs(60), || async {
        let (_, body) = call(addr, "GET", path, Some(token), &Value::Null).await?;
        if body["status"] == "deleted" { Ok(()) } else { Err(body.to_string()) }
    })
    .await
    .unwrap_or_else(|last| panic!("{path} never became deleted: {last}"));
}
