//! The platform end to end, twice: on real services (PostgreSQL as the store, Redis for
//! sessions and the cluster cache, the Kafka-protocol broker as the bus) and on embedded
//! defaults (SQLite, in-process sessions, cache and bus); the Docker engine runs the instances
//! in both.
//!
//! The same flow each time: a user registers, logs in, provisions PostgreSQL, sees it `running`
//! over the WebSocket, finds `postgres.created` and `postgres.started` through the monitoring
//! search API, reads its cluster info (filling the cache), stops it, sees the cache entries
//! gone, and deletes it. On the way: `/readyz` checks every backend, request ids are echoed,
//! and `/metrics` carries every family the operating targets need.
//!
//! Each run is isolated on the shared services: its own database, Kafka topic, cache key
//! prefix and data directory.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::time::Duration;

use common::Served;
use futures_util::StreamExt;
use iaas_core::InstanceId;
use iaas_platform::HttpLimits;
use iaas_testkit::TestDatabase;
use iaas_testkit::http::{self, Response};
use iaas_testkit::isolation::{key_prefix, topic_name, unique_name};
use iaas_testkit::wait::eventually;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// One HTTP/1.1 request on a fresh connection, with the `extra` headers; an answer within 60 s.
async fn call(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    extra: &[(&str, &str)],
) -> Response {
    let mut request = http::request_text(addr, method, path, token, body);
    for (name, value) in extra {
        request = http::with_header(&request, name, value);
    }
    http::send_within(addr, request.as_bytes(), Duration::from_secs(60)).await.unwrap()
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads frames until one says `instance` is `status`.
async fn wait_for_status(socket: &mut Socket, instance: &str, status: &str, within: Duration) {
    let seen = tokio::time::timeout(within, async {
        let mut seen = Vec::new();
        while let Some(message) = socket.next().await {
            let Message::Text(text) = message.unwrap() else { continue };
            let frame: Value = serde_json::from_str(&text).unwrap();
            seen.push(frame.clone());
            let matches = frame["type"] == "status"
                && frame["instance_id"] == instance
                && frame["status"] == status;
            if matches {
                return Ok(());
            }
        }
        Err(seen)
    })
    .await;
    match seen {
        Ok(Ok(())) => {}
        Ok(Err(frames)) => panic!("the socket closed before {instance} was {status}: {frames:?}"),
        Err(_) => panic!("{instance} not {status} over the WebSocket within {within:?}"),
    }
}

async fn cache_keys_of(
    redis: &mut redis::aio::MultiplexedConnection,
    keys: &[String],
) -> Vec<String> {
    let mut present = Vec::new();
    for key in keys {
        let exists: i64 = redis::cmd("EXISTS").arg(key).query_async(redis).await.unwrap();
        if exists == 1 {
            present.push(key.clone());
        }
    }
    present
}

/// What a run checks beyond the API flow: the backends `/readyz` must report, the metric
/// families `/metrics` must carry, and Redis when the cache lives there.
struct Checks {
    backends: &'static [&'static str],
    families: &'static [&'static str],
    redis: Option<RedisView>,
}

/// The cache's Redis, read directly.
struct RedisView {
    connection: redis::aio::MultiplexedConnection,
    prefix: String,
}

/// Metric families of every run; Redis and Kafka runs add their own.
const FAMILIES: [&str; 8] = [
    "iaas_http_requests_total",
    "iaas_http_request_duration_seconds_bucket",
    "iaas_cache_hits_total",
    "iaas_cache_misses_total",
    "iaas_consumer_processing_seconds_bucket",
    "iaas_outbox_pending",
    "iaas_outbox_oldest_pending_seconds",
    "iaas_backend_up",
];

