//! Liveness and readiness.
//!
//! `/healthz` answers as long as the process serves HTTP. `/readyz` checks every backend the
//! platform is configured with (the store, the Docker engine, the event log index, and Redis
//! and Kafka when configured) at the same time, each bounded by [`CHECK_TIMEOUT`], and answers
//! 503 when any fails. The body names each check's outcome and latency:
//!
//! ```json
//! {"status": "not ready",
//!  "checks": {"docker": "ok", "kafka": "unavailable: no answer within 2s", "store": "ok"},
//!  "latency_ms": {"docker": 1.9, "kafka": 2000.4, "store": 0.7}}
//! ```
//!
//! The checks and their reasons are shown only to a caller on this machine (a loopback
//! address, after `trusted_proxies`) or one whose access token has the `admin` scope: a
//! backend's error names hosts and versions. Anyone else gets the bare verdict,
//! `{"status": "ready"}` or `{"status": "not ready"}`, with the same status code.
//!
//! Each outcome is also exported as `iaas_backend_up{backend}` (1 or 0), so the last readiness
//! verdict per backend shows in `/metrics`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Extension, Json, Router};
use iaas_auth::TokenIssuer;
use iaas_cache::{RedisStore, RedisStoreConfig};
use iaas_core::RuntimeError;
use iaas_core::{Outbox, Principal, SCOPE_ADMIN, UserId};
use iaas_docker::EngineConnection;
use iaas_events::monitoring::{LogIndex, LogQuery};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;
use serde_json::json;

use crate::config::Config;
use iaas_core::error_chain;

/// How long one backend check may take.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the Kafka metadata request may take: below [`CHECK_TIMEOUT`], so the check reports
/// librdkafka's reason rather than a bare timeout.
const KAFKA_METADATA_TIMEOUT: Duration = Duration::from_millis(1500);

type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One named backend check.
#[derive(Clone)]
pub(crate) struct Check {
    name: &'static str,
    probe: Arc<dyn Fn() -> ProbeFuture + Send + Sync>,
}

impl Check {
    /// A check named `name` that runs `probe`; an `Err` says what failed.
    pub(crate) fn new<F, Fut>(name: &'static str, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self { name, probe: Arc::new(move || Box::pin(probe())) }
    }

    /// The store answers (a read of the outbox counters).
    pub(crate) fn store(outbox: Arc<dyn Outbox>) -> Self {
        Self::new("store", move || {
            let outbox = outbox.clone();
            async move { outbox.stats().await.map(drop).map_err(|e| error_chain(&e)) }
        })
    }

    /// The Docker engine answers a ping (the error names its address).
    pub(crate) fn docker(engine: EngineConnection) -> Self {
        Self::new("docker", move || {
            let engine = engine.clone();
            async move {
                engine.ping().await.map_err(|error| match error {
                    RuntimeError::NoEngine { .. } => error_chain(&error),
                    _ => format!("{} (at {})", error_chain(&error), engine.address()),
                })
            }
        })
    }

    /// The event log index answers a search (for a user that has no entries: one round trip).
    pub(crate) fn log_index(index: Arc<dyn LogIndex>) -> Self {
        Self::new("log_index", move || {
            let index = index.clone();
            async move {
                let query = LogQuery::for_user(UserId::new_random()).limit(1);
                index.search(&query).await.map(drop).map_err(|e| error_chain(&e))
            }
        })
    }

    /// The Kafka brokers answer a metadata request for the events topic.
    pub(crate) fn kafka(brokers: &str, topic: &str) -> Self {
        let probe = Arc::new(KafkaProbe::new(brokers, topic));
        Self::new("kafka", move || {
            let probe = probe.clone();
            async move { probe.check().await }
        })
    }
}

/// What `/readyz` checks.
#[derive(Clone)]
pub(crate) struct Readiness {
    checks: Arc<[Check]>,
    timeout: Duration,
    /// Proxies whose `X-Forwarded-For` says who the caller is.
    trusted_proxies: Arc<[ipnet::IpNet]>,
}

