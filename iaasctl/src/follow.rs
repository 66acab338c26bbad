//! Following an instance until it reaches a status: the progress output of `instances create`
//! and of `start|stop --wait`.
//!
//! Two sources feed it. The live WebSocket (`GET /v1/ws`) pushes each status change as it is
//! committed; its first frame is a snapshot, so a change that happened before the socket was
//! open is seen too. Beside it, the instance is polled every
//! [`ClientConfig::poll_interval`](crate::ClientConfig::poll_interval): a platform without the
//! socket, a proxy that refuses upgrades or a dropped connection then only makes the output
//! slower, never wrong. Each status is printed once, when it first differs from the last one.

use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use iaas_core::{Instance, InstanceId, InstanceStatus};
use reqwest::Method;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::{Client, decode};
use crate::error::{CliError, Result};

/// A frame of the live status socket (see `iaas_docker::http`).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Frame {
    Snapshot { instances: Vec<SnapshotItem> },
    Status { instance_id: InstanceId, status: InstanceStatus, event: String, at: DateTime<Utc> },
    Lagged {},
    Error { message: String },
}

#[derive(Debug, Deserialize)]
struct SnapshotItem {
    id: InstanceId,
    status: InstanceStatus,
}

/// What the live socket said next.
enum Feed {
    Frame(Frame),
    Closed(String),
}

/// The live status socket.
struct LiveFeed {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl LiveFeed {
    /// Opens the socket; the error says why it could not be, for a note.
    async fn connect(client: &Client) -> Result<Self, String> {
        let token = client.access_token().await.map_err(|err| err.to_string())?;
        let mut url =
            client.endpoint("/v1/ws", &[("access_token", token)]).map_err(|e| e.to_string())?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme).map_err(|()| format!("cannot make a {scheme} URL"))?;
        let connect = tokio_tungstenite::connect_async(url.as_str());
        match tokio::time::timeout(client.config().connect_timeout, connect).await {
            Ok(Ok((socket, _))) => Ok(Self { socket }),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("no answer in time".to_owned()),
        }
    }

    /// The next frame this client understands.
    async fn next(&mut self) -> Feed {
        loop {
            match self.socket.next().await {
                None => return Feed::Closed("the platform closed it".to_owned()),
                Some(Err(err)) => return Feed::Closed(err.to_string()),
                Some(Ok(Message::Close(_))) => {
                    return Feed::Closed("the platform closed it".to_owned());
                }
                Some(Ok(Message::Text(text))) => {
                    // A frame type added after this client was built is skipped, not fatal.
                    if let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) {
                        return Feed::Frame(frame);
                    }
                }
                // Pings are answered by tungstenite; nothing else is sent by the platform.
                Some(Ok(_)) => {}
            }
        }
    }
}

/// The next frame of `feed`, or never when there is no feed (polling carries on alone).
async fn next_frame(feed: &mut Option<LiveFeed>) -> Feed {
    match feed {
        Some(feed) => feed.next().await,
        None => std::future::pending().await,
    }
}

/// Prints each status `instance` goes through until it is `goal`; fails when it settles on
/// another status (failed, deleted, or back where it was when the engine refused an action),
/// or is not `goal` within `timeout`.
pub(crate) async fn follow(
    client: &Client,
    progress: &mut dyn Write,
    instance: &Instance,
    goal: InstanceStatus,
    timeout: Duration,
) -> Result<()> {
    let mut watch = Watch { instance, goal, last: None, progress };
    if watch.observe(client, instance.status, None, client.now()).await? {
        return Ok(());
    }
    let mut feed = match LiveFeed::connect(client).await {
        Ok(feed) => Some(feed),
        Err(reason) => {
            writeln!(watch.progress, "(no live status: {reason}; polling instead)")?;
            None
        }
    };
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(CliError::WaitTimedOut {
                name: instance.name.to_string(),
                status: watch.last.unwrap_or(instance.status).to_string(),
                wanted: goal.to_string(),
                waited_secs: timeout.as_secs(),
            });
        }
        let tick = client.config().poll_interval.min(remaining);
        let seen = tokio::select! {
            frame = next_frame(&mut feed) => Some(frame),
            () = tokio::time::sleep(tick) => None,
        };
        let done = match seen {
            Some(Feed::Frame(Frame::Snapshot { instances })) => {
                match instances.iter().find(|item| item.id == instance.id) {
                    Some(item) => watch.observe(client, item.status, None, client.now()).await?,
                    None => false,
                }
            }
            Some(Feed::Frame(Frame::Status { instance_id, status, event, at }))
                if instance_id == instance.id =>
            {
                watch.observe(client, status, Some(&event), at).await?
            }
            Some(Feed::Frame(Frame::Error { message })) => {
                writeln!(watch.progress, "(live status ended: {message}; polling instead)")?;
                feed = None;
                false
            }
            Some(Feed::Frame(_)) => false,
            Some(Feed::Closed(reason)) => {
                writeln!(watch.progress, "(live status ended: {reason}; polling instead)")?;
                feed = None;
                false
            }
            // The deadline itself: time out (at the top of the loop) instead of polling late.
            None if Instant::now() >= deadline => false,
            None => {
                let path = format!("/v1/instances/{}", instance.id);
                let value = client.send(Method::GET, &path, &[], None).await?;
                let current: Instance = decode(client.url(), value)?;
                watch.observe(client, current.status, None, client.now()).await?
            }
        };
        if done {
            return Ok(());
        }
    }
}

