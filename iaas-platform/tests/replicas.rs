//! Several processes of one platform on one PostgreSQL store and one Docker engine: the work a
//! process accepted survives that process.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{call, ok};
use iaas_core::{InstanceId, Leases as _};
use iaas_store::{PostgresConfig, PostgresStore};
use iaas_testkit::TestDatabase;
use iaas_testkit::process::{Server, command};
use serde_json::{Value, json};

/// How long a replica may take to stop after SIGTERM: 3 s of drain (`drain_secs` of the
/// recipe), up to 10 s for requests in flight (`shutdown_grace_secs`), 30 s for jobs under way
/// (docs/replicas.md) and 5 s to give back the rest (`GIVE_BACK_GRACE`), then its tasks stop
/// (a few seconds here). A stop that usually takes 3-4 s is printed with its time.
const REPLICA_STOP: Duration = Duration::from_secs(60);

/// The real binary as one replica: the shared store and key files, its own data directory.
async fn replica(data_dir: &Path, shared: &Path, database_url: &str) -> Server {
    let mut settings = common::embedded(data_dir);
    settings.extend([
        (iaas_platform::QUOTA_INSTANCES_VAR, "40".to_owned()),
        (iaas_platform::QUOTA_MILLICPUS_VAR, "8000".to_owned()),
        (iaas_platform::QUOTA_MEMORY_MIB_VAR, "4096".to_owned()),
        (iaas_platform::LOG_VAR, "info".to_owned()),
        (iaas_platform::DATABASE_URL_VAR, database_url.to_owned()),
        (iaas_platform::AUTH_KEY_FILE_VAR, shared.join("auth.key").display().to_string()),
        (iaas_platform::SECRETS_KEY_FILE_VAR, shared.join("secrets.key").display().to_string()),
    ]);
    if let Some(image) =
        std::env::var(iaas_testkit::POSTGRES_IMAGE_VAR).ok().filter(|i| !i.is_empty())
    {
        settings.push((iaas_platform::POSTGRES_IMAGE_VAR, image));
    }
    Server::start(command(env!("CARGO_BIN_EXE_iaas-platform"), "IAAS_", &settings)).await.unwrap()
}