impl Readiness {
    /// Runs `checks`, each bounded by `timeout`.
    pub(crate) fn new(checks: Vec<Check>, timeout: Duration) -> Self {
        Self { checks: checks.into(), timeout, trusted_proxies: Arc::new([]) }
    }

    /// Believes `X-Forwarded-For` from `proxies` when deciding whether a caller is local.
    #[must_use]
    pub(crate) fn with_trusted_proxies(mut self, proxies: &[ipnet::IpNet]) -> Self {
        self.trusted_proxies = proxies.into();
        self
    }

    /// `/healthz` and `/readyz` over these checks; `issuer` verifies the token of an
    /// administrator asking for the detail from afar.
    pub(crate) fn routes(self, issuer: TokenIssuer) -> Router {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(self)
            .layer(axum::middleware::from_fn_with_state(issuer, iaas_auth::http::principal_layer))
    }

    /// Whether this caller may read the checks and their reasons.
    fn shows_detail(
        &self,
        headers: &HeaderMap,
        connect: Option<&ConnectInfo<SocketAddr>>,
        principal: Option<&Principal>,
    ) -> bool {
        if principal.is_some_and(|p| p.scopes.iter().any(|s| s == SCOPE_ADMIN)) {
            return true;
        }
        let client = iaas_auth::http::client_address(&self.trusted_proxies, headers, connect);
        client.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// A `/readyz` over `checks`, each bounded by [`CHECK_TIMEOUT`].
    pub(crate) fn of_checks(checks: Vec<Check>) -> Self {
        Self::new(checks, CHECK_TIMEOUT)
    }
}

/// Clients for the optional backends, kept by the platform for readiness and the polled
/// gauges (their own clients live inside the libraries).
pub(crate) struct Probes {
    redis: Option<Result<RedisStore, String>>,
    /// Brokers and topic.
    kafka: Option<(String, String)>,
}

impl Probes {
    /// Clients for the Redis and Kafka of `config`, when configured. Nothing connects yet.
    pub(crate) fn new(config: &Config) -> Self {
        let redis = config.redis_url.as_ref().map(|url| {
            RedisStore::lazy(&RedisStoreConfig::new(url.clone())).map_err(|e| e.to_string())
        });
        let kafka = config
            .kafka_brokers
            .as_ref()
            .map(|brokers| (brokers.clone(), config.kafka_topic.clone()));
        Self { redis, kafka }
    }

    /// The Redis client, when Redis is configured (and its URL valid).
    pub(crate) fn redis(&self) -> Option<RedisStore> {
        self.redis.as_ref().and_then(|redis| redis.as_ref().ok()).cloned()
    }

    pub(crate) fn checks(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        if let Some(redis) = self.redis.clone() {
            checks.push(Check::new("redis", move || {
                let redis = redis.clone();
                async move {
                    let store = redis?;
                    // INFO rather than PING: it is what the memory gauges need, so a ready
                    // Redis is also one they can be read from; the gauges refresh on the way.
                    iaas_cache::redis_health(&mut store.connection())
                        .await
                        .map(drop)
                        .map_err(|e| error_chain(&e))
                }
            }));
        }
        if let Some((brokers, topic)) = &self.kafka {
            checks.push(Check::kafka(brokers, topic));
        }
        checks
    }
}

/// Asks the brokers for the events topic's metadata.
pub(crate) struct KafkaProbe {
    topic: String,
    client: Result<Arc<BaseConsumer>, String>,
}

impl KafkaProbe {
    fn new(brokers: &str, topic: &str) -> Self {
        let client = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("client.id", "iaas-platform-readiness")
            .create::<BaseConsumer>()
            .map(Arc::new)
            .map_err(|e| format!("cannot create a Kafka client for {brokers}: {e}"));
        Self { topic: topic.to_owned(), client }
    }

