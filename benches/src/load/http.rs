//! `iaas-load http`: drives a running platform over HTTP and reports throughput and latency.
//!
//! It registers `--users` fresh users (names carry a unique run id, so runs against a shared
//! Redis never collide), logs each in, then runs the mix for `--duration` seconds on
//! `--connections` workers: `login`, `refresh` (rotating the user's refresh token, as a client
//! does), `list` (`GET /v1/instances` with the current access token), and the cluster reads
//! `info` and `stats` (`GET /v1/instances/{id}/info|stats`, served through the cluster cache:
//! in-process, or Redis with `IAAS_REDIS_URL`). Each user belongs to one worker, because a
//! refresh token is single-use: reusing a rotated one revokes the family.
//!
//! `create` makes a small instance of the same kind for the user (`POST /v1/instances`) and
//! deletes the one it made for that user before (`DELETE ...?purge=true`): both requests are
//! the operation, and its latency is theirs together. It keeps the store, the jobs, the engine
//! and the outbox busy the way users do. Each user holds one such instance at a time besides
//! those still being deleted (within the default quota of 10 while the engine keeps up); a
//! delete that fails is tried again at the user's next `create`, and what is left goes when the
//! run ends, a failure there counted among `create`'s errors. After Ctrl-C they are left (their
//! names start with `load-<run>c-`).
//!
//! The cluster reads need instances: when the mix has `info` or `stats`, the setup provisions
//! `--instances` small generic Docker services (`--image`, by default the local busybox image,
//! running `--command`) through the API, spread over the first users, waits until each is
//! running, and deletes them at the end, also after an error or Ctrl-C (best effort: a failed
//! delete is printed with the instance id). Readers use an access token of the owner from a
//! login of their own (access tokens live 15 minutes; refresh rotation does not revoke them).
//!
//! Closed loop by default (each worker sends its next request when the previous one answered);
//! `--rate` paces the workers to a total target rate instead. Latency is measured from the
//! moment a request is sent, so under `--rate` a server slower than the pace shows as a lower
//! achieved rate, not as queueing delay. A line of progress is printed every second; the final
//! report gives per-operation counts, errors, throughput and p50 / p95 / p99 / max. With
//! `--strict` the run fails when any request failed (for scripted runs).
//!
//! ```text
//! iaas-load http --url http://127.0.0.1:8080 --users 64 --connections 32 --duration 20 \
//!     --mix refresh=8,list=4,login=1
//! ```

#![allow(clippy::print_stdout, reason = "a command-line tool reports on stdout")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::instances::{self, Fleet};
use super::proc_usage::Usage;
use super::report::{self, Progress};

/// Arguments of `iaas-load http`.
#[derive(Debug, clap::Args)]
pub struct HttpArgs {
    /// Base URL of the platform.
    #[arg(long, env = "IAAS_LOAD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Users registered before the run (at least `--connections`).
    #[arg(long, default_value_t = 64)]
    pub users: usize,
    /// Concurrent workers (each with its own share of the users).
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Seconds the mix runs.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Total target requests per second; unset: closed loop, as fast as the server answers.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Weights of the operations, e.g. `refresh=8,list=4,login=1`.
    /// Operations: `login`, `refresh`, `list`, `info`, `stats`, `create`.
    #[arg(long, default_value = "refresh=8,list=4,login=1")]
    pub mix: String,
    /// Fail the run (exit status 1) when any request failed.
    #[arg(long)]
    pub strict: bool,
    /// Instances provisioned for `info` / `stats` (only when the mix has them).
    #[arg(long, default_value_t = 4)]
    pub instances: usize,
    /// Image of those instances and of the ones `create` makes (a generic Docker service).
    #[arg(long, env = "IAAS_TEST_BUSYBOX_IMAGE", default_value = "iaas-local/busybox:1")]
    pub image: String,
    /// Command they run, split on whitespace.
    #[arg(long, default_value = "sleep 86400")]
    pub command: String,
    /// Seconds to wait for them to be running.
    #[arg(long, default_value_t = 120)]
    pub provision_timeout: u64,
    /// The platform's process id on this host: its CPU over the run, and this tool's own, are
    /// read from `/proc` and reported per request (`scripts/load.sh` sets it).
    #[arg(long, env = "IAAS_LOAD_PLATFORM_PID")]
    pub platform_pid: Option<u32>,
}

/// The operations of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Login,
    Refresh,
    List,
    Info,
    Stats,
    Create,
}

