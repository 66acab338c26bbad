//! `iaas-load scale`: what the control plane costs as the number of instances it manages
//! grows, at 10, 100, 1,000 and 10,000 instances.
//!
//! For each count the tool assembles the provisioning service in its own process, the way the
//! platform does (the SQLite store in a fresh directory, the durable jobs and their workers, the
//! watcher), in front of a simulated engine (`scale/engine.rs`) that answers at once with
//! nothing behind it: what is measured is the control plane's own cost, not Docker's. Requests go
//! straight to the router (no socket, the caller's token already checked), so the figures are
//! the handler, the store and the jobs.
//!
//! With `--engine docker` the same service drives the real Docker engine instead
//! (`scale/docker.rs`): a container of `--image` per instance, the watcher on the engine's own
//! events, and the engine's memory measured beside the process's. Each count's instances are
//! removed before the next.
//!
//! Per count it measures: creates (accepted, then all `running`: the jobs' throughput), reads
//! of one instance, lists of one owner's instances (each owner holds 10, the default quota),
//! cluster views, a reconcile pass over every instance (what a restart does), the watcher
//! applying a burst of engine events (a `die` for up to 2,000 instances), and the resident
//! memory the process grew by, per instance. It prints a table and draws two plots (SVG).

#![allow(clippy::print_stdout, reason = "a command-line tool reports on stdout")]

mod docker;
mod engine;
mod plot;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use iaas_core::runtime::{ContainerRuntime, RuntimeWatch};
use iaas_core::{
    Clock, ClusterSource, InstanceId, InstanceRepository, InstanceStatus, JobQueue, Principal,
    Quota, SystemClock, UserId,
};
use iaas_provisioning::{
    JobConfig, Jobs, ProvisioningApi, SCOPE_READ, SCOPE_WRITE, SecretSealer, Watcher, WatcherConfig,
};
use iaas_store::{SqliteConfig, SqliteStore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use self::docker::DockerEngine;
use self::engine::SimulatedEngine;
use super::report::percentile;

/// Instances each owner holds: the default quota.
const PER_OWNER: usize = 10;
/// Largest burst of engine events sent to the watcher.
const MAX_BURST: usize = 2_000;

/// The engine the control plane drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// In this process, answering at once: the control plane's own cost.
    Simulated,
    /// The Docker engine of `DOCKER_HOST` (or the local socket), a container per instance.
    Docker,
}

/// Command line of `iaas-load scale`.
#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// Instance counts to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000,10000")]
    pub counts: Vec<usize>,
    /// Reads (and lists, and cluster views) timed at each count.
    #[arg(long, default_value_t = 2_000)]
    pub reads: usize,
    /// The engine behind the control plane.
    #[arg(long, value_enum, default_value_t = EngineKind::Simulated)]
    pub engine: EngineKind,
    /// Image of the instances on the Docker engine (a generic Docker service running
    /// `sleep`).
    #[arg(long, env = "IAAS_TEST_BUSYBOX_IMAGE", default_value = "iaas-local/busybox:1")]
    pub image: String,
    /// Creates in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Directory the plots are written to (created if missing).
    #[arg(long, default_value = "target/scale")]
    pub out: PathBuf,
    /// Jobs each process carries out at once (the platform's default).
    #[arg(long, default_value_t = JobConfig::default().concurrency)]
    pub job_concurrency: usize,
    /// Milliseconds between two looks for due jobs when nothing wakes the job workers (the
    /// platform's default).
    #[arg(long, default_value_t = JobConfig::default().poll_interval.as_millis() as u64)]
    pub job_poll_ms: u64,
    /// Seconds the instances of one count may take to be running, and the watcher to apply
    /// its burst.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
}