    async fn check(&self) -> Result<(), String> {
        let client = self.client.clone()?;
        let topic = self.topic.clone();
        // librdkafka's metadata call blocks its thread until the answer or the timeout.
        tokio::task::spawn_blocking(move || topic_metadata(&client, &topic))
            .await
            .map_err(|e| format!("the metadata task failed: {e}"))?
    }
}

fn topic_metadata(client: &BaseConsumer, topic: &str) -> Result<(), String> {
    let metadata = client
        .fetch_metadata(Some(topic), KAFKA_METADATA_TIMEOUT)
        .map_err(|e| format!("metadata of topic {topic}: {e}"))?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(format!("topic {topic} is missing from the broker's metadata"));
    };
    if let Some(error) = found.error() {
        return Err(format!("topic {topic}: {}", RDKafkaErrorCode::from(error)));
    }
    if found.partitions().is_empty() {
        return Err(format!("topic {topic} has no partitions"));
    }
    Ok(())
}

/// Body of `/healthz`.
#[derive(Debug, Serialize)]
pub(crate) struct Health {
    status: &'static str,
    version: &'static str,
}

/// Body of `/readyz`.
#[derive(Debug, Serialize)]
pub(crate) struct ReadinessReport {
    status: &'static str,
    /// `"ok"` or `"unavailable: {reason}"` per check.
    checks: BTreeMap<&'static str, String>,
    /// How long each check took, milliseconds.
    latency_ms: BTreeMap<&'static str, f64>,
}

pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok", version: env!("CARGO_PKG_VERSION") })
}

/// Cancelled once this process is draining: it was asked to stop, still serves, and tells load
/// balancers through `/readyz` to send it nothing new (see [`begin_draining`]).
static DRAINING: LazyLock<CancellationToken> = LazyLock::new(CancellationToken::new);

/// From now on `/readyz` answers 503 `{"status":"draining"}`, whatever the backends say, and
/// live-status sockets close with "reconnect" (1012): the binary calls it on SIGTERM,
/// `drain_secs` before it stops accepting connections, so a load balancer's health check takes
/// the process out first and no request meets a closed port. One flag per process, like the
/// signal that sets it.
pub(crate) fn begin_draining() {
    DRAINING.cancel();
}

/// Cancelled when this process begins to drain (see [`begin_draining`]).
pub(crate) fn draining() -> CancellationToken {
    DRAINING.clone()
}

pub(crate) async fn readyz(
    State(readiness): State<Readiness>,
    headers: HeaderMap,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    principal: Option<Extension<Principal>>,
) -> (StatusCode, Json<serde_json::Value>) {
    if DRAINING.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "draining" })));
    }
    let detail = readiness.shows_detail(
        &headers,
        connect.as_ref().map(|Extension(info)| info),
        principal.as_ref().map(|Extension(p)| p),
    );
    let (status, report) = check_all(&readiness).await;
    let body = if detail {
        serde_json::to_value(&report).unwrap_or_else(|_| json!({ "status": report.status }))
    } else {
        json!({ "status": report.status })
    };
    (status, Json(body))
}