const OPS: [Op; 6] = [Op::Login, Op::Refresh, Op::List, Op::Info, Op::Stats, Op::Create];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Login => "login",
            Op::Refresh => "refresh",
            Op::List => "list",
            Op::Info => "info",
            Op::Stats => "stats",
            Op::Create => "create",
        }
    }

    /// Whether it reads an instance's cluster view (and so needs provisioned instances).
    fn reads_a_cluster(self) -> bool {
        matches!(self, Op::Info | Op::Stats)
    }

    fn index(self) -> usize {
        match self {
            Op::Login => 0,
            Op::Refresh => 1,
            Op::List => 2,
            Op::Info => 3,
            Op::Stats => 4,
            Op::Create => 5,
        }
    }
}

/// The weighted sequence of operations each worker cycles through.
fn parse_mix(mix: &str) -> Result<Vec<Op>, String> {
    let mut sequence = Vec::new();
    for part in mix.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, weight) =
            part.split_once('=').ok_or_else(|| format!("mix entry {part:?} is not name=weight"))?;
        let op = OPS
            .into_iter()
            .find(|op| op.name() == name.trim())
            .ok_or_else(|| format!("mix entry {part:?}: unknown operation {name:?}"))?;
        let weight: usize = weight
            .trim()
            .parse()
            .map_err(|_| format!("mix entry {part:?}: weight {weight:?} is not a number"))?;
        sequence.extend(std::iter::repeat_n(op, weight));
    }
    if sequence.is_empty() {
        return Err(format!("mix {mix:?} has no operation with a weight above 0"));
    }
    // Interleave instead of running all of one operation, then all of the next.
    let mut interleaved = Vec::with_capacity(sequence.len());
    let mut by_op: Vec<Vec<Op>> =
        OPS.iter().map(|op| sequence.iter().copied().filter(|o| o == op).collect()).collect();
    while by_op.iter().any(|ops| !ops.is_empty()) {
        for ops in &mut by_op {
            if let Some(op) = ops.pop() {
                interleaved.push(op);
            }
        }
    }
    Ok(interleaved)
}

/// One user's credentials and current tokens.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) password: String,
    pub(crate) access: String,
    pub(crate) refresh: String,
}

/// Live counters read by the progress line.
#[derive(Debug, Default)]
struct Counters {
    done: [AtomicU64; OPS.len()],
    errors: [AtomicU64; OPS.len()],
}

/// What one worker measured.
#[derive(Debug, Default)]
struct Samples {
    latencies: [Vec<Duration>; OPS.len()],
    first_error: Option<String>,
}

/// What `create` makes.
struct Churn {
    spec: instances::FleetSpec,
    run: String,
}

/// The platform's HTTP API, as far as the tool uses it.
pub(crate) struct Client {
    http: reqwest::Client,
    pub(crate) url: String,
}

impl Client {
    /// `POST path` with a JSON body and no token.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.send(self.http.post(format!("{}{path}", self.url)), path, body).await
    }

    /// `POST path` with a JSON body and `token`.
    pub(crate) async fn post_as(
        &self,
        path: &str,
        token: &str,
        body: &Value,
    ) -> Result<Value, String> {
        self.send(self.http.post(format!("{}{path}", self.url)).bearer_auth(token), path, body)
            .await
    }

    /// `DELETE path` with `token`.
    pub(crate) async fn delete(&self, path: &str, token: &str) -> Result<Value, String> {
        let response = self
            .http
            .delete(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| format!("DELETE {path}: {e}"))?;
        Self::json(path, response).await
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        path: &str,
        body: &Value,
    ) -> Result<Value, String> {
        let response = request
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        Self::json(path, response).await
    }

    /// `GET path` with `token`.
    pub(crate) async fn get(&self, path: &str, token: &str) -> Result<Value, String> {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        Self::json(path, response).await
    }

    async fn json(path: &str, response: reqwest::Response) -> Result<Value, String> {
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| format!("{path}: reading body: {e}"))?;
        if !status.is_success() {
            return Err(format!("{path}: {status}: {}", String::from_utf8_lossy(&bytes)));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("{path}: body is not JSON: {e}"))
    }

    /// Logs `user` in and keeps the new tokens.
    pub(crate) async fn login(&self, user: &mut User) -> Result<(), String> {
        let pair = self
            .post("/v1/auth/login", &json!({"username": user.name, "password": user.password}))
            .await?;
        store_tokens(user, &pair)
    }

    /// Rotates `user`'s refresh token and keeps the new pair.
    async fn refresh(&self, user: &mut User) -> Result<(), String> {
        let pair = self.post("/v1/auth/refresh", &json!({"refresh_token": user.refresh})).await?;
        store_tokens(user, &pair)
    }
}