/// The user's flow against `running` (see the module docs); the instance is deleted at the end.
async fn postgres_end_to_end(running: &Served, checks: Checks) {
    // Ready: every configured backend answers.
    let addr = running.addr.as_str();
    let ready = eventually(Duration::from_secs(30), || async {
        let reply = call(addr, "GET", "/readyz", None, None, &[]).await;
        if reply.status == 200 { Ok(reply.json()) } else { Err(reply.body) }
    })
    .await
    .unwrap();
    for backend in checks.backends {
        assert_eq!(ready["checks"][backend], "ok", "{ready}");
        assert!(ready["latency_ms"][backend].as_f64().is_some(), "{ready}");
    }

    // Register and log in; the caller's request id comes back.
    let username = unique_name("ada").replace('-', "_");
    let credentials = json!({"username": username, "password": "correct horse battery staple"});
    let reply = call(addr, "POST", "/v1/auth/register", None, Some(&credentials), &[]).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let reply = call(
        addr,
        "POST",
        "/v1/auth/login",
        None,
        Some(&credentials),
        &[("x-request-id", "e2e-login-1")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-request-id"), Some("e2e-login-1"));
    let token = reply.json()["access_token"].as_str().unwrap().to_owned();
    let token = token.as_str();

    // Live status, before provisioning so no update is missed.
    let mut request = format!("ws://{addr}/v1/ws").into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    // Provision PostgreSQL.
    let spec = json!({
        "name": "orders-db",
        "spec": {"kind": "postgres", "database": "orders"},
        "resources": {"millicpus": 500, "memory_mib": 256}
    });
    let reply = call(addr, "POST", "/v1/instances", Some(token), Some(&spec), &[]).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert!(reply.header("x-request-id").is_some_and(|id| !id.is_empty()), "{:?}", reply.headers);
    let instance = reply.json()["instance"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/instances/{instance}");
    wait_for_status(&mut socket, &instance, "running", Duration::from_secs(120)).await;

    // Both events reached the monitoring index through the broker.
    eventually(Duration::from_secs(60), || async {
        let reply =
            call(addr, "GET", &format!("/v1/events?instance={instance}"), Some(token), None, &[])
                .await;
        let names: Vec<String> = reply.json()["entries"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{}.{}",
                            e["type"].as_str().unwrap_or("?"),
                            e["action"].as_str().unwrap_or("?")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let wanted = ["postgres.created", "postgres.started"];
        if wanted.iter().all(|w| names.iter().any(|n| n == w)) { Ok(()) } else { Err(names) }
    })
    .await
    .unwrap();

    // Cluster reads fill the cache (and, on Redis, its keys under the configured prefix).
    let id: InstanceId = instance.parse().unwrap();
    let cache = &running.platform.cache;
    // Until the invalidation of `started` has passed, a fill may still be wiped: read until
    // the entry stays.
    eventually(Duration::from_secs(30), || async {
        let reply = call(addr, "GET", &format!("{path}/info"), Some(token), None, &[]).await;
        if reply.status != 200 {
            return Err(format!("{}: {}", reply.status, reply.body));
        }
        if cache.get_info(id).await.unwrap().is_some() {
            Ok(())
        } else {
            Err("info not cached yet".to_owned())
        }
    })
    .await
    .unwrap();
    let reply = call(addr, "GET", &format!("{path}/info"), Some(token), None, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    if let Some(redis) = &checks.redis {
        let key = format!("{}cluster:info:{instance}", redis.prefix);
        let mut connection = redis.connection.clone();
        let present = cache_keys_of(&mut connection, std::slice::from_ref(&key)).await;
        assert_eq!(present, [key], "the info entry is in Redis");
    }

    // Stop: the `stopped` event invalidates the cluster's cache entries.
    let reply = call(addr, "POST", &format!("{path}/stop"), Some(token), None, &[]).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    wait_for_status(&mut socket, &instance, "stopped", Duration::from_secs(60)).await;
    eventually(Duration::from_secs(30), || async {
        let cached = (
            cache.get_info(id).await.unwrap().is_some(),
            cache.get_stats(id).await.unwrap().is_some(),
            cache.get_replication(id).await.unwrap().is_some(),
        );
        if cached == (false, false, false) { Ok(()) } else { Err(cached) }
    })
    .await
    .unwrap();
    if let Some(redis) = &checks.redis {
        let keys: Vec<String> = ["info", "stats", "replication"]
            .iter()
            .map(|kind| format!("{}cluster:{kind}:{instance}", redis.prefix))
            .collect();
        let present = cache_keys_of(&mut redis.connection.clone(), &keys).await;
        assert!(present.is_empty(), "cache entries left in Redis: {present:?}");
    }

    // The scrape carries every family behind the operating targets and the HTTP metrics.
    let families = checks.families;
    let scrape = eventually(Duration::from_secs(30), || async {
        let reply = call(addr, "GET", "/metrics", None, None, &[]).await;
        let missing: Vec<&str> =
            families.iter().copied().filter(|f| !reply.body.contains(&format!("\n{f}"))).collect();
        if reply.status == 200 && missing.is_empty() { Ok(reply.body) } else { Err(missing) }
    })
    .await
    .unwrap();
    assert!(
        scrape
            .lines()
            .any(|l| l.starts_with("iaas_cache_hits_total{kind=\"info\"}") && !l.ends_with(" 0")),
        "the second info read was a hit:\n{scrape}"
    );
    assert!(
        scrape.contains("route=\"/v1/instances/{id}/{part}\""),
        "HTTP metrics use route templates:\n{scrape}"
    );

    // Delete it; the account's sessions go too, so nothing is left in the shared Redis.
    let reply = call(addr, "DELETE", &format!("{path}?purge=true"), Some(token), None, &[]).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    eventually(Duration::from_secs(60), || async {
        let reply = call(addr, "GET", &path, Some(token), None, &[]).await;
        let gone = reply.status == 404 || reply.json()["status"] == "deleted";
        if gone { Ok(()) } else { Err(reply.body) }
    })
    .await
    .unwrap();
    let reply = call(addr, "POST", "/v1/auth/logout-all", Some(token), None, &[]).await;
    assert!(reply.status < 300, "{}: {}", reply.status, reply.body);

    drop(socket);
}

fn postgres_image() -> String {
    std::env::var(iaas_testkit::POSTGRES_IMAGE_VAR)
        .ok()
        .filter(|image| !image.is_empty())
        .unwrap_or_else(|| "postgres:16".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_end_to_end_on_redis_kafka_postgres_and_docker() {
    let redis_service = iaas_testkit::redis().await.unwrap();
    let kafka = iaas_testkit::kafka().await.unwrap();
    let postgres = iaas_testkit::postgres().await.unwrap();
    iaas_testkit::docker().await.unwrap();
    let database = TestDatabase::create(&postgres, "platform_real_services").await.unwrap();
    let data_dir = iaas_testkit::isolation::temp_dir("iaas-platform-real");
    let prefix = key_prefix("platform-real");
    let running = Served::start(
        common::config(&[
            (iaas_platform::LISTEN_VAR, "127.0.0.1:0".to_owned()),
            (iaas_platform::DATA_DIR_VAR, data_dir.display().to_string()),
            (iaas_platform::DATABASE_URL_VAR, database.url().to_owned()),
            (iaas_platform::REDIS_URL_VAR, redis_service.url().to_owned()),
            (iaas_platform::CACHE_PREFIX_VAR, prefix.clone()),
            (iaas_platform::KAFKA_BROKERS_VAR, kafka.url().to_owned()),
            (iaas_platform::KAFKA_TOPIC_VAR, topic_name("platform-real")),
            (iaas_platform::POSTGRES_IMAGE_VAR, postgres_image()),
            (iaas_platform::SHUTDOWN_GRACE_VAR, "5".to_owned()),
        ]),
        HttpLimits::default(),
    )
    .await;
    let connection = redis::Client::open(redis_service.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    const REAL_FAMILIES: [&str; 14] = [
        FAMILIES[0],
        FAMILIES[1],
        FAMILIES[2],
        FAMILIES[3],
        FAMILIES[4],
        FAMILIES[5],
        FAMILIES[6],
        FAMILIES[7],
        "iaas_cache_redis_used_memory_bytes",
        "iaas_cache_redis_maxmemory_bytes",
        "iaas_cache_redis_evicted_keys",
        "iaas_cache_redis_up",
        "iaas_events_publish_seconds_bucket",
        "iaas_consumer_lag",
    ];
    let checks = Checks {
        backends: &["store", "docker", "log_index", "redis", "kafka"],
        families: &REAL_FAMILIES,
        redis: Some(RedisView { connection, prefix }),
    };
    postgres_end_to_end(&running, checks).await;

    running.stop().await;
    database.drop_database().await.unwrap();
    std::fs::remove_dir_all(&data_dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_end_to_end_on_embedded_defaults() {
    iaas_testkit::docker().await.unwrap();
    let data_dir = iaas_testkit::isolation::temp_dir("iaas-platform-embedded");
    let mut settings = common::embedded(&data_dir);
    settings.push((iaas_platform::POSTGRES_IMAGE_VAR, postgres_image()));
    settings.push((iaas_platform::SHUTDOWN_GRACE_VAR, "5".to_owned()));
    let running = Served::start(common::config(&settings), HttpLimits::default()).await;
    let checks =
        Checks { backends: &["store", "docker", "log_index"], families: &FAMILIES, redis: None };
    postgres_end_to_end(&running, checks).await;

    running.stop().await;
    std::fs::remove_dir_all(&data_dir).unwrap();
}