/// The containers of instance `id` on the engine: (name, running, the application password it
/// was made with; the primary's only).
async fn containers_of(id: &str) -> Vec<(String, bool, String)> {
    let output = tokio::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=iaas.instance={id}")])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "docker ps: {}", String::from_utf8_lossy(&output.stderr));
    let ids = String::from_utf8(output.stdout).unwrap();
    let mut containers = Vec::new();
    for container in ids.split_whitespace() {
        let inspected = tokio::process::Command::new("docker")
            .args(["inspect", container])
            .output()
            .await
            .unwrap();
        let inspected: Value = serde_json::from_slice(&inspected.stdout).unwrap();
        let inspected = &inspected[0];
        let password = inspected["Config"]["Env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find_map(|var| var.strip_prefix("IAAS_APP_PASSWORD="))
            .unwrap_or_default()
            .to_owned();
        containers.push((
            inspected["Name"].as_str().unwrap_or_default().to_owned(),
            inspected["State"]["Running"].as_bool().unwrap_or(false),
            password,
        ));
    }
    containers
}

/// A PostgreSQL instance with one replica is accepted by A, and A is SIGKILLed once the first
/// of its two containers exists: B, on the same store, takes the provisioning job over when A's
/// lease runs out, removes the half-made cluster and makes it again with the credentials A
/// handed to the client, and the instance reaches `running` through B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioning_cut_off_by_a_crash_is_finished_by_another_replica() {
    let postgres = iaas_testkit::postgres().await.unwrap();
    iaas_testkit::docker().await.unwrap();
    let database = TestDatabase::create(&postgres, "platform_replicas").await.unwrap();
    let shared = iaas_testkit::isolation::temp_dir("iaas-replicas-shared");
    let (dir_a, dir_b) = (shared.join("a"), shared.join("b"));
    let mut a = replica(&dir_a, &shared, database.url()).await;
    let b = replica(&dir_b, &shared, database.url()).await;

    let credentials = json!({"username": "ada", "password": "correct horse battery staple"});
    ok(a.addr(), "POST", "/v1/auth/register", None, &credentials).await;
    let login = ok(a.addr(), "POST", "/v1/auth/login", None, &credentials).await;
    let token = login["access_token"].as_str().unwrap().to_owned();

    let body = json!({"name": "ledger", "spec": {"kind": "postgres", "database": "ledger", "replicas": 1}});
    let created = ok(a.addr(), "POST", "/v1/instances", Some(&token), &body).await;
    let id = created["instance"]["id"].as_str().unwrap().to_owned();
    let password = created["credentials"]["password"].as_str().unwrap().to_owned();
    let path = format!("/v1/instances/{id}");

    // Half-way: the primary exists (its replica needs it ready first), the replica does not.
    iaas_testkit::wait::eventually(Duration::from_secs(60), || async {
        let made = containers_of(&id).await;
        if made.is_empty() { Err("no container yet".to_owned()) } else { Ok(()) }
    })
    .await
    .unwrap();
    a.child_mut().kill().await.unwrap();
    let killed_at = Instant::now();
    let left = containers_of(&id).await;
    eprintln!("A killed with {} of 2 containers made: {left:?}", left.len());

    let (_, seen) = call(b.addr(), "GET", &path, Some(&token), &Value::Null).await.unwrap();
    assert_eq!(seen["status"], "provisioning", "{seen}");
    iaas_testkit::wait::eventually(Duration::from_secs(120), || async {
        let (_, body) = call(b.addr(), "GET", &path, Some(&token), &Value::Null).await?;
        if body["status"] == "running" { Ok(()) } else { Err(body.to_string()) }
    })
    .await
    .unwrap_or_else(|last| panic!("never running through B: {last}"));
    let took = killed_at.elapsed();
    eprintln!("running through B {:.1} s after A was killed", took.as_secs_f64());

    let made = containers_of(&id).await;
    assert_eq!(made.len(), 2, "a primary and its replica, nothing left over: {made:?}");
    for (name, running, _) in &made {
        assert!(running, "{name} runs");
    }
    let primary = made.iter().find(|(name, ..)| name.ends_with("-primary")).unwrap();
    assert_eq!(primary.2, password, "the credentials the client was given");

    common::delete_and_wait(b.addr(), &path, &token).await;
    assert!(containers_of(&id).await.is_empty(), "the delete through B removed everything");
    b.stop_within(REPLICA_STOP).await.unwrap();
    database.drop_database().await.unwrap();
    std::fs::remove_dir_all(&shared).unwrap();
}

/// The lease of the engine every replica uses (`DOCKER_HOST`, inherited, else the default).
fn engine_lease() -> String {
    let host = std::env::var(iaas_platform::DOCKER_HOST_VAR).ok().filter(|h| !h.is_empty());
    format!("engine:{}", host.as_deref().unwrap_or("unix:///var/run/docker.sock"))
}

/// Runs `docker <args>`, asserting it succeeds.
async fn docker(args: &[&str]) {
    let status = tokio::process::Command::new("docker")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success(), "docker {args:?}");
}

/// The engine's lease holder as a replica's index in `pids`, and whether it has expired.
async fn leader(store: &PostgresStore, pids: &[u32]) -> Option<(usize, bool)> {
    let held = store.lease_holder(&engine_lease()).await.unwrap()?;
    let index = pids.iter().position(|pid| held.holder.starts_with(&format!("pid-{pid}-")))?;
    Some((index, held.expired))
}