fn store_tokens(user: &mut User, pair: &Value) -> Result<(), String> {
    let field = |name: &str| {
        pair.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("token pair without {name}: {pair}"))
    };
    user.access = field("access_token")?;
    user.refresh = field("refresh_token")?;
    Ok(())
}

/// Creates an instance for `user` and deletes the ones made for it before: `made` holds the
/// ids of the user's instances from `create`, oldest first, and keeps one whose delete failed
/// (tried again at the next `create` and at the end of the run).
async fn create(
    client: &Client,
    user: &User,
    churn: &Churn,
    index: usize,
    made: &mut Vec<String>,
) -> Result<(), String> {
    let body = instances::create_body(&churn.spec, &churn.run, index);
    let created = client.post_as("/v1/instances", &user.access, &body).await?;
    let id = created
        .pointer("/instance/id")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("creating an instance answered without instance.id: {created}"))?;
    made.push(id.to_owned());
    let newest = made.len() - 1;
    delete_made(client, user, made, newest).await
}

/// Deletes the first `count` of `made` with `user`'s current token; what could not be deleted
/// stays in `made`, and the first failure is returned.
async fn delete_made(
    client: &Client,
    user: &User,
    made: &mut Vec<String>,
    count: usize,
) -> Result<(), String> {
    let mut first_error = None;
    let mut kept = Vec::with_capacity(made.len());
    for (position, id) in made.drain(..).enumerate() {
        if position >= count {
            kept.push(id);
            continue;
        }
        if let Err(error) =
            client.delete(&format!("/v1/instances/{id}?purge=true"), &user.access).await
        {
            first_error.get_or_insert(error);
            kept.push(id);
        }
    }
    *made = kept;
    first_error.map_or(Ok(()), Err)
}

#[allow(clippy::too_many_arguments, reason = "the run's shared parts, each used per request")]
async fn run_worker(
    client: Arc<Client>,
    mut users: Vec<User>,
    fleet: Arc<Fleet>,
    churn: Arc<Churn>,
    worker: usize,
    sequence: Vec<Op>,
    deadline: Instant,
    pace: Option<Duration>,
    counters: Arc<Counters>,
) -> Samples {
    let mut samples = Samples::default();
    let mut made: Vec<Vec<String>> = vec![Vec::new(); users.len()];
    let mut ticker = pace.map(|every| {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    });
    let mut step = 0usize;
    while Instant::now() < deadline {
        if let Some(ticker) = &mut ticker {
            ticker.tick().await;
        }
        let op = sequence[step % sequence.len()];
        let slot = step % users.len();
        step += 1;
        let user = &mut users[slot];
        let started = Instant::now();
        let result = match op {
            Op::Login => client.login(user).await,
            Op::Refresh => client.refresh(user).await,
            Op::List => client.get("/v1/instances", &user.access).await.map(drop),
            Op::Info | Op::Stats => match fleet.pick(step) {
                Some(reader) => client
                    .get(&format!("/v1/instances/{}/{}", reader.instance, op.name()), &reader.token)
                    .await
                    .map(drop),
                None => Err("no instance to read".to_owned()),
            },
            Op::Create => {
                let index = worker * 1_000_000 + step;
                create(&client, user, &churn, index, &mut made[slot]).await
            }
        };
        let elapsed = started.elapsed();
        match result {
            Ok(()) => {
                samples.latencies[op.index()].push(elapsed);
                counters.done[op.index()].fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                counters.errors[op.index()].fetch_add(1, Ordering::Relaxed);
                samples.first_error.get_or_insert(err);
                // A failed refresh may have left the user without a valid token: log in again.
                if op == Op::Refresh {
                    let _ = client.login(user).await;
                }
            }
        }
    }
    // The instances `create` left: each user's last (and any whose delete failed), deleted
    // with the user's current token; a failure is one of `create`'s errors.
    for (user, made) in users.iter().zip(&mut made) {
        let count = made.len();
        if let Err(error) = delete_made(&client, user, made, count).await {
            counters.errors[Op::Create.index()].fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "iaas-load: deleting the instances create made ({}): {error}",
                made.join(", ")
            );
            samples.first_error.get_or_insert(error);
        }
    }
    samples
}