impl ScaleArgs {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// What one count measured.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Row {
    pub(crate) instances: usize,
    /// Creates answered per second (accepted, 202).
    pub(crate) accepted_per_s: f64,
    /// Instances provisioned (running) per second, from the first create.
    pub(crate) running_per_s: f64,
    pub(crate) read_p50_us: f64,
    pub(crate) read_p99_us: f64,
    pub(crate) list_p50_us: f64,
    pub(crate) list_p99_us: f64,
    pub(crate) cluster_p50_us: f64,
    pub(crate) cluster_p99_us: f64,
    /// One reconcile pass over every instance.
    pub(crate) reconcile_ms: f64,
    /// Engine events applied by the watcher per second.
    pub(crate) watcher_per_s: f64,
    /// Events in the burst.
    pub(crate) burst: usize,
    /// Resident memory grown per instance, KiB.
    pub(crate) kib_per_instance: f64,
    /// The engine's memory (proportional set size) grown per instance, KiB (0 for the
    /// simulated engine).
    pub(crate) engine_kib_per_instance: f64,
    /// The machine's memory in use grown per instance, KiB (0 for the simulated engine).
    pub(crate) machine_kib_per_instance: f64,
}

/// Runs every count in turn, prints the table and writes the plots.
pub async fn run(args: ScaleArgs) -> Result<(), String> {
    if args.counts.is_empty() || args.reads == 0 || args.concurrency == 0 {
        return Err("--counts, --reads and --concurrency must not be empty or zero".to_owned());
    }
    println!(
        "{:>8} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11} {:>9} {:>11} {:>11}",
        "instances",
        "accepted/s",
        "running/s",
        "read p50",
        "read p99",
        "list p50",
        "list p99",
        "view p50",
        "view p99",
        "reconcile",
        "watcher/s",
        "KiB/inst",
        "engine KiB",
        "machine KiB"
    );
    let mut rows = Vec::new();
    for &count in &args.counts {
        let row = measure(count, &args).await?;
        println!(
            "{:>8} {:>10.0} {:>10.0} {:>7.0}µs {:>7.0}µs {:>7.0}µs {:>7.0}µs {:>7.0}µs {:>7.0}µs {:>9.1}ms {:>11.0} {:>9.1} {:>11.1} {:>11.1}",
            row.instances,
            row.accepted_per_s,
            row.running_per_s,
            row.read_p50_us,
            row.read_p99_us,
            row.list_p50_us,
            row.list_p99_us,
            row.cluster_p50_us,
            row.cluster_p99_us,
            row.reconcile_ms,
            row.watcher_per_s,
            row.kib_per_instance,
            row.engine_kib_per_instance,
            row.machine_kib_per_instance,
        );
        rows.push(row);
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|err| format!("creating {}: {err}", args.out.display()))?;
    for path in plot::draw(&rows, &args.out, args.engine)? {
        println!("plot: {}", path.display());
    }
    Ok(())
}

/// The engine behind one count's service.
enum Engine {
    Simulated(Arc<SimulatedEngine>),
    Docker(DockerEngine),
}

impl Engine {
    async fn new(kind: EngineKind) -> Result<Self, String> {
        Ok(match kind {
            EngineKind::Simulated => Self::Simulated(Arc::new(SimulatedEngine::new())),
            EngineKind::Docker => Self::Docker(DockerEngine::connect().await?),
        })
    }

    fn runtime(&self) -> Arc<dyn ContainerRuntime> {
        match self {
            Self::Simulated(engine) => engine.clone(),
            Self::Docker(engine) => engine.runtime.clone(),
        }
    }

    fn clusters(&self) -> Arc<dyn ClusterSource> {
        match self {
            Self::Simulated(engine) => engine.clone(),
            Self::Docker(engine) => engine.runtime.clone(),
        }
    }

    fn watch(&self) -> Arc<dyn RuntimeWatch> {
        match self {
            Self::Simulated(engine) => engine.clone(),
            Self::Docker(engine) => engine.watch.clone(),
        }
    }

    /// Stops the containers of `instances` behind the control plane's back.
    async fn stop_behind_the_back(&self, instances: &[InstanceId]) -> Result<(), String> {
        match self {
            Self::Simulated(engine) => {
                for instance in instances {
                    engine.stop_behind_the_back(*instance);
                }
                Ok(())
            }
            Self::Docker(engine) => engine.kill(instances).await,
        }
    }

