//! The platform's fault runs, each against PRIVATE instances (the shared services are never
//! touched), each printing its figures:
//!
//! - **Redis restarted during a login / refresh / cache run.** The platform runs in this process
//!   on a private Redis container (append-only file, `appendfsync always`, so what Redis
//!   acknowledged survives a `kill -9`). Workers loop logins, refresh-token rotations and cluster
//!   reads (the cache path) while Redis is killed and started again on the same port and file.
//!   Every answer must be a success or a clean 503 with a JSON error (no 500, no other status,
//!   nothing slower than the client timeout); `/readyz` goes 503 and then 200 again without a
//!   platform restart; every session created before the outage still refreshes afterwards.
//! - **The embedded index's disk read-only.** As root, file permissions do not stop writes, so
//!   the data directory is on a small loop-mounted ext4 image and the event index's files are
//!   made immutable (`chattr +i`: writes through already open descriptors fail with EPERM). The
//!   indexer must report transient errors, the outbox must keep the events (the consumer does
//!   not advance), and once the files are writable again every event is indexed exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;

use common::{Served, call, ok};
use iaas_core::{
    Clock, DockerSpec, EventAction, InfrastructureEvent, Instance, InstanceName, InstanceSpec,
    Resources, SystemClock, UserId,
};
use iaas_events::monitoring::LogQuery;
use iaas_platform::{HttpLimits, Platform};
use iaas_testkit::wait::eventually;
use serde_json::{Value, json};
use tower::ServiceExt as _;

const PASSWORD: &str = "correct horse battery staple";

/// The platform of `settings` served in this process: requests time out after 5 s, shutdown
/// grants 5 s.
async fn serve(settings: &[(&str, String)]) -> Served {
    let mut settings = settings.to_vec();
    settings.push((iaas_platform::SHUTDOWN_GRACE_VAR, "5".to_owned()));
    let limits = HttpLimits::new(Duration::from_secs(5), HttpLimits::DEFAULT_BODY_LIMIT);
    Served::start(common::config(&settings), limits).await
}

// ---------------------------------------------------------------------------------------------
// Redis restarted during a login / refresh / cache run
// ---------------------------------------------------------------------------------------------

/// What the workers saw: answers per operation and status (and error code for 503s).
#[derive(Default)]
struct Tally {
    counts: BTreeMap<String, u64>,
    /// Answers that are neither a success nor a clean 503.
    bad: Vec<String>,
}

impl Tally {
    fn record(&mut self, op: &str, outcome: &Result<(u16, Value), String>) -> bool {
        match outcome {
            Ok((status, _)) if (200..300).contains(status) => {
                *self.counts.entry(format!("{op} {status}")).or_default() += 1;
                true
            }
            Ok((503, body))
                if body["error"]["code"].is_string() && body["error"]["message"].is_string() =>
            {
                let code = body["error"]["code"].as_str().unwrap_or_default();
                *self.counts.entry(format!("{op} 503 {code}")).or_default() += 1;
                false
            }
            Ok((status, body)) => {
                self.bad.push(format!("{op}: {status} {body}"));
                false
            }
            Err(err) => {
                self.bad.push(format!("{op}: {err}"));
                false
            }
        }
    }

    fn count(&self, prefix: &str) -> u64 {
        self.counts.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, n)| n).sum()
    }
}

async fn register_and_login(addr: &str, username: &str) -> String {
    let credentials = json!({"username": username, "password": PASSWORD});
    ok(addr, "POST", "/v1/auth/register", None, &credentials).await;
    let pair = ok(addr, "POST", "/v1/auth/login", None, &credentials).await;
    pair["refresh_token"].as_str().unwrap().to_owned()
}