/// Registers and logs in `count` users, `parallel` at a time.
async fn prepare_users(
    client: &Arc<Client>,
    count: usize,
    parallel: usize,
) -> Result<Vec<User>, String> {
    let run = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
    let mut users = Vec::with_capacity(count);
    let names: Vec<usize> = (0..count).collect();
    for chunk in names.chunks(parallel.max(1)) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|i| {
                let client = client.clone();
                let mut user = User {
                    name: format!("load{run}u{i}"),
                    password: format!("load-password-{run}-{i}"),
                    access: String::new(),
                    refresh: String::new(),
                };
                tokio::spawn(async move {
                    client
                        .post(
                            "/v1/auth/register",
                            &json!({"username": user.name, "password": user.password}),
                        )
                        .await?;
                    client.login(&mut user).await?;
                    Ok::<_, String>(user)
                })
            })
            .collect();
        for task in tasks {
            users.push(task.await.map_err(|e| format!("a registration task failed: {e}"))??);
        }
    }
    Ok(users)
}

/// Runs `iaas-load http`: prepares the users, runs the mix, prints the report.
///
/// # Errors
/// A bad argument, or a failure while preparing the users (the run needs them all).
pub async fn run(args: HttpArgs) -> Result<(), String> {
    let sequence = parse_mix(&args.mix)?;
    if args.connections == 0 || args.users < args.connections {
        return Err(format!(
            "--users ({}) must be at least --connections ({}), which must be above 0",
            args.users, args.connections
        ));
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))?;
    let client = Arc::new(Client { http, url: args.url.trim_end_matches('/').to_owned() });

    let started = Instant::now();
    let users = prepare_users(&client, args.users, args.connections).await?;
    println!(
        "registered and logged in {} users in {:.1?} against {}",
        users.len(),
        started.elapsed(),
        client.url
    );

    let mut fleet = Fleet::default();
    let outcome = tokio::select! {
        outcome = provision_and_run(&args, &client, sequence, users, &mut fleet) => outcome,
        interrupted = tokio::signal::ctrl_c() => match interrupted {
            Ok(()) => Err("interrupted (Ctrl-C)".to_owned()),
            Err(error) => Err(format!("listening for Ctrl-C: {error}")),
        },
    };
    fleet.delete_all(&client).await;
    outcome
}

/// Provisions the instances the mix reads (into `fleet`, so the caller deletes them whatever
/// happens), then runs the mix and prints the report.
async fn provision_and_run(
    args: &HttpArgs,
    client: &Arc<Client>,
    sequence: Vec<Op>,
    users: Vec<User>,
    fleet: &mut Fleet,
) -> Result<(), String> {
    let spec = instances::FleetSpec {
        count: args.instances,
        image: args.image.clone(),
        command: args.command.split_whitespace().map(str::to_owned).collect(),
        timeout: Duration::from_secs(args.provision_timeout),
    };
    let run = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
    if sequence.iter().any(|op| op.reads_a_cluster()) {
        if args.instances == 0 {
            return Err("the mix reads instances (info, stats): --instances must be above 0".into());
        }
        instances::provision(client, &users, &spec, &run.to_string(), fleet).await?;
    }
    let churn = Churn { spec, run: format!("{run}c") };
    // The workers share a copy; the caller keeps `fleet` to delete the instances afterwards.
    run_mix(args, client, sequence, users, Arc::new(fleet.clone()), churn).await
}

/// The platform's usage and this tool's, when the platform's pid is known.
fn cpu_of(platform: Option<u32>, tool: u32) -> Result<Option<(Usage, Usage)>, String> {
    platform.map(|pid| Ok((Usage::of(pid)?, Usage::of(tool)?))).transpose()
}