    /// The engine's own memory and the machine's in use, KiB (0 for the simulated one: it is
    /// this process).
    fn memory_kib(&self) -> (u64, u64) {
        match self {
            Self::Simulated(_) => (0, 0),
            Self::Docker(_) => (docker::engine_resident_kib(), docker::machine_used_kib()),
        }
    }
}

/// The provisioning service of one count, in this process.
struct Service {
    router: Router,
    store: Arc<SqliteStore>,
    engine: Engine,
    cancel: CancellationToken,
    tasks: TaskTracker,
    _dir: super::DataDir,
}

async fn measure(count: usize, args: &ScaleArgs) -> Result<Row, String> {
    let service = assemble(count, args).await?;
    let mut made = Vec::with_capacity(count);
    let measured = measure_on(&service, count, args, &mut made).await;
    // The jobs stop first (none may create a container after the removal), then the
    // containers of a real engine go whatever the measures came to.
    service.cancel.cancel();
    service.tasks.close();
    service.tasks.wait().await;
    if let Engine::Docker(engine) = &service.engine {
        let mut instances = Vec::with_capacity(made.len());
        let mut unread = None;
        for id in made.iter().filter_map(|(_, id)| id.parse::<InstanceId>().ok()) {
            match service.store.get_instance(id).await {
                Ok(Some(instance)) => instances.push(instance),
                Ok(None) => {}
                // What can be read is removed all the same; the run fails below.
                Err(err) => {
                    unread.get_or_insert(format!("reading instance {id} to remove it: {err}"));
                }
            }
        }
        let removed = match (engine.remove_all(&instances).await, unread) {
            (Ok(_), Some(unread)) => Err(unread),
            (removed, _) => removed,
        };
        match (&measured, removed) {
            (_, Ok(took)) => println!(
                "removed the {} instances from the engine in {:.1} s",
                instances.len(),
                took.as_secs_f64()
            ),
            // The measures' own error says more; the removal's is printed beside it.
            (Err(_), Err(error)) => eprintln!("iaas-load: {error}"),
            (Ok(_), Err(error)) => return Err(error),
        }
    }
    measured
}

