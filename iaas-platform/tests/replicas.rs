//! Several processes of one platform on one PostgreSQL store and one Docker engine: the work a
//! process accepted survives that process.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{call, ok};
use iaas_testkit::TestDatabase;
use iaas_testkit::process::{Server, command};
use serde_json::{Value, json};

/// The real binary as one replica: the shared store and key files, its own data directory.
async fn replica(data_dir: &Path, shared: &Path, database_url: &str) -> Server {
    let mut settings = common::embedded(data_dir);
    settings.extend([
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
    b.stop().await.unwrap();
    database.drop_database().await.unwrap();
    std::fs::remove_dir_all(&shared).unwrap();
}
