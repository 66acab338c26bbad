//! `iaasctl instances switchover` against a recording stand-in for the platform: the requests
//! the command sends (route, token, body with and without `--target`), what it prints from the
//! answer, and how a refusal comes back. A stand-in rather than the platform because a real
//! switchover needs a running highly available cluster; the platform's side of the contract
//! is tested in iaas-provisioning.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::Parser;
use iaas_core::{Instance, InstanceName, InstanceSpec, InstanceStatus, PostgresSpec, UserId};
use iaasctl::{Cli, CliError, Client, ClientConfig, Console, CredentialStore, Credentials};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The stand-in's "status" for a request it never answers.
const SILENT: u16 = 0;

/// One request as the stand-in received it.
#[derive(Debug, Clone, PartialEq)]
struct Received {
    method: String,
    path: String,
    authorization: Option<String>,
    body: Option<Value>,
}

/// A platform stand-in on a loopback port: answers each request with the next of `replies`
/// (status, JSON body; status [`SILENT`] holds the connection open without answering) and
/// records what it got. One request per connection (`Connection: close`), which reqwest
/// honours.
struct StandIn {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl StandIn {
    async fn start(replies: Vec<(u16, Value)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        tokio::spawn(async move {
            for (status, reply) in replies {
                let (mut socket, _) = listener.accept().await.unwrap();
                let request = read_request(&mut socket).await;
                log.lock().unwrap().push(request);
                if status == SILENT {
                    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                    continue;
                }
                let body = reply.to_string();
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(answer.as_bytes()).await.unwrap();
                socket.shutdown().await.unwrap();
            }
        });
        Self { url, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Reads one HTTP/1.1 request: the head up to the blank line, then `content-length` bytes.
async fn read_request(socket: &mut tokio::net::TcpStream) -> Received {
    let mut bytes = Vec::new();
    let mut chunk = [0_u8; 4096];
    let head_end = loop {
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = socket.read(&mut chunk).await.unwrap();
        assert_ne!(n, 0, "the client closed before the request was complete");
        bytes.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(bytes[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let mut start = lines.next().unwrap().split(' ');
    let (method, path) = (start.next().unwrap().to_owned(), start.next().unwrap().to_owned());
    let header = |name: &str| {
        head.split("\r\n").find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    };
    let length: usize = header("content-length").map_or(0, |l| l.parse().unwrap());
    while bytes.len() < head_end + length {
        let n = socket.read(&mut chunk).await.unwrap();
        assert_ne!(n, 0, "the client closed before the body was complete");
        bytes.extend_from_slice(&chunk[..n]);
    }
    let body = (length > 0).then(|| serde_json::from_slice(&bytes[head_end..]).unwrap());
    Received { method, path, authorization: header("authorization"), body }
}

/// A logged-in client of `url`, its credentials in a private directory.
fn client(url: &str) -> (Client, PathBuf) {
    let dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name("iaasctl-switch"));
    let store = CredentialStore::new(dir.join("credentials"));
    let now = chrono::Utc::now();
    store
        .save(&Credentials {
            url: url.to_owned(),
            username: "ada".to_owned(),
            access_token: "access-1".to_owned(),
            access_expires_at: now + chrono::Duration::hours(1),
            refresh_token: "refresh-1".to_owned(),
            refresh_expires_at: now + chrono::Duration::days(1),
        })
        .unwrap();
    let client =
        Client::new(url, store, Arc::new(iaas_core::SystemClock), ClientConfig::default()).unwrap();
    (client, dir)
}

/// A running, highly available cluster named `orders`.
fn orders() -> Instance {
    let spec = InstanceSpec::Postgres(PostgresSpec::new("app", 2).highly_available().synchronous());
    let mut instance = Instance::new(
        UserId::new_random(),
        InstanceName::new("orders").unwrap(),
        spec,
        Default::default(),
        chrono::Utc::now(),
    )
    .unwrap();
    instance.status = InstanceStatus::Running;
    instance
}

/// Runs `iaasctl ARGS` with `client`; the result, standard output and standard error.
async fn run(client: &Client, args: &[&str]) -> (Result<(), CliError>, String, String) {
    let cli = Cli::parse_from(["iaasctl"].iter().chain(args));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = iaasctl::run(cli.command, client, &mut Console::new(&mut out, &mut err)).await;
    (result, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

#[tokio::test]
async fn a_switchover_to_a_chosen_member_posts_it_and_prints_both_primaries() {
    let instance = orders();
    let id = instance.id.to_string();
    let answer = json!({"instance_id": id, "action": "switchover", "old_primary": "member-0",
                        "new_primary": "member-1", "timeline": 3, "took_ms": 3812});
    let platform = StandIn::start(vec![(200, json!(instance)), (200, answer)]).await;
    let (client, dir) = client(&platform.url);

    let (result, stdout, _) =
        run(&client, &["instances", "switchover", &id, "--target", "member-1"]).await;
    result.unwrap();

    let received = platform.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(
        (received[0].method.as_str(), received[0].path.as_str()),
        ("GET", &*format!("/v1/instances/{id}"))
    );
    assert_eq!(
        received[1],
        Received {
            method: "POST".to_owned(),
            path: format!("/v1/instances/{id}/switchover"),
            authorization: Some("Bearer access-1".to_owned()),
            body: Some(json!({"target": "member-1"})),
        }
    );
    assert_eq!(
        stdout,
        format!(
            "switchover done for orders ({id})\nold primary:  member-0\nnew primary:  member-1\n\
             timeline:     3\ntook:         3.8 s\n"
        )
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn without_a_target_the_body_is_empty_and_json_prints_the_platforms_answer() {
    let instance = orders();
    let id = instance.id.to_string();
    let answer = json!({"instance_id": id, "action": "switchover", "old_primary": "member-1",
                        "new_primary": "member-2", "timeline": 4, "took_ms": 2950});
    // By name: the instance is looked up in the caller's list.
    let listing = json!({"instances": [instance]});
    let platform = StandIn::start(vec![(200, listing), (200, answer.clone())]).await;
    let (client, dir) = client(&platform.url);

    let (result, stdout, _) = run(&client, &["instances", "switchover", "orders", "--json"]).await;
    result.unwrap();

    let received = platform.received();
    assert_eq!(received[0].path, "/v1/instances");
    assert_eq!(received[1].path, format!("/v1/instances/{id}/switchover"));
    assert_eq!(received[1].body, Some(json!({})), "the platform picks the member");
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed, answer);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_refused_switchover_is_printed_as_the_platforms_error() {
    let mut instance = orders();
    instance.spec = InstanceSpec::Postgres(PostgresSpec::new("app", 1));
    let id = instance.id.to_string();
    let message = format!(
        "instance {id} is not a highly available PostgreSQL cluster (spec.ha); only those switch over"
    );
    let refusal = json!({"error": {"code": "not_highly_available", "message": message}});
    let platform = StandIn::start(vec![(200, json!(instance)), (422, refusal)]).await;
    let (client, dir) = client(&platform.url);

    let (result, stdout, _) = run(&client, &["instances", "switchover", &id]).await;
    let err = result.unwrap_err();

    assert_eq!(stdout, "");
    assert_eq!(err.exit_code(), iaasctl::EXIT_API);
    assert_eq!(iaasctl::error_chain(&err), format!("{message} (not_highly_available, HTTP 422)"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_switchover_left_unanswered_says_it_may_still_complete() {
    let instance = orders();
    let id = instance.id.to_string();
    let platform = StandIn::start(vec![(200, json!(instance)), (SILENT, Value::Null)]).await;
    let (client, dir) = client(&platform.url);

    let (result, stdout, _) =
        run(&client, &["instances", "switchover", &id, "--timeout", "1"]).await;
    let err = result.unwrap_err();

    assert_eq!(stdout, "");
    assert!(
        matches!(&err, CliError::NoAnswer { operation: "switchover", waited_secs: 1, .. }),
        "not reported as unreachable: {err}"
    );
    assert_eq!(err.exit_code(), iaasctl::EXIT_API);
    assert_eq!(
        err.to_string(),
        "no answer to the switchover of orders within 1 s; it may still complete: \
         `iaasctl instances info orders` shows the cluster"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