/// The state of one follow.
struct Watch<'a> {
    instance: &'a Instance,
    goal: InstanceStatus,
    last: Option<InstanceStatus>,
    progress: &'a mut dyn Write,
}

impl Watch<'_> {
    /// Records `status`; `true` once it is the goal, an error when it can no longer get there.
    async fn observe(
        &mut self,
        client: &Client,
        status: InstanceStatus,
        event: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        if self.last != Some(status) {
            let time = at.format("%H:%M:%S");
            let line = format!("{time}  {:<12}  {}", status.as_str(), event.unwrap_or_default());
            writeln!(self.progress, "{}", line.trim_end())?;
            self.last = Some(status);
        }
        if status == self.goal {
            return Ok(true);
        }
        // Anything else that is not on the way (provisioning, or an action under way) is where
        // it ended: failed, deleted, or back where it was when the engine refused the action.
        if !(status == InstanceStatus::Provisioning || status.is_transitional()) {
            return Err(CliError::InstanceFailed {
                id: self.instance.id.to_string(),
                name: self.instance.name.to_string(),
                status: status.to_string(),
                reason: failure_reason(client, self.instance.id).await,
            });
        }
        Ok(false)
    }
}

/// The error the platform recorded with the instance's latest event (a `failed` one, or the
/// event of an action the engine refused), if it can be found: the reason is a courtesy, so a
/// failure to fetch it is not an error of its own.
async fn failure_reason(client: &Client, id: InstanceId) -> Option<String> {
    let query = [("instance", id.to_string()), ("limit", "1".into())];
    let value = client.send(Method::GET, "/v1/events", &query, None).await.ok()?;
    value["entries"][0]["metadata"]["error"].as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    //! The frame handling against a scripted WebSocket peer on a real socket (the platform's
    //! side is covered end to end by `tests/cli.rs`).

    use std::sync::Arc;

    use chrono::Duration as Age;
    use futures_util::SinkExt;
    use iaas_core::{DockerSpec, InstanceName, InstanceSpec, ManualClock, Resources, UserId};
    use serde_json::json;
    use tokio::net::TcpListener;

    use super::*;
    use crate::client::ClientConfig;
    use crate::credentials::{CredentialStore, Credentials};

    /// A poll interval no test lasts: every status comes through the socket.
    const NO_POLLING: Duration = Duration::from_secs(3600);

    /// A client of `url`, logged in with a token that is far from expiring.
    fn client(url: &str, dir: &std::path::Path, poll_interval: Duration) -> Client {
        let now = Utc::now();
        let store = CredentialStore::new(dir.join("credentials"));
        store
            .save(&Credentials {
                url: url.to_owned(),
                username: "ada".into(),
                access_token: "a.b.c".into(),
                access_expires_at: now + Age::hours(1),
                refresh_token: "r".into(),
                refresh_expires_at: now + Age::days(7),
            })
            .unwrap();
        let config = ClientConfig { poll_interval, ..ClientConfig::default() };
        Client::new(url, store, Arc::new(ManualClock::new(now)), config).unwrap()
    }

    fn instance() -> Instance {
        let spec = InstanceSpec::Docker(DockerSpec {
            image: "busybox".into(),
            env: Default::default(),
            ports: Vec::new(),
            command: None,
        });
        Instance::new(
            UserId::new_random(),
            InstanceName::new("worker").unwrap(),
            spec,
            Resources::default(),
            Utc::now(),
        )
        .unwrap()
    }

    /// Serves one WebSocket connection that sends `frames`, then stops listening, so any
    /// later request (the failure reason) finds the port closed.
    async fn peer(frames: Vec<serde_json::Value>) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            drop(listener);
            let mut path = String::new();
            #[allow(clippy::result_large_err, reason = "tungstenite fixes the callback's types")]
            let callback =
                |request: &tokio_tungstenite::tungstenite::handshake::server::Request, response| {
                    path = request.uri().to_string();
                    Ok(response)
                };
            let mut socket = tokio_tungstenite::accept_hdr_async(stream, callback).await.unwrap();
            for frame in frames {
                socket.send(Message::Text(frame.to_string().into())).await.unwrap();
            }
            // Keep the socket open until the client has read what it needed and hung up.
            while let Some(Ok(_)) = socket.next().await {}
            path
        });
        (url, task)
    }

    /// Follows `instance` until it runs (within 10 s); what was printed.
    async fn follow_to_running(client: &Client, instance: &Instance) -> String {
        let mut out = Vec::new();
        follow(client, &mut out, instance, InstanceStatus::Running, Duration::from_secs(10))
            .await
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn each_status_from_the_socket_is_printed_once_until_the_goal() {
        let dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name("iaasctl-ws"));
        let instance = instance();
        let other = InstanceId::new_random();
        let (url, peer) = peer(vec![
            json!({"type": "snapshot", "instances": [
                {"id": instance.id, "name": "worker", "kind": "docker", "status": "provisioning"},
                {"id": other, "name": "x", "kind": "docker", "status": "failed"}]}),
            json!({"type": "status", "instance_id": other, "status": "failed",
                   "event": "docker.failed", "at": "2030-01-01T10:00:00Z"}),
            json!({"type": "lagged", "missed": 3}),
            json!({"type": "something_new"}),
            json!({"type": "status", "instance_id": instance.id, "status": "running",
                   "event": "docker.started", "at": "2030-01-01T10:00:01Z"}),
        ])
        .await;
        let client = client(&url, &dir, NO_POLLING);
        let out = follow_to_running(&client, &instance).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].ends_with("  provisioning"), "{out}");
        assert_eq!(lines[1], "10:00:01  running       docker.started");
        drop(client);
        let path = tokio::time::timeout(Duration::from_secs(5), peer).await.unwrap().unwrap();
        assert_eq!(path, "/v1/ws?access_token=a.b.c", "the token travels in the query");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_failed_status_ends_the_follow_with_an_error() {
        let dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name("iaasctl-ws"));
        let instance = instance();
        let (url, _peer) = peer(vec![json!({"type": "status", "instance_id": instance.id,
            "status": "failed", "event": "docker.failed", "at": "2030-01-01T10:00:01Z"})])
        .await;
        let client = client(&url, &dir, NO_POLLING);
        let mut out = Vec::new();
        let err =
            follow(&client, &mut out, &instance, InstanceStatus::Running, Duration::from_secs(10))
                .await
                .unwrap_err();
        assert!(
            matches!(&err, CliError::InstanceFailed { status, reason: None, .. } if status == "failed"),
            "{err}"
        );
        assert!(String::from_utf8(out).unwrap().contains("failed        docker.failed"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn without_the_socket_the_status_is_polled() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name("iaasctl-ws"));
        let instance = instance();
        let mut running = instance.clone();
        running.status = InstanceStatus::Running;
        let body = serde_json::to_string(&running).unwrap();
        // A server that refuses the upgrade, as a proxy without WebSocket support would, and
        // answers the instance read with the instance running.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut requests = Vec::new();
            while requests.len() < 2 {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut head = vec![0u8; 4096];
                let n = stream.read(&mut head).await.unwrap();
                let head = String::from_utf8_lossy(&head[..n]).into_owned();
                let line = head.lines().next().unwrap_or_default().to_owned();
                let (status, body) = if head.to_ascii_lowercase().contains("upgrade: websocket") {
                    ("404 Not Found", r#"{"error":{"code":"not_found","message":"no"}}"#)
                } else {
                    ("200 OK", body.as_str())
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(response.as_bytes()).await.unwrap();
                requests.push(line);
            }
            requests
        });
        let client = client(&url, &dir, Duration::from_millis(50));
        let out = follow_to_running(&client, &instance).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[1].starts_with("(no live status: "), "{out}");
        assert!(lines[2].ends_with("  running"), "a polled status has no event name: {out}");
        let requests = server.await.unwrap();
        assert!(requests[0].starts_with("GET /v1/ws?access_token="), "{requests:?}");
        assert_eq!(requests[1], format!("GET /v1/instances/{} HTTP/1.1", instance.id));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn without_a_goal_in_time_the_follow_times_out_naming_the_status() {
        let dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name("iaasctl-ws"));
        let instance = instance();
        let (url, _peer) = peer(Vec::new()).await;
        let client = client(&url, &dir, NO_POLLING);
        let mut out = Vec::new();
        let err =
            follow(&client, &mut out, &instance, InstanceStatus::Running, Duration::from_secs(1))
                .await
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "instance worker is still provisioning after 1 s (wanted running)"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
