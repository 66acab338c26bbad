//! `iaas-load`: drives a running platform over HTTP and reports throughput and latency.
//!
//! It registers `--users` fresh users (names carry a unique run id, so runs against a shared
//! Redis never collide), logs each in, then runs the mix for `--duration` seconds on
//! `--connections` workers: `login`, `refresh` (rotating the user's refresh token, as a client
//! does) and `list` (`GET /v1/instances` with the current access token). Each user belongs to
//! one worker, because a refresh token is single-use: reusing a rotated one revokes the family.
//!
//! Closed loop by default (each worker sends its next request when the previous one answered);
//! `--rate` paces the workers to a total target rate instead. Latency is measured from the
//! moment a request is sent, so under `--rate` a server slower than the pace shows as a lower
//! achieved rate, not as queueing delay. A line of progress is printed every second; the final
//! report gives per-operation counts, errors, throughput and p50 / p95 / p99 / max.
//!
//! ```text
//! iaas-load --url http://127.0.0.1:8080 --users 64 --connections 32 --duration 20 \
//!     --mix refresh=8,list=4,login=1
//! ```

#![allow(clippy::print_stdout, reason = "a command-line tool reports on stdout")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::{Value, json};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "iaas-load", about = "Drive a running iaas platform over HTTP and report latency")]
struct Args {
    /// Base URL of the platform.
    #[arg(long, env = "IAAS_LOAD_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Users registered before the run (at least `--connections`).
    #[arg(long, default_value_t = 64)]
    users: usize,
    /// Concurrent workers (each with its own share of the users).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds the mix runs.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Total target requests per second; unset: closed loop, as fast as the server answers.
    #[arg(long)]
    rate: Option<f64>,
    /// Weights of the operations, e.g. `refresh=8,list=4,login=1`.
    #[arg(long, default_value = "refresh=8,list=4,login=1")]
    mix: String,
}

/// The operations of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Login,
    Refresh,
    List,
}

const OPS: [Op; 3] = [Op::Login, Op::Refresh, Op::List];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Login => "login",
            Op::Refresh => "refresh",
            Op::List => "list",
        }
    }

    fn index(self) -> usize {
        match self {
            Op::Login => 0,
            Op::Refresh => 1,
            Op::List => 2,
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
struct User {
    name: String,
    password: String,
    access: String,
    refresh: String,
}

/// Live counters read by the progress line.
#[derive(Debug, Default)]
struct Counters {
    done: [AtomicU64; 3],
    errors: [AtomicU64; 3],
}

/// What one worker measured.
#[derive(Debug, Default)]
struct Samples {
    latencies: [Vec<Duration>; 3],
    first_error: Option<String>,
}

struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    async fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        Self::json(path, response).await
    }

    async fn get(&self, path: &str, token: &str) -> Result<Value, String> {
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
    async fn login(&self, user: &mut User) -> Result<(), String> {
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn run_worker(
    client: Arc<Client>,
    mut users: Vec<User>,
    sequence: Vec<Op>,
    deadline: Instant,
    pace: Option<Duration>,
    counters: Arc<Counters>,
) -> Samples {
    let mut samples = Samples::default();
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

async fn run(args: Args) -> Result<(), String> {
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

    let mut shares: Vec<Vec<User>> = vec![Vec::new(); args.connections];
    for (i, user) in users.into_iter().enumerate() {
        shares[i % args.connections].push(user);
    }
    let pace = args
        .rate
        .filter(|rate| *rate > 0.0)
        .map(|rate| Duration::from_secs_f64(args.connections as f64 / rate));
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let workers: Vec<_> = shares
        .into_iter()
        .map(|share| {
            tokio::spawn(run_worker(
                client.clone(),
                share,
                sequence.clone(),
                deadline,
                pace,
                counters.clone(),
            ))
        })
        .collect();

    let progress = {
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut last = [0u64; 3];
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let mut line = format!("{:>4.0?}", started.elapsed());
                for op in OPS {
                    let done = counters.done[op.index()].load(Ordering::Relaxed);
                    let errors = counters.errors[op.index()].load(Ordering::Relaxed);
                    line.push_str(&format!(
                        "  {} {}/s ({errors} errors)",
                        op.name(),
                        done - last[op.index()]
                    ));
                    last[op.index()] = done;
                }
                println!("{line}");
            }
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
    progress.abort();

    println!(
        "\n{} connections, {:.1} s, {}",
        args.connections,
        elapsed.as_secs_f64(),
        args.rate.map_or_else(|| "closed loop".to_owned(), |r| format!("target {r} req/s"))
    );
    println!(
        "{:<8} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "op", "ok", "errors", "req/s", "p50", "p95", "p99", "max"
    );
    let mut all = 0usize;
    for op in OPS {
        let latencies = &mut total.latencies[op.index()];
        if latencies.is_empty() && counters.errors[op.index()].load(Ordering::Relaxed) == 0 {
            continue;
        }
        latencies.sort_unstable();
        all += latencies.len();
        println!(
            "{:<8} {:>9} {:>7} {:>10.0} {:>9.2?} {:>9.2?} {:>9.2?} {:>9.2?}",
            op.name(),
            latencies.len(),
            counters.errors[op.index()].load(Ordering::Relaxed),
            latencies.len() as f64 / elapsed.as_secs_f64(),
            percentile(latencies, 0.50),
            percentile(latencies, 0.95),
            percentile(latencies, 0.99),
            latencies.last().copied().unwrap_or_default(),
        );
    }
    println!("{:<8} {:>9} {:>7} {:>10.0}", "all", all, "", all as f64 / elapsed.as_secs_f64());
    if let Some(error) = total.first_error {
        println!("first error: {error}");
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("iaas-load: starting the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("iaas-load: {err}");
            std::process::ExitCode::FAILURE
        }
    }
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
    fn a_bad_mix_is_refused_with_the_entry() {
        for (mix, needle) in [
            ("refresh", "not name=weight"),
            ("fly=2", "unknown operation"),
            ("refresh=x", "not a number"),
            ("login=0", "no operation"),
        ] {
            match parse_mix(mix) {
                Err(err) => assert!(err.contains(needle), "{mix}: {err}"),
                Ok(sequence) => panic!("{mix} accepted as {sequence:?}"),
            }
        }
    }

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.99), Duration::ZERO);
    }
}