/// The measures of one count on `service`; the instances it creates go into `ids` as they are
/// accepted, so the caller can remove them whatever happens.
async fn measure_on(
    service: &Service,
    count: usize,
    args: &ScaleArgs,
    ids: &mut Vec<(UserId, String)>,
) -> Result<Row, String> {
    let resident_before = resident_kib();
    let (engine_before, machine_before) = service.engine.memory_kib();
    let owners: Vec<UserId> =
        (0..count.div_ceil(PER_OWNER)).map(|_| UserId::new_random()).collect();
    let mut row = Row { instances: count, ..Row::default() };

    // Creates, `concurrency` at a time, then until every one is running.
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    create_all(&service.router, &owners, count, args, ids).await?;
    let ids: &[(UserId, String)] = ids;
    row.accepted_per_s = count as f64 / started.elapsed().as_secs_f64();
    // From the first create to the last `running` the store recorded (not to when this loop
    // looked).
    let last_running = wait_running(&service.store, count, args.timeout()).await?;
    let provisioning = (last_running - started_at).to_std().unwrap_or_default();
    row.running_per_s = count as f64 / provisioning.as_secs_f64().max(1e-6);
    row.kib_per_instance = resident_kib().saturating_sub(resident_before) as f64 / count as f64;
    let (engine_after, machine_after) = service.engine.memory_kib();
    row.engine_kib_per_instance = engine_after.saturating_sub(engine_before) as f64 / count as f64;
    row.machine_kib_per_instance =
        machine_after.saturating_sub(machine_before) as f64 / count as f64;

    // Reads, lists and cluster views of random instances and owners.
    let mut picks = Picks::new(count as u64);
    let (p50, p99) = timed(args.reads, || {
        let (owner, id) = &ids[picks.next(ids.len())];
        get(&service.router, *owner, format!("/v1/instances/{id}"))
    })
    .await?;
    (row.read_p50_us, row.read_p99_us) = (p50, p99);
    let (p50, p99) = timed(args.reads, || {
        let owner = owners[picks.next(owners.len())];
        get(&service.router, owner, "/v1/instances".to_owned())
    })
    .await?;
    (row.list_p50_us, row.list_p99_us) = (p50, p99);
    let (p50, p99) = timed(args.reads, || {
        let (owner, id) = &ids[picks.next(ids.len())];
        get(&service.router, *owner, format!("/v1/instances/{id}/info"))
    })
    .await?;
    (row.cluster_p50_us, row.cluster_p99_us) = (p50, p99);

    // A reconcile pass over everything (nothing drifted: the cost of looking).
    let watcher = Arc::new(Watcher::new(
        service.engine.watch(),
        service.store.clone(),
        Arc::new(SystemClock),
        WatcherConfig::default(),
    ));
    let started = Instant::now();
    watcher.reconcile().await.map_err(|err| format!("reconciling {count} instances: {err}"))?;
    row.reconcile_ms = started.elapsed().as_secs_f64() * 1_000.0;

    // A burst of engine events: containers stopped behind the control plane's back.
    row.burst = count.min(MAX_BURST);
    let following = service.cancel.child_token();
    let runner = watcher.clone();
    let watching = tokio::spawn({
        let following = following.clone();
        async move { runner.run(following).await }
    });
    wait_connected(&watcher).await?;
    let started = Instant::now();
    let burst: Vec<InstanceId> =
        ids.iter().take(row.burst).filter_map(|(_, id)| id.parse::<InstanceId>().ok()).collect();
    service.engine.stop_behind_the_back(&burst).await?;
    let deadline = started + args.timeout();
    // A reconcile pass of the watcher's own may see a stop before its event does.
    let seen = |stats: iaas_provisioning::WatcherStats| stats.applied + stats.reconciled;
    while seen(watcher.stats()) < row.burst as u64 {
        if Instant::now() > deadline {
            return Err(format!(
                "the watcher applied {} of {} events ({:?})",
                seen(watcher.stats()),
                row.burst,
                watcher.stats()
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    row.watcher_per_s = row.burst as f64 / started.elapsed().as_secs_f64();
    following.cancel();
    let _ = watching.await;
    Ok(row)
}

async fn assemble(count: usize, args: &ScaleArgs) -> Result<Service, String> {
    let dir = super::DataDir::new(&format!("scale-{count}"))?;
    let store = Arc::new(
        SqliteStore::open(&SqliteConfig::new(dir.path().join("iaas.db")))
            .await
            .map_err(|err| format!("opening the store: {err}"))?,
    );
    let engine = Engine::new(args.engine).await?;
    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    let api = ProvisioningApi {
        repo: store.clone(),
        runtime: engine.runtime(),
        clusters: engine.clusters(),
        clock: Arc::new(SystemClock) as Arc<dyn Clock>,
        on_commit: Arc::new(|| {}),
        users: store.clone(),
        quotas: store.clone(),
        default_quota: Quota::default(),
        background: tasks.clone(),
        supervisor: None,
        jobs: Jobs::new(store.clone(), SecretSealer::new(&[7; 32]), {
            let mut config = JobConfig::default();
            config.concurrency = args.job_concurrency;
            config.poll_interval = Duration::from_millis(args.job_poll_ms);
            config
        }),
    };
    tasks.spawn(iaas_provisioning::run_jobs(api.clone(), cancel.clone()));
    let router = iaas_provisioning::provisioning_router(api);
    Ok(Service { router, store, engine, cancel, tasks, _dir: dir })
}

/// Creates `count` instances of `--image`, owners in turn, `--concurrency` at a time; their
/// owners and ids go into `ids` as each is accepted.
async fn create_all(
    router: &Router,
    owners: &[UserId],
    count: usize,
    args: &ScaleArgs,
    ids: &mut Vec<(UserId, String)>,
) -> Result<(), String> {
    let concurrency = args.concurrency;
    let mut next = 0;
    while next < count {
        let batch = (next..count.min(next + concurrency)).map(|index| {
            let owner = owners[index / PER_OWNER];
            let body = serde_json::json!({
                "name": format!("scale-{index}"),
                "spec": {"kind": "docker", "image": args.image, "command": ["sleep", "3600"]},
                "resources": {"millicpus": 100, "memory_mib": 32},
            });
            async move {
                let (status, body) =
                    call(router, owner, Method::POST, "/v1/instances", Some(body)).await?;
                if status != StatusCode::ACCEPTED {
                    return Err(format!("create {index}: {status} {body}"));
                }
                let id = body["instance"]["id"]
                    .as_str()
                    .ok_or(format!("create {index}: no id in {body}"))?;
                Ok((owner, id.to_owned()))
            }
        });
        // Every accepted create is kept before a refused one ends the run.
        let mut refused = None;
        for created in futures_util::future::join_all(batch).await {
            match created {
                Ok(created) => ids.push(created),
                Err(err) => refused = refused.or(Some(err)),
            }
        }
        if let Some(err) = refused {
            return Err(err);
        }
        next += concurrency;
    }
    Ok(())
}

/// Waits until `count` instances are running; when the last one became so.
async fn wait_running(
    store: &SqliteStore,
    count: usize,
    timeout: Duration,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        // Every job carried out (a cheap count), then every instance checked once.
        let jobs = store.job_stats().await.map_err(|err| format!("counting jobs: {err}"))?;
        if jobs.pending > 0 && Instant::now() <= deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let active = store
            .list_active_instances()
            .await
            .map_err(|err| format!("listing instances: {err}"))?;
        let running: Vec<_> = active
            .iter()
            .filter(|instance| instance.status == InstanceStatus::Running)
            .map(|instance| instance.updated_at)
            .collect();
        if running.len() >= count
            && let Some(last) = running.iter().max()
        {
            return Ok(*last);
        }
        let running = running.len();
        if Instant::now() > deadline {
            let mut statuses = std::collections::BTreeMap::<String, usize>::new();
            for instance in &active {
                *statuses.entry(instance.status.to_string()).or_default() += 1;
            }
            return Err(format!(
                "{running} of {count} instances running after {timeout:?} ({statuses:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the watcher follows the engine's events.
async fn wait_connected(watcher: &Watcher) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while watcher.stats().connections == 0 {
        if Instant::now() > deadline {
            return Err("the watcher did not connect to the engine".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Its replay and first reconcile run before it reads new events.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// `reads` calls of `call`, one after the other: p50 and p99 in microseconds.
async fn timed<F, Fut>(reads: usize, mut call: F) -> Result<(f64, f64), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut took = Vec::with_capacity(reads);
    for _ in 0..reads {
        let started = Instant::now();
        call().await?;
        took.push(started.elapsed());
    }
    took.sort_unstable();
    let micros = |p| percentile(&took, p).as_secs_f64() * 1e6;
    Ok((micros(0.50), micros(0.99)))
}

async fn get(router: &Router, owner: UserId, path: String) -> Result<(), String> {
    let (status, body) = call(router, owner, Method::GET, &path, None).await?;
    if status == StatusCode::OK { Ok(()) } else { Err(format!("GET {path}: {status} {body}")) }
}

async fn call(
    router: &Router,
    owner: UserId,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<(StatusCode, serde_json::Value), String> {
    let mut request = Request::builder().method(method).uri(path);
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let mut request = request
        .body(body.map_or_else(Body::empty, |body| Body::from(body.to_string())))
        .map_err(|err| format!("building {path}: {err}"))?;
    request.extensions_mut().insert(Principal {
        user_id: owner,
        scopes: vec![SCOPE_READ.to_owned(), SCOPE_WRITE.to_owned()],
        expires_at: None,
        session: None,
    });
    let response = router.clone().oneshot(request).await.map_err(|err| format!("{path}: {err}"))?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|err| format!("reading the answer of {path}: {err}"))?;
    let body = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).map_err(|err| format!("the answer of {path}: {err}"))?
    };
    Ok((status, body))
}

/// The process's resident memory, KiB (0 where `/proc` cannot say).
fn resident_kib() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages = statm.split_whitespace().nth(1).and_then(|pages| pages.parse::<u64>().ok());
    pages.map_or(0, |pages| pages * 4)
}

/// A fixed pseudo-random sequence of indexes, the same each run (xorshift).
struct Picks(u64);

impl Picks {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self, len: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % len.max(1) as u64).unwrap_or(0)
    }
}