/// Waits until the tally satisfies `done`, or fails with the tally.
async fn until(tally: &Arc<Mutex<Tally>>, what: &str, done: impl Fn(&Tally) -> bool) {
    let reached = eventually(Duration::from_secs(60), || async {
        let tally = tally.lock().unwrap();
        if done(&tally) { Ok(()) } else { Err(format!("{:?}", tally.counts)) }
    })
    .await;
    reached.unwrap_or_else(|err| panic!("{what}: {err}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_during_logins_refreshes_and_cache_reads() {
    let redis = iaas_testkit::RestartableRedis::start(true).await.unwrap();
    let data_dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name("iaas-faults"));
    let mut settings = common::embedded(&data_dir);
    settings.push((iaas_platform::REDIS_URL_VAR, redis.url()));
    let running = serve(&settings).await;
    let addr = running.addr.clone();

    // Sessions of the outage: three kept untouched, two rotated continuously, one user logging in.
    let mut kept = Vec::new();
    for i in 0..3 {
        kept.push(register_and_login(&addr, &format!("kept{i}")).await);
    }
    let chains =
        [register_and_login(&addr, "chain0").await, register_and_login(&addr, "chain1").await];
    let credentials = json!({"username": "looper", "password": PASSWORD});
    ok(&addr, "POST", "/v1/auth/register", None, &credentials).await;
    let pair = ok(&addr, "POST", "/v1/auth/login", None, &credentials).await;
    let access = pair["access_token"].as_str().unwrap().to_owned();
    // A running instance whose cluster view is read through the cache.
    let spec = common::sleeper("cached");
    let created = ok(&addr, "POST", "/v1/instances", Some(&access), &spec).await;
    let id = created["instance"]["id"].as_str().unwrap().to_owned();
    let info = format!("/v1/instances/{id}/info");
    eventually(Duration::from_secs(30), || async {
        let (_, found) =
            call(&addr, "GET", &format!("/v1/instances/{id}"), Some(&access), &Value::Null).await?;
        if found["status"] == "running" { Ok(()) } else { Err(found["status"].to_string()) }
    })
    .await
    .unwrap();

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for chain in chains {
        let (addr, tally, stop) = (addr.clone(), tally.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut token = chain;
            while !stop.load(Ordering::Relaxed) {
                let outcome =
                    call(&addr, "POST", "/v1/auth/refresh", None, &json!({"refresh_token": token}))
                        .await;
                if tally.lock().unwrap().record("refresh", &outcome) {
                    token = outcome.unwrap().1["refresh_token"].as_str().unwrap().to_owned();
                }
            }
            token
        }));
    }
    {
        let (addr, tally, stop) = (addr.clone(), tally.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let outcome = call(&addr, "POST", "/v1/auth/login", None, &credentials).await;
                tally.lock().unwrap().record("login", &outcome);
            }
            String::new()
        }));
    }
    {
        let (addr, tally, stop, access) =
            (addr.clone(), tally.clone(), stop.clone(), access.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let outcome = call(&addr, "GET", &info, Some(&access), &Value::Null).await;
                tally.lock().unwrap().record("cache read", &outcome);
            }
            String::new()
        }));
    }

    until(&tally, "load before the outage", |t| {
        t.count("refresh 2") >= 10 && t.count("login 2") >= 1 && t.count("cache read 2") >= 10
    })
    .await;
    let before = tally.lock().unwrap().counts.clone();

    redis.kill().await.unwrap();
    let readyz = |want: u16| {
        let addr = addr.clone();
        async move {
            eventually(Duration::from_secs(30), || async {
                let (status, body) = call(&addr, "GET", "/readyz", None, &Value::Null).await?;
                if status == want { Ok(body) } else { Err(format!("{status} {body}")) }
            })
            .await
        }
    };
    let down = readyz(503).await.expect("/readyz reports Redis down");
    until(&tally, "503s while Redis is down", |t| {
        t.count("refresh 503") >= 3 && t.count("login 503") >= 1
    })
    .await;

    redis.restart().await.expect("Redis starts again");
    readyz(200).await.expect("/readyz is 200 again without a platform restart");
    let (refreshed, read, logged_in) = {
        let t = tally.lock().unwrap();
        (t.count("refresh 2"), t.count("cache read 2"), t.count("login 2"))
    };
    until(&tally, "successes after the restart", |t| {
        t.count("refresh 2") >= refreshed + 5
            && t.count("cache read 2") >= read + 5
            && t.count("login 2") > logged_in
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut chain_tokens = Vec::new();
    for worker in workers {
        chain_tokens.push(worker.await.unwrap());
    }

    // No session created before the outage was lost: each still rotates.
    let mut survived = 0;
    for token in kept.iter().chain(chain_tokens.iter().filter(|t| !t.is_empty())) {
        let (status, body) =
            call(&addr, "POST", "/v1/auth/refresh", None, &json!({"refresh_token": token}))
                .await
                .unwrap();
        assert_eq!(status, 200, "a session from before the outage was lost: {body}");
        survived += 1;
    }
    ok(&addr, "DELETE", &format!("/v1/instances/{id}"), Some(&access), &Value::Null).await;
    running.stop().await;
    let _ = std::fs::remove_dir_all(&data_dir);

    let tally = tally.lock().unwrap();
    eprintln!("redis restart: before the outage {before:?}");
    eprintln!("redis restart: whole run {:?}", tally.counts);
    eprintln!("redis restart: /readyz while down: {down}");
    eprintln!(
        "redis restart: {} answers, {} clean 503s, {} bad; {survived} sessions from before the \
         outage all refresh afterwards",
        tally.counts.values().sum::<u64>(),
        tally.counts.iter().filter(|(k, _)| k.contains(" 503")).map(|(_, n)| n).sum::<u64>(),
        tally.bad.len()
    );
    assert!(tally.bad.is_empty(), "answers other than success or a clean 503: {:#?}", tally.bad);
}

// ---------------------------------------------------------------------------------------------
// The embedded index's disk read-only
// ---------------------------------------------------------------------------------------------

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A small ext4 file system on a loop device, unmounted (and its files made mutable) on drop.
struct LoopDisk {
    image: PathBuf,
    mount: PathBuf,
    immutable: Vec<PathBuf>,
}

impl LoopDisk {
    fn mount() -> Result<Self, String> {
        let base = std::env::temp_dir().join(iaas_testkit::isolation::unique_name("iaas-ro-index"));
        let image = base.with_extension("img");
        let mount = base;
        std::fs::create_dir_all(&mount).map_err(|e| e.to_string())?;
        let file = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        file.set_len(64 * 1024 * 1024).map_err(|e| e.to_string())?;
        run("mkfs.ext4", &["-q", "-F", &image.display().to_string()])?;
        run("mount", &["-o", "loop", &image.display().to_string(), &mount.display().to_string()])?;
        Ok(Self { image, mount, immutable: Vec::new() })
    }

    /// `chattr +i`: no write succeeds, not even root's through an open descriptor.
    fn freeze(&mut self, path: &Path) {
        run("chattr", &["+i", &path.display().to_string()]).unwrap();
        self.immutable.push(path.to_owned());
    }

    fn thaw(&mut self) {
        for path in self.immutable.drain(..) {
            run("chattr", &["-i", &path.display().to_string()]).unwrap();
        }
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        self.thaw();
        let _ = run("umount", &[&self.mount.display().to_string()]);
        let _ = std::fs::remove_dir_all(&self.mount);
        let _ = std::fs::remove_file(&self.image);
    }
}

/// Writes `n` instances (and their `created` events) of `owner` through the store, as the
/// provisioning API does; returns the events' ids.
async fn write_events(platform: &Platform, owner: UserId, from: usize, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in from..from + n {
        let now = SystemClock.now();
        let spec = InstanceSpec::Docker(DockerSpec {
            image: iaas_testkit::busybox_image(),
            env: BTreeMap::new(),
            ports: Vec::new(),
            command: None,
        });
        let instance = Instance::new(
            owner,
            InstanceName::new(format!("ro-{i}")).unwrap(),
            spec,
            Resources::default(),
            now,
        )
        .unwrap();
        let event = InfrastructureEvent::new(
            instance.id,
            owner,
            instance.kind(),
            EventAction::Created,
            now,
        );
        platform.repos.instances.create_instance(&instance, &event).await.unwrap();
        ids.push(event.id.to_string());
    }
    platform.wake_relay();
    ids
}

/// The owner's indexed entries: (all entries, distinct event ids).
async fn indexed(platform: &Platform, owner: UserId) -> (usize, BTreeSet<String>) {
    let mut query = LogQuery::for_user(owner);
    query.limit = LogQuery::MAX_LIMIT;
    let (mut all, mut distinct) = (0, BTreeSet::new());
    loop {
        let page = platform.events_index.search(&query).await.unwrap();
        all += page.entries.len();
        distinct.extend(page.entries.iter().map(|e| e.event_id.to_string()));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return (all, distinct),
        }
    }
}