/// Runs every check at once.
async fn check_all(readiness: &Readiness) -> (StatusCode, ReadinessReport) {
    let timeout = readiness.timeout;
    let outcomes =
        futures_util::future::join_all(readiness.checks.iter().map(|check| async move {
            let started = Instant::now();
            let outcome = match tokio::time::timeout(timeout, (check.probe)()).await {
                Ok(Ok(())) => "ok".to_owned(),
                Ok(Err(error)) => format!("unavailable: {error}"),
                Err(_) => format!("unavailable: no answer within {timeout:?}"),
            };
            (check.name, outcome, started.elapsed())
        }))
        .await;
    let mut checks = BTreeMap::new();
    let mut latency_ms = BTreeMap::new();
    for (name, outcome, elapsed) in outcomes {
        let up = outcome == "ok";
        metrics::gauge!("iaas_backend_up", "backend" => name).set(if up { 1.0 } else { 0.0 });
        if !up {
            tracing::warn!(backend = name, %outcome, "readiness check failed");
        }
        // Rounded to 0.1 ms: finer is noise.
        latency_ms.insert(name, (elapsed.as_secs_f64() * 10_000.0).round() / 10.0);
        checks.insert(name, outcome);
    }
    let ready = checks.values().all(|c| c == "ok");
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let report =
        ReadinessReport { status: if ready { "ready" } else { "not ready" }, checks, latency_ms };
    (status, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn report(checks: Vec<Check>) -> (StatusCode, serde_json::Value) {
        let readiness = Readiness::new(checks, Duration::from_millis(200));
        let local = ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000)));
        let (status, Json(report)) =
            readyz(State(readiness), HeaderMap::new(), Some(Extension(local)), None).await;
        (status, report)
    }

    #[tokio::test]
    async fn only_a_local_caller_or_an_administrator_reads_the_reasons() {
        let failing = || Check::new("store", || async { Err("db.internal:5432 refused".into()) });
        let readiness = Readiness::new(vec![failing()], Duration::from_millis(200))
            .with_trusted_proxies(&["10.0.0.0/8".parse().unwrap()]);
        let remote = ConnectInfo(SocketAddr::from(([203, 0, 113, 9], 40000)));
        let proxy = ConnectInfo(SocketAddr::from(([10, 0, 0, 2], 40000)));
        let forwarded = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", value.parse().unwrap());
            headers
        };
        let user = |scopes: &[&str]| {
            Principal::new(UserId::new_random(), scopes.iter().map(|s| (*s).to_owned()).collect())
        };
        let cases = [
            ("a remote caller", HeaderMap::new(), Some(remote), None, false),
            (
                "a remote user",
                HeaderMap::new(),
                Some(remote),
                Some(user(&["instances:read"])),
                false,
            ),
            (
                "a remote administrator",
                HeaderMap::new(),
                Some(remote),
                Some(user(&["admin"])),
                true,
            ),
            ("a client behind the proxy", forwarded("203.0.113.9"), Some(proxy), None, false),
            ("a local client behind the proxy", forwarded("127.0.0.1"), Some(proxy), None, true),
            ("no connect info", HeaderMap::new(), None, None, false),
        ];
        for (who, headers, connect, principal, detail) in cases {
            let (status, Json(body)) = readyz(
                State(readiness.clone()),
                headers,
                connect.map(Extension),
                principal.map(Extension),
            )
            .await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{who}");
            assert_eq!(body["status"], "not ready", "{who}");
            assert_eq!(body.to_string().contains("db.internal"), detail, "{who}: {body}");
            if !detail {
                assert_eq!(body, json!({"status": "not ready"}), "{who}");
            }
        }
    }

    fn ok(name: &'static str) -> Check {
        Check::new(name, || async { Ok(()) })
    }

    #[tokio::test]
    async fn ready_when_every_check_passes() {
        let (status, body) = report(vec![ok("store"), ok("docker")]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "ready");
        assert_eq!(body["checks"]["store"], "ok");
        assert!(body["latency_ms"]["docker"].as_f64().is_some(), "{body}");
    }

    #[tokio::test]
    async fn a_failing_check_makes_it_503_and_is_named_with_its_reason() {
        let failing = Check::new("redis", || async { Err("connection refused".to_owned()) });
        let (status, body) = report(vec![ok("store"), failing]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "not ready");
        assert_eq!(body["checks"]["redis"], "unavailable: connection refused");
        assert_eq!(body["checks"]["store"], "ok", "the others are still reported");
    }

    #[tokio::test]
    async fn a_hanging_check_is_cut_at_the_timeout() {
        let hanging = Check::new("kafka", std::future::pending::<Result<(), String>>);
        let started = Instant::now();
        let (status, body) = report(vec![hanging, ok("store")]).await;
        assert!(started.elapsed() < Duration::from_secs(2), "checks run concurrently, bounded");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body["checks"]["kafka"].as_str().unwrap().contains("no answer within"), "{body}");
        assert!(body["latency_ms"]["kafka"].as_f64().unwrap() >= 200.0, "{body}");
    }

    #[tokio::test]
    async fn an_unreachable_broker_fails_the_kafka_check() {
        // Port 9 (discard) on loopback: nothing listens there.
        let probe = KafkaProbe::new("127.0.0.1:9", "infrastructure.events");
        let error = probe.check().await.unwrap_err();
        assert!(error.contains("infrastructure.events"), "{error}");
    }
}