/// Runs the mix on `--connections` workers and prints the report.
async fn run_mix(
    args: &HttpArgs,
    client: &Arc<Client>,
    sequence: Vec<Op>,
    users: Vec<User>,
    fleet: Arc<Fleet>,
    churn: Churn,
) -> Result<(), String> {
    let churn = Arc::new(churn);
    let mut shares: Vec<Vec<User>> = vec![Vec::new(); args.connections];
    for (i, user) in users.into_iter().enumerate() {
        shares[i % args.connections].push(user);
    }
    let pace = args
        .rate
        .filter(|rate| *rate > 0.0)
        .map(|rate| Duration::from_secs_f64(args.connections as f64 / rate));
    let counters = Arc::new(Counters::default());
    let tool = std::process::id();
    let cpu_before = cpu_of(args.platform_pid, tool);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let workers: Vec<_> = shares
        .into_iter()
        .enumerate()
        .map(|(worker, share)| {
            tokio::spawn(run_worker(
                client.clone(),
                share,
                fleet.clone(),
                churn.clone(),
                worker,
                sequence.clone(),
                deadline,
                pace,
                counters.clone(),
            ))
        })
        .collect();

    let progress = {
        let counters = counters.clone();
        let mut last = [0u64; OPS.len()];
        let used: Vec<Op> = OPS.into_iter().filter(|op| sequence.contains(op)).collect();
        Progress::start(started, move |_| {
            let mut line = String::new();
            for op in used.iter().copied() {
                let done = counters.done[op.index()].load(Ordering::Relaxed);
                let errors = counters.errors[op.index()].load(Ordering::Relaxed);
                line.push_str(&format!(
                    "  {} {}/s ({errors} errors)",
                    op.name(),
                    done - last[op.index()]
                ));
                last[op.index()] = done;
            }
            line
        })
    };

    let mut total = Samples::default();
    for worker in workers {
        let samples = worker.await.map_err(|e| format!("a worker failed: {e}"))?;
        for op in OPS {
            total.latencies[op.index()].extend(&samples.latencies[op.index()]);
        }
        if total.first_error.is_none() {
            total.first_error = samples.first_error;
        }
    }
    let elapsed = started.elapsed();
    let cpu_after = cpu_of(args.platform_pid, tool);
    progress.stop();

    println!(
        "\n{} connections, {:.1} s, {}",
        args.connections,
        elapsed.as_secs_f64(),
        args.rate.map_or_else(|| "closed loop".to_owned(), |r| format!("target {r} req/s"))
    );
    report::print_header("op");
    let mut all = 0u64;
    for op in OPS {
        let latencies = &mut total.latencies[op.index()];
        let errors = counters.errors[op.index()].load(Ordering::Relaxed);
        if latencies.is_empty() && errors == 0 {
            continue;
        }
        all += latencies.len() as u64;
        report::print_row(op.name(), latencies, errors, elapsed);
    }
    println!("{:<8} {:>9} {:>7} {:>10.0}", "all", all, "", report::rate(all, elapsed));
    let failed: u64 = counters.errors.iter().map(|errors| errors.load(Ordering::Relaxed)).sum();
    match (cpu_before, cpu_after) {
        (Ok(Some((platform_before, tool_before))), Ok(Some((platform_after, tool_after)))) => {
            // Every request answered, failed ones included, spent CPU.
            let answered = (all + failed).max(1) as f64;
            let per_request =
                |before: &Usage, after: &Usage| before.cpu_seconds_until(after) * 1e6 / answered;
            println!(
                "CPU per request: platform {:.0} µs ({:.0} % of a core), this tool {:.0} µs ({:.0} % of a core)",
                per_request(&platform_before, &platform_after),
                platform_before.cpu_percent_until(&platform_after, elapsed),
                per_request(&tool_before, &tool_after),
                tool_before.cpu_percent_until(&tool_after, elapsed),
            );
        }
        (Err(error), _) | (_, Err(error)) => println!("CPU per request not reported: {error}"),
        _ => {}
    }
    if let Some(error) = total.first_error {
        println!("first error: {error}");
    }
    if args.strict && failed > 0 {
        return Err(format!("{failed} requests failed (--strict)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_interleaves_operations_by_weight() {
        let sequence = parse_mix("refresh=2,list=1,login=0").unwrap_or_default();
        assert_eq!(sequence, vec![Op::Refresh, Op::List, Op::Refresh]);
    }

    #[test]
    fn cluster_reads_are_operations_of_the_mix_that_need_instances() {
        let sequence = parse_mix("info=1,stats=1").unwrap_or_default();
        assert_eq!(sequence, vec![Op::Info, Op::Stats]);
        assert!(sequence.iter().all(|op| op.reads_a_cluster()));
        let auth_only = parse_mix("refresh=8,list=4,login=1").unwrap_or_default();
        assert!(!auth_only.iter().any(|op| op.reads_a_cluster()), "no Docker needed for it");
    }

    #[test]
    fn a_bad_mix_is_refused_with_the_entry() {
        for (mix, needle) in [
            ("refresh", "not name=weight"),
            ("fly=2", "unknown operation"),
            ("create=x", "not a number"),
            ("refresh=x", "not a number"),
            ("login=0", "no operation"),
        ] {
            match parse_mix(mix) {
                Err(err) => assert!(err.contains(needle), "{mix}: {err}"),
                Ok(sequence) => panic!("{mix} accepted as {sequence:?}"),
            }
        }
    }
}