/// The sum of a counter's samples whose labels contain `label`, from `GET /metrics`.
async fn metric(platform: &Platform, name: &str, label: &str) -> f64 {
    let response = iaas_platform::router(platform)
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let body = axum::body::to_bytes(response.into_body(), 1 << 22).await.unwrap();
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|line| line.starts_with(name) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_index_disk_delays_indexing_and_loses_nothing() {
    let mut disk = match LoopDisk::mount() {
        Ok(disk) => disk,
        Err(reason) => {
            eprintln!(
                "SKIPPED: no loop-mounted ext4 here ({reason}); needs root with mount rights"
            );
            return;
        }
    };
    let data_dir = disk.mount.join("data");
    let running = serve(&common::embedded(&data_dir)).await;
    let platform = &running.platform;
    let owner = UserId::new_random();

    // Writable: the first events are indexed.
    let mut written = write_events(platform, owner, 0, 20).await;
    eventually(Duration::from_secs(30), || async {
        let (_, ids) = indexed(platform, owner).await;
        if ids.len() == 20 { Ok(()) } else { Err(ids.len()) }
    })
    .await
    .unwrap();

    // Read-only: the index file and its write-ahead log refuse every write.
    let wal = data_dir.join("events.db-wal");
    assert!(wal.exists(), "the index runs in WAL mode with its log open");
    disk.freeze(&data_dir.join("events.db"));
    disk.freeze(&wal);
    let unavailable_before =
        metric(platform, "iaas_monitoring_index_total", "outcome=\"unavailable\"").await;
    written.extend(write_events(platform, owner, 20, 30).await);
    let errors = eventually(Duration::from_secs(30), || async {
        let now = metric(platform, "iaas_monitoring_index_total", "outcome=\"unavailable\"").await;
        if now >= unavailable_before + 3.0 { Ok(now - unavailable_before) } else { Err(now) }
    })
    .await
    .expect("the indexer reports transient (unavailable) errors");
    let (_, during) = indexed(platform, owner).await;
    assert_eq!(during.len(), 20, "nothing new is indexed while the disk refuses writes");
    let pending = platform.repos.outbox.stats().await.unwrap().pending;
    assert!(
        pending >= 30,
        "the outbox keeps the 30 events (the consumer did not advance): {pending}"
    );

    // Writable again: everything arrives, once.
    disk.thaw();
    let (all, ids) = eventually(Duration::from_secs(90), || async {
        let (all, ids) = indexed(platform, owner).await;
        let pending = platform.repos.outbox.stats().await.map_err(|e| e.to_string())?.pending;
        if ids.len() == written.len() && pending == 0 {
            Ok((all, ids))
        } else {
            Err(format!("{} indexed, {pending} pending", ids.len()))
        }
    })
    .await
    .expect("every event is indexed once the disk is writable");
    let expected: BTreeSet<String> = written.iter().cloned().collect();
    let lost = expected.difference(&ids).count();
    let duplicated = all - ids.len();
    eprintln!(
        "read-only index: written {}, indexed {}, lost {lost}, duplicated {duplicated}; \
         {errors} unavailable index attempts while read-only, {pending} events held in the outbox",
        written.len(),
        ids.len()
    );
    assert_eq!((lost, duplicated), (0, 0));
    running.stop().await;
}