/// The actions of instance `id`'s events in the outbox, in order.
async fn actions(store: &PostgresStore, id: &str) -> Vec<String> {
    let id: InstanceId = id.parse().unwrap();
    let payloads: Vec<String> =
        sqlx::query_scalar("SELECT payload FROM outbox WHERE instance_id = $1 ORDER BY seq")
            .bind(*id.as_uuid())
            .fetch_all(store.pool())
            .await
            .unwrap();
    payloads
        .iter()
        .map(|payload| {
            let event: Value = serde_json::from_str(payload).unwrap();
            event["action"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// Every instance in `paths` reads `status` through `addr`.
async fn all_read(addr: &str, token: &str, paths: &[String], status: &str) {
    iaas_testkit::wait::eventually(Duration::from_secs(60), || async {
        for path in paths {
            let (_, body) = call(addr, "GET", path, Some(token), &Value::Null).await?;
            if body["status"] != status {
                return Err(format!("{path}: {body}"));
            }
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|last| panic!("not every instance {status}: {last}"));
}

/// Three replicas on one engine: one holds the engine's lease and follows it. 20 containers
/// stopped and started behind the platform's back five times (200 engine changes) become
/// exactly one `stopped` and one `started` event each, with every replica running its
/// reconciler. Then the leader is SIGKILLed and a container stopped during the hand-over: the
/// lease moves to another replica, which records that stop too, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_follows_the_engine_and_each_change_is_recorded_once() {
    const INSTANCES: usize = 20;
    const ROUNDS: usize = 5;
    let postgres = iaas_testkit::postgres().await.unwrap();
    iaas_testkit::docker().await.unwrap();
    let database = TestDatabase::create(&postgres, "platform_engine_lease").await.unwrap();
    let shared = iaas_testkit::isolation::temp_dir("iaas-replicas-lease");
    let mut replicas = Vec::new();
    for name in ["a", "b", "c"] {
        replicas.push(Some(replica(&shared.join(name), &shared, database.url()).await));
    }
    let pids: Vec<u32> =
        replicas.iter_mut().map(|r| r.as_mut().unwrap().child_mut().id().unwrap()).collect();
    let addr =
        |replicas: &[Option<Server>], n: usize| replicas[n].as_ref().unwrap().addr().to_owned();
    let store = PostgresStore::connect(&PostgresConfig::new(database.url())).await.unwrap();

    let a = addr(&replicas, 0);
    let credentials = json!({"username": "ada", "password": "correct horse battery staple"});
    ok(&a, "POST", "/v1/auth/register", None, &credentials).await;
    let login = ok(&a, "POST", "/v1/auth/login", None, &credentials).await;
    let token = login["access_token"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for n in 0..INSTANCES {
        // Spread over the replicas: any of them takes requests.
        let via = addr(&replicas, n % 3);
        let created =
            ok(&via, "POST", "/v1/instances", Some(&token), &common::sleeper(&format!("s{n}")))
                .await;
        ids.push(created["instance"]["id"].as_str().unwrap().to_owned());
    }
    let paths: Vec<String> = ids.iter().map(|id| format!("/v1/instances/{id}")).collect();
    all_read(&a, &token, &paths, "running").await;
    let (first_leader, _) = leader(&store, &pids).await.expect("one replica leads");

    let names: Vec<String> = ids.iter().map(|id| format!("iaas-{id}-primary")).collect();
    let started = Instant::now();
    for _ in 0..ROUNDS {
        let mut stop = vec!["stop", "-t", "5"];
        stop.extend(names.iter().map(String::as_str));
        docker(&stop).await;
        all_read(&a, &token, &paths, "stopped").await;
        let mut start = vec!["start"];
        start.extend(names.iter().map(String::as_str));
        docker(&start).await;
        all_read(&a, &token, &paths, "running").await;
    }
    eprintln!(
        "{} engine changes recorded in {:.1} s",
        2 * ROUNDS * INSTANCES,
        started.elapsed().as_secs_f64()
    );
    // Late duplicates would come now, if any replica also applied the changes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in &ids {
        let actions = actions(&store, id).await;
        let count = |action: &str| actions.iter().filter(|a| *a == action).count();
        assert_eq!(
            (count("started"), count("stopped")),
            (1 + ROUNDS, ROUNDS),
            "{id}: one event per engine change: {actions:?}"
        );
    }
    assert_eq!(leader(&store, &pids).await.map(|(n, _)| n), Some(first_leader), "no hand-over yet");

    // The leader dies; a container stops during the hand-over.
    let mut dead = replicas[first_leader].take().unwrap();
    dead.child_mut().kill().await.unwrap();
    let killed = Instant::now();
    docker(&["stop", "-t", "5", &names[0]]).await;
    let survivor = addr(&replicas, (first_leader + 1) % 3);
    let next = iaas_testkit::wait::eventually(Duration::from_secs(60), || async {
        match leader(&store, &pids).await {
            Some((n, false)) if n != first_leader => Ok(n),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    eprintln!(
        "replica {next} leads {:.1} s after the leader was killed",
        killed.elapsed().as_secs_f64()
    );
    all_read(&survivor, &token, &paths[..1], "stopped").await;
    eprintln!(
        "the stop during the hand-over recorded {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let count = actions(&store, &ids[0]).await.iter().filter(|a| *a == "stopped").count();
    assert_eq!(count, ROUNDS + 1, "the stop during the hand-over, once");

    for path in &paths {
        common::delete_and_wait(&survivor, path, &token).await;
    }
    for server in replicas.into_iter().flatten() {
        server.stop_within(REPLICA_STOP).await.unwrap();
    }
    store.pool().close().await;
    database.drop_database().await.unwrap();
    std::fs::remove_dir_all(&shared).unwrap();
}

/// A free loopback port (bound and let go: a replica restarted on it binds it again).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The settings of replica `n` of the recipe in `deploy/replicas` on the shared services.
fn recipe_settings(
    n: usize,
    listen: &str,
    shared: &Path,
    services: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let mut settings = vec![
        (iaas_platform::LISTEN_VAR, listen.to_owned()),
        (iaas_platform::DATA_DIR_VAR, shared.join(format!("replica-{n}")).display().to_string()),
        (iaas_platform::LOG_VAR, "info".to_owned()),
        (iaas_platform::DRAIN_VAR, "3".to_owned()),
        // Every client registers from HAProxy's address, on a Redis other runs share.
        (iaas_platform::REGISTRATIONS_PER_CLIENT_VAR, "100000".to_owned()),
        (iaas_platform::AUTH_KEY_FILE_VAR, shared.join("auth.key").display().to_string()),
        (iaas_platform::SECRETS_KEY_FILE_VAR, shared.join("secrets.key").display().to_string()),
        (iaas_platform::QUOTA_INSTANCES_VAR, "40".to_owned()),
        (iaas_platform::QUOTA_MILLICPUS_VAR, "8000".to_owned()),
        (iaas_platform::QUOTA_MEMORY_MIB_VAR, "4096".to_owned()),
    ];
    // Each replica indexes every event in its own embedded index: a group of its own.
    let group = services
        .iter()
        .find(|(var, _)| *var == iaas_platform::MONITORING_GROUP_VAR)
        .map(|(_, group)| format!("{group}-{n}"))
        .unwrap_or_default();
    settings.push((iaas_platform::MONITORING_GROUP_VAR, group));
    settings.extend(
        services.iter().filter(|(var, _)| *var != iaas_platform::MONITORING_GROUP_VAR).cloned(),
    );
    settings
}

/// What the clients of the rolling restart did.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    failed: Vec<String>,
    created: Vec<String>,
}

/// One client behind the load balancer until `stop`: refreshes its session, lists its
/// instances, and every 16th round creates a small instance and deletes the one before.
/// Returns its access token and the instance it made last.
async fn client(
    lb: String,
    mut refresh: String,
    tally: std::sync::Arc<std::sync::Mutex<Tally>>,
    stop: tokio_util::sync::CancellationToken,
    name: String,
) -> (String, Option<String>) {
    let mut access = String::new();
    let mut previous: Option<String> = None;
    let mut round = 0usize;
    while !stop.is_cancelled() {
        round += 1;
        let (status, body) =
            match call(&lb, "POST", "/v1/auth/refresh", None, &json!({"refresh_token": refresh}))
                .await
            {
                Ok(answer) => answer,
                Err(err) => (0, Value::String(err)),
            };
        let record = |what: &str, status: u16, body: &Value| {
            let mut tally = tally.lock().unwrap();
            if (200..300).contains(&status) {
                tally.ok += 1;
            } else {
                tally.failed.push(format!("{name} {what}: {status} {body}"));
            }
        };
        record("refresh", status, &body);
        if status == 200 {
            refresh = body["refresh_token"].as_str().unwrap_or_default().to_owned();
            access = body["access_token"].as_str().unwrap_or_default().to_owned();
        } else if access.is_empty() {
            // Without a session nothing else can be tried; the failure is recorded.
            return (access, previous);
        }
        let (status, body) = call(&lb, "GET", "/v1/instances", Some(&access), &Value::Null)
            .await
            .unwrap_or_else(|err| (0, Value::String(err)));
        record("list", status, &body);
        if round.is_multiple_of(16) {
            let spec = common::sleeper(&format!("{name}-{round}"));
            let (status, body) = call(&lb, "POST", "/v1/instances", Some(&access), &spec)
                .await
                .unwrap_or_else(|err| (0, Value::String(err)));
            record("create", status, &body);
            if let Some(id) = body["instance"]["id"].as_str() {
                tally.lock().unwrap().created.push(id.to_owned());
                if let Some(old) = previous.replace(id.to_owned()) {
                    let path = format!("/v1/instances/{old}");
                    let (status, body) = call(&lb, "DELETE", &path, Some(&access), &Value::Null)
                        .await
                        .unwrap_or_else(|err| (0, Value::String(err)));
                    record("delete", status, &body);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (access, previous)
}

/// The recipe of `deploy/replicas`: three replica processes behind HAProxy on one store, Redis
/// and broker. While six clients refresh their sessions, list, create and delete instances
/// through HAProxy, each replica in turn is stopped with SIGTERM (it drains 3 s, then finishes
/// what it serves) and started again. No request fails, and every event in the store reaches
/// the broker exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_haproxy_fails_no_request_and_loses_no_event() {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Message;

    assert!(
        std::process::Command::new("haproxy").arg("-v").output().is_ok(),
        "haproxy is not installed: scripts/services.sh installs it (Debian package haproxy)"
    );
    let postgres = iaas_testkit::postgres().await.unwrap();
    let redis = iaas_testkit::redis().await.unwrap();
    let kafka = iaas_testkit::kafka().await.unwrap();
    iaas_testkit::docker().await.unwrap();
    let database = TestDatabase::create(&postgres, "platform_rolling_restart").await.unwrap();
    let shared = iaas_testkit::isolation::temp_dir("iaas-replicas-rolling");
    let topic = iaas_testkit::isolation::topic_name("rolling-restart");
    let services = vec![
        (iaas_platform::DATABASE_URL_VAR, database.url().to_owned()),
        (iaas_platform::REDIS_URL_VAR, redis.url().to_owned()),
        (iaas_platform::KAFKA_BROKERS_VAR, kafka.url().to_owned()),
        (iaas_platform::KAFKA_TOPIC_VAR, topic.clone()),
        (iaas_platform::MONITORING_GROUP_VAR, iaas_testkit::isolation::unique_name("monitoring")),
        (
            iaas_platform::CACHE_PREFIX_VAR,
            format!("{}:", iaas_testkit::isolation::unique_name("rolling")),
        ),
    ];
    let lb = format!("127.0.0.1:{}", free_port());
    let program = env!("CARGO_BIN_EXE_iaas-platform");
    let start = |n: usize, listen: &str| {
        let settings = recipe_settings(n, listen, &shared, &services);
        Server::start(command(program, "IAAS_", &settings))
    };
    // Each replica picks a free port as it binds (a port chosen ahead could be taken by another
    // test meanwhile) and keeps it across its restart: HAProxy's configuration names it.
    let mut replicas = Vec::new();
    let mut listens = Vec::new();
    for n in 0..3 {
        let replica = start(n, "127.0.0.1:0").await.unwrap();
        listens.push(replica.addr().to_owned());
        replicas.push(Some(replica));
    }
    let mut haproxy = tokio::process::Command::new("haproxy")
        .args(["-db", "-f", concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/replicas/haproxy.cfg")])
        .env("IAAS_LB_LISTEN", &lb)
        .env("IAAS_REPLICA_1", &listens[0])
        .env("IAAS_REPLICA_2", &listens[1])
        .env("IAAS_REPLICA_3", &listens[2])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Every replica up behind HAProxy (each passed two health checks).
    tokio::time::sleep(Duration::from_secs(3)).await;
    iaas_testkit::wait::eventually(Duration::from_secs(30), || async {
        match call(&lb, "GET", "/readyz", None, &Value::Null).await {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();

    let tally = std::sync::Arc::new(std::sync::Mutex::new(Tally::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut clients = Vec::new();
    for n in 0..6 {
        let user = format!("{}-{n}", iaas_testkit::isolation::unique_name("roller"));
        let credentials = json!({"username": user, "password": "correct horse battery staple"});
        ok(&lb, "POST", "/v1/auth/register", None, &credentials).await;
        let login = ok(&lb, "POST", "/v1/auth/login", None, &credentials).await;
        let refresh = login["refresh_token"].as_str().unwrap().to_owned();
        clients.push(tokio::spawn(client(
            lb.clone(),
            refresh,
            tally.clone(),
            stop.clone(),
            format!("c{n}"),
        )));
    }

    let watcher = json!({"username": iaas_testkit::isolation::unique_name("watcher"), "password": "correct horse battery staple"});
    ok(&lb, "POST", "/v1/auth/register", None, &watcher).await;
    let login = ok(&lb, "POST", "/v1/auth/login", None, &watcher).await;
    let token = login["access_token"].as_str().unwrap().to_owned();

    // A live-status socket on the third replica sees an instance created through the first.
    let url = format!("ws://{}/v1/ws?access_token={token}", listens[2]);
    let (mut on_c, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let made =
        ok(&listens[0], "POST", "/v1/instances", Some(&token), &common::sleeper("seen-on-c")).await;
    let made = made["instance"]["id"].as_str().unwrap().to_owned();
    let seen_at = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), async {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        while let Some(Ok(message)) = on_c.next().await {
            if let Message::Text(text) = message
                && text.contains(&made)
                && !text.contains("\"snapshot\"")
            {
                return;
            }
        }
        panic!("the socket on C ended before it saw {made}");
    })
    .await
    .expect("the socket on C sees the instance created through A within 30 s");
    eprintln!(
        "a socket on C saw the instance created through A {:.0} ms later",
        seen_at.elapsed().as_secs_f64() * 1000.0
    );
    common::delete_and_wait(&listens[1], &format!("/v1/instances/{made}"), &token).await;

    // A live-status socket on the first replica is told to reconnect when it begins to drain.
    let url = format!(
        "ws://{}/v1/ws?access_token={}",
        listens[0],
        login["access_token"].as_str().unwrap()
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let told = tokio::spawn(async move {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Close(frame) = message {
                return frame.map(|frame| u16::from(frame.code));
            }
        }
        None
    });

    let rolling = Instant::now();
    for (n, replica) in replicas.iter_mut().enumerate() {
        tokio::time::sleep(Duration::from_secs(4)).await;
        let stopping = Instant::now();
        let exited = replica.take().unwrap().stop_within(REPLICA_STOP).await.unwrap();
        assert!(exited.status.success(), "replica {n} stopped cleanly: {}", exited.log);
        let stopped_in = stopping.elapsed();
        *replica = Some(start(n, &listens[n]).await.unwrap());
        eprintln!(
            "replica {n} stopped in {:.1} s, restarted at {:.1} s",
            stopped_in.as_secs_f64(),
            rolling.elapsed().as_secs_f64()
        );
    }
    assert_eq!(
        told.await.unwrap(),
        Some(iaas_provisioning::CLOSE_RESTARTING),
        "the socket was closed with 1012, reconnect"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.cancel();
    let mut left = Vec::new();
    for client in clients {
        left.push(client.await.unwrap());
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    eprintln!(
        "{} requests through HAProxy during a rolling restart of 3 replicas ({:.1} s), {} failed, {} instances created",
        tally.ok + tally.failed.len(),
        rolling.elapsed().as_secs_f64(),
        tally.failed.len(),
        tally.created.len()
    );
    assert!(tally.failed.is_empty(), "failed requests: {:#?}", tally.failed);
    assert!(!tally.created.is_empty());

    for (access, last) in left {
        if let Some(id) = last {
            common::delete_and_wait(&lb, &format!("/v1/instances/{id}"), &access).await;
        }
    }
    // The earlier deletes were accepted (202) and run as jobs. A provisioning cut off by a
    // stopping replica may still be finished by the engine after the delete found nothing: the
    // reconciliation (every 60 s) removes the containers of deleted instances.
    let sweeping = Instant::now();
    for id in &tally.created {
        iaas_testkit::wait::eventually(Duration::from_secs(90), || async {
            let left = containers_of(id).await;
            if left.is_empty() { Ok(()) } else { Err(format!("{left:?}")) }
        })
        .await
        .unwrap_or_else(|left| panic!("{id}: its container is still there 90 s on: {left}"));
    }
    eprintln!(
        "every deleted instance's containers gone {:.1} s after the clients ended",
        sweeping.elapsed().as_secs_f64()
    );
    // Every event the store holds, published once: the relays of all replicas drained it
    // (read once nothing changes any more: every instance is gone).
    let store = PostgresStore::connect(&PostgresConfig::new(database.url())).await.unwrap();
    iaas_testkit::wait::eventually(Duration::from_secs(60), || async {
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_us IS NULL")
            .fetch_one(store.pool())
            .await
            .map_err(|e| e.to_string())?;
        if pending == 0 { Ok(()) } else { Err(format!("{pending} events unsent")) }
    })
    .await
    .unwrap();
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT payload FROM outbox").fetch_all(store.pool()).await.unwrap();
    let stored: std::collections::BTreeSet<String> = stored
        .iter()
        .map(|payload| {
            serde_json::from_str::<Value>(payload).unwrap()["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka.url())
        .set("group.id", iaas_testkit::isolation::unique_name("rolling-check"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic.as_str()]).unwrap();
    let mut published: Vec<String> = Vec::new();
    // Until every stored event arrived, then 5 s more for any duplicate behind them.
    let mut quiet_until: Option<tokio::time::Instant> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let wait_until = quiet_until.unwrap_or(deadline).min(deadline);
        match tokio::time::timeout_at(wait_until, consumer.recv()).await {
            Ok(message) => {
                let message = message.unwrap();
                let event: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
                published.push(event["id"].as_str().unwrap().to_owned());
                let seen: std::collections::BTreeSet<_> = published.iter().cloned().collect();
                if quiet_until.is_none() && seen.is_superset(&stored) {
                    quiet_until = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                }
            }
            Err(_) => break,
        }
    }
    let seen: std::collections::BTreeSet<_> = published.iter().cloned().collect();
    let lost: Vec<_> = stored.difference(&seen).collect();
    let unknown: Vec<_> = seen.difference(&stored).collect();
    assert!(
        lost.is_empty() && unknown.is_empty(),
        "{} stored, {} published; lost {lost:?}, not stored {unknown:?}",
        stored.len(),
        seen.len()
    );
    assert_eq!(published.len(), stored.len(), "none published twice");
    eprintln!("{} events, each published once", stored.len());

    haproxy.kill().await.unwrap();
    for server in replicas.into_iter().flatten() {
        server.stop_within(REPLICA_STOP).await.unwrap();
    }
    store.pool().close().await;
    database.drop_database().await.unwrap();
    std::fs::remove_dir_all(&shared).unwrap();
}
