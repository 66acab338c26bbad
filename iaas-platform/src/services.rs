//! The auth, provisioning and monitoring services one per process, from the same configuration and the same parts as the
//! platform: [`ProvisioningService`] (store, Docker runtime, watcher, outbox relay, cluster
//! cache, Kafka publisher when configured) and [`MonitoringService`] (Kafka consumer group
//! `monitoring_group`, by default `monitoring-consumer-group` -> indexer -> log index, and the
//! search API), plus
//! [`auth_router`] for the auth service. `examples/*-service` are thin mains over these.
//!
//! Every service checks access tokens locally, so all of them must read the same auth key file
//! (`auth_key_file`, by default in the shared data directory) as the auth service that signs
//! them.
//!
//! Each router is behind the platform's HTTP layers ([`crate::instrumented`]: `GET /metrics`,
//! request ids, and the configured body limit and timeout).
//!
//! The parts the platform and these services share (the cluster cache, the runtime, the
//! consumers, the relay, the watcher) are built by the functions at the end of this module.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use iaas_auth::{AuthConfig, AuthService, KeySet, SigningKey, TokenIssuer};
use iaas_cache::{
    CacheInvalidator, CacheStore, CachedClusterSource, ClusterCache, ClusterCacheConfig,
    MemoryStore, RedisStore, RedisStoreConfig,
};
use iaas_core::ContainerRuntime;
use iaas_core::{
    ClusterSource, EventHandler, EventPublisher, HostPortPolicy, InstanceRepository, Outbox,
    SystemClock,
};
use iaas_docker::{DockerRuntime, DockerRuntimeConfig, DockerWatch, EngineConnection};
use iaas_events::kafka::{
    ConsumerConfig, KafkaConfig, KafkaConsumerRunner, KafkaPublisher, ensure_topic,
};
use iaas_events::monitoring::{LogIndex, MonitoringIndexer};
use iaas_events::{InProcessBus, OutboxRelay, RelayConfig};
use iaas_provisioning::{LiveStatus, Watcher, WatcherConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, HostFirewall, KAFKA_BROKERS_VAR};
use crate::health::{Check, Readiness};
use crate::http_layers::HttpLimits;
use crate::platform::{Repositories, StartError, connect_docker, kafka_config, open_store};
use crate::server::not_found;

/// The monitoring consumer group, the default of the `monitoring_group` setting
/// ([`Config::monitoring_group`]): one indexer per platform, however many processes.
pub const MONITORING_GROUP: &str = "monitoring-consumer-group";

/// The default consumer group invalidating a shared (Redis) cluster cache, the default of the
/// `cache_invalidation_group` setting ([`Config::cache_invalidation_group`]).
pub const CACHE_INVALIDATION_GROUP: &str = "cluster-cache-invalidator";
/// Partitions of the events topic when this process creates it.
const TOPIC_PARTITIONS: i32 = 3;
/// How long creating the events topic at start may take.
const TOPIC_TIMEOUT: Duration = Duration::from_secs(10);
/// The `kid` of the platform's token signing key.
const SIGNING_KEY_ID: &str = "platform-1";

/// Background tasks, each with a name for the log, cancelled together by one token.
pub(crate) type TaskList = Vec<(&'static str, JoinHandle<()>)>;

/// How long stopping waits for the work of accepted requests (an action, a removal, a
/// provisioning) before it stops the tasks anyway.
const BACKGROUND_GRACE: Duration = Duration::from_secs(30);

/// Background tasks that stop together, and the work of accepted requests.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    pub(crate) cancel: CancellationToken,
    pub(crate) handles: TaskList,
    /// What the API answered 202 for and still carries out (see
    /// `iaas_provisioning::ProvisioningApi::background`).
    pub(crate) background: TaskTracker,
}

impl Tasks {
    /// Waits (at most [`BACKGROUND_GRACE`]) for the work of accepted requests, while the
    /// watcher and the relay still run to record and publish its outcome; then cancels every
    /// task and waits for each to finish its work in flight.
    pub(crate) async fn shutdown(self) {
        self.background.close();
        if tokio::time::timeout(BACKGROUND_GRACE, self.background.wait()).await.is_err() {
            tracing::warn!(
                unfinished = self.background.len(),
                grace_secs = BACKGROUND_GRACE.as_secs(),
                "stopping with work of accepted requests unfinished; the watcher's reconciliation settles it after the next start"
            );
        }
        stop_tasks(&self.cancel, self.handles).await;
    }
}

/// The provisioning API over these parts; `relay` is woken after each commit.
pub(crate) fn provisioning_api(
    repos: &Repositories,
    runtime: Arc<dyn iaas_core::ContainerRuntime>,
    clusters: Arc<dyn ClusterSource>,
    relay: &Arc<OutboxRelay>,
    quota: iaas_core::Quota,
    background: &TaskTracker,
) -> iaas_provisioning::ProvisioningApi {
    let relay = relay.clone();
    iaas_provisioning::ProvisioningApi {
        repo: repos.instances.clone(),
        runtime,
        clusters,
        clock: Arc::new(SystemClock),
        on_commit: Arc::new(move || relay.wake()),
        users: repos.users.clone(),
        quotas: repos.quotas.clone(),
        default_quota: quota,
        background: background.clone(),
    }
}

/// Spawns `run` with a child of `cancel`.
fn spawn_task<F>(
    tasks: &mut TaskList,
    cancel: &CancellationToken,
    name: &'static str,
    run: impl FnOnce(CancellationToken) -> F,
) where
    F: Future<Output = ()> + Send + 'static,
{
    tasks.push((name, tokio::spawn(run(cancel.child_token()))));
}

/// Whether logins are live, read from the auth service's Redis session store; `None` without
/// Redis (the auth service then keeps its sessions in its own memory, out of reach): live
/// sockets then end only when their token expires.
async fn session_liveness(
    config: &Config,
) -> Result<Option<Arc<dyn iaas_core::SessionLiveness>>, StartError> {
    let Some(url) = &config.redis_url else {
        tracing::info!("no redis_url: live sockets end when their token expires, not at logout");
        return Ok(None);
    };
    let store =
        iaas_auth::RedisSessionStore::connect(iaas_auth::RedisSessionConfig::new(url.clone()))
            .await
            .map_err(StartError::Auth)?;
    Ok(Some(Arc::new(iaas_auth::StoreLiveness::new(Arc::new(store), Arc::new(SystemClock)))))
}

/// With a JWKS, keeps `issuer`'s keys current (see `verify_keys`).
fn spawn_jwks_refresh(
    tasks: &mut Tasks,
    source: Option<crate::verify_keys::JwksSource>,
    issuer: &TokenIssuer,
) {
    if let Some(source) = source {
        let issuer = issuer.clone();
        spawn_task(&mut tasks.handles, &tasks.cancel, "jwks refresh", move |cancel| {
            crate::verify_keys::refresh(
                source,
                issuer,
                crate::verify_keys::REFRESH_INTERVAL,
                cancel,
            )
        });
    }
}

/// Cancels `cancel` and waits for every task to finish its work in flight, logging how each
/// ended.
pub(crate) async fn stop_tasks(cancel: &CancellationToken, tasks: TaskList) {
    cancel.cancel();
    for (name, task) in tasks {
        match task.await {
            Ok(()) => tracing::info!(task = name, "stopped"),
            Err(error) => tracing::error!(task = name, %error, "task ended abnormally"),
        }
    }
}

/// The token signing keys from the auth key file (created on the first start) and the refresh
/// secret, as the auth service and every token-checking service need them.
pub(crate) fn signing_keys(config: &Config) -> Result<(KeySet, [u8; 32]), StartError> {
    let keys = crate::auth_keys::load_or_create(&config.auth_key_file)?;
    let signing = SigningKey::ed25519_from_seed(SIGNING_KEY_ID, &keys.signing_seed)
        .map_err(StartError::Auth)?;
    Ok((KeySet::new(signing), keys.refresh_secret))
}

/// A signer and verifier of the platform's access tokens, from the auth key file (what the
/// auth service holds; services that only verify use `verify_keys`).
pub fn token_issuer(config: &Config) -> Result<TokenIssuer, StartError> {
    let (keys, _) = signing_keys(config)?;
    Ok(TokenIssuer::new(keys, AuthConfig::default().tokens, Arc::new(SystemClock)))
}

/// The auth service's routes (`/v1/auth/*`) with `/healthz` and a `/readyz` that checks the
/// store.
pub fn auth_router(config: &Config, auth: AuthService, repos: &Repositories) -> Router {
    let readiness = Readiness::of_checks(vec![Check::store(repos.outbox.clone())])
        .with_trusted_proxies(&config.trusted_proxies);
    let routes = readiness
        .routes(auth.issuer().clone())
        .merge(iaas_auth::http::router(auth))
        .merge(iaas_auth::openapi::openapi_router())
        .fallback(not_found);
    crate::server::instrumented(routes, config.http_limits)
}

/// The provisioning service on its own.
pub struct ProvisioningService {
    /// The store.
    pub repos: Repositories,
    /// The Docker engine (connected on first use).
    pub docker: EngineConnection,
    /// Live status fan-out.
    pub live: LiveStatus,
    /// The container runtime.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// Cluster reads through the cache.
    pub clusters: Arc<dyn ClusterSource>,
    issuer: TokenIssuer,
    /// Whether logins are live, from the auth service's Redis (when configured): live sockets
    /// end with their login.
    sessions: Option<Arc<dyn iaas_core::SessionLiveness>>,
    limits: HttpLimits,
    trusted_proxies: Vec<ipnet::IpNet>,
    quota: iaas_core::Quota,
    relay: Arc<OutboxRelay>,
    tasks: Tasks,
}

impl std::fmt::Debug for ProvisioningService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisioningService").field("relay", &self.relay).finish_non_exhaustive()
    }
}

impl ProvisioningService {
    /// Opens the store and starts the relay, the Docker watcher and, with Kafka, the live
    /// status and cache invalidation consumers. Without Kafka the events travel on an
    /// in-process bus to this process's cache and live status only.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        // Before any component is built: the cache registers its metric handles when it is.
        crate::telemetry::install();
        let repos = open_store(config).await?;
        let docker = connect_docker(config);
        let (issuer, jwks) = crate::verify_keys::token_verifier(config).await?;
        let sessions = session_liveness(config).await?;
        let live = LiveStatus::default();
        let mut tasks = Tasks::default();
        spawn_jwks_refresh(&mut tasks, jwks, &issuer);
        let runtime = docker_runtime(config, &docker)?;
        isolate_host(config).await?;
        let (cache, shared_cache) = cluster_cache(config)?;
        let invalidator: Arc<dyn EventHandler> =
            crate::telemetry::timed_handler(Arc::new(CacheInvalidator::new(cache.clone())));
        let clusters: Arc<dyn ClusterSource> =
            Arc::new(CachedClusterSource::new(cache, runtime.clone()));
        let subscribers = vec![
            invalidator_subscriber(config, shared_cache, invalidator),
            live_status_subscriber(&live),
        ];
        let publisher = event_bus(config, &mut tasks.handles, &tasks.cancel, subscribers).await?;
        let relay = spawn_engine_tasks(
            &mut tasks.handles,
            &tasks.cancel,
            &repos,
            &docker,
            &runtime,
            publisher,
        );
        Ok(Self {
            repos,
            docker,
            live,
            runtime,
            clusters,
            issuer,
            sessions,
            limits: config.http_limits,
            trusted_proxies: config.trusted_proxies.clone(),
            quota: config.quota,
            relay,
            tasks,
        })
    }

    /// `/v1/instances*` and `/v1/ws` behind the access-token check, `/healthz`, and a
    /// `/readyz` that checks the store and the Docker engine.
    pub fn router(&self) -> Router {
        let api = provisioning_api(
            &self.repos,
            self.runtime.clone(),
            self.clusters.clone(),
            &self.relay,
            self.quota,
            &self.tasks.background,
        );
        let mut live = iaas_provisioning::LiveOptions::default();
        if let Some(sessions) = &self.sessions {
            live = live.with_sessions(sessions.clone());
        }
        let authenticated = iaas_provisioning::live_router_with(
            self.live.clone(),
            self.repos.instances.clone(),
            live,
        )
        .merge(iaas_provisioning::provisioning_router(api))
        .merge(iaas_provisioning::outbox_admin_router(self.repos.outbox.clone()))
        .layer(axum::middleware::from_fn_with_state(
            self.issuer.clone(),
            iaas_auth::http::principal_layer,
        ));
        let readiness = Readiness::of_checks(vec![
            Check::store(self.repos.outbox.clone()),
            Check::docker(self.docker.clone()),
        ])
        .with_trusted_proxies(&self.trusted_proxies);
        let routes = readiness
            .routes(self.issuer.clone())
            .merge(authenticated)
            .merge(iaas_provisioning::openapi::openapi_router())
            .fallback(not_found);
        crate::server::instrumented(routes, self.limits)
    }

    /// Stops the background tasks, letting each finish its work in flight.
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
    }
}

/// The monitoring service on its own: it reads the events from Kafka, so it needs
/// `kafka_brokers`.
pub struct MonitoringService {
    /// The searchable event log.
    pub index: Arc<dyn LogIndex>,
    issuer: TokenIssuer,
    limits: HttpLimits,
    trusted_proxies: Vec<ipnet::IpNet>,
    kafka: KafkaConfig,
    tasks: Tasks,
}

impl std::fmt::Debug for MonitoringService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitoringService")
            .field("topic", &self.kafka.topic)
            .finish_non_exhaustive()
    }
}

impl MonitoringService {
    /// Opens the log index (Elasticsearch when configured, else embedded) and starts the
    /// consumer that feeds it, in the configured `monitoring_group`.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        let brokers = config.kafka_brokers.as_deref().ok_or(StartError::Unconfigured {
            service: "the monitoring service",
            key: "kafka_brokers",
            env: KAFKA_BROKERS_VAR,
            why: "it reads the events from Kafka",
        })?;
        crate::telemetry::install();
        let kafka = kafka_config(config, brokers);
        let (issuer, jwks) = crate::verify_keys::token_verifier(config).await?;
        let index = crate::log_index::open_log_index(config).await?;
        ensure_events_topic(&kafka).await;
        let mut tasks = Tasks::default();
        spawn_jwks_refresh(&mut tasks, jwks, &issuer);
        spawn_consumer(
            &mut tasks.handles,
            &tasks.cancel,
            "monitoring consumer",
            &kafka,
            config.monitoring_group.clone(),
            crate::telemetry::timed_handler(Arc::new(MonitoringIndexer::new(index.clone()))),
        )?;
        Ok(Self {
            index,
            issuer,
            limits: config.http_limits,
            trusted_proxies: config.trusted_proxies.clone(),
            kafka,
            tasks,
        })
    }

    /// `GET /v1/events` and `/v1/events/stats` behind the access-token check, `/healthz`, and
    /// a `/readyz` that checks the log index and the broker.
    pub fn router(&self) -> Router {
        let authenticated = iaas_events::monitoring::monitoring_router(self.index.clone()).layer(
            axum::middleware::from_fn_with_state(
                self.issuer.clone(),
                iaas_auth::http::principal_layer,
            ),
        );
        let readiness = Readiness::of_checks(vec![
            Check::log_index(self.index.clone()),
            Check::kafka(&self.kafka.brokers, &self.kafka.topic),
        ])
        .with_trusted_proxies(&self.trusted_proxies);
        let routes = readiness
            .routes(self.issuer.clone())
            .merge(authenticated)
            .merge(iaas_events::monitoring::openapi::openapi_router())
            .fallback(not_found);
        crate::server::instrumented(routes, self.limits)
    }

    /// Stops the consumer after the event in flight.
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
    }
}

/// The container runtime with the configured image catalog, publish address and host-port
/// policy (the configured range, minus every port of this platform's own).
pub(crate) fn docker_runtime(
    config: &Config,
    docker: &EngineConnection,
) -> Result<Arc<DockerRuntime>, StartError> {
    let mut runtime_config = DockerRuntimeConfig::default();
    runtime_config.catalog = config.images.clone();
    runtime_config.publish_host = config.publish_address.to_string();
    runtime_config.host_ports = HostPortPolicy::new(config.host_port_range.clone())
        .map_err(StartError::HostPorts)?
        .reserving(config.own_ports());
    Ok(Arc::new(DockerRuntime::new(docker.clone(), runtime_config)))
}

/// Adds the rule that drops traffic from tenants' networks to the host, as `host_firewall`
/// says (see `iaas_docker::firewall`).
pub(crate) async fn isolate_host(config: &Config) -> Result<(), StartError> {
    if config.host_firewall == HostFirewall::Off {
        return Ok(());
    }
    match iaas_docker::firewall::isolate_host().await {
        Ok(()) => Ok(()),
        Err(error) if config.host_firewall == HostFirewall::Auto => {
            tracing::warn!(
                error = %iaas_core::error_chain(&error),
                "tenants' containers can reach services this host runs on all interfaces: add `iptables -I INPUT -i iaasu+ -m conntrack ! --ctstate ESTABLISHED,RELATED -j DROP` as root, or run the platform as root (host_firewall = on makes this an error)"
            );
            Ok(())
        }
        Err(error) => Err(StartError::HostFirewall(error)),
    }
}

/// The cluster cache (Redis when configured, else in-process) and whether it is shared
/// between processes.
pub(crate) fn cluster_cache(config: &Config) -> Result<(ClusterCache, bool), StartError> {
    let (store, shared): (Arc<dyn CacheStore>, bool) = match &config.redis_url {
        None => (Arc::new(MemoryStore::default()), false),
        // Lazy: a Redis that is down at start is a degraded cache, not a failed start.
        Some(url) => (
            Arc::new(
                RedisStore::lazy(&RedisStoreConfig::new(url.clone())).map_err(StartError::Cache)?,
            ),
            true,
        ),
    };
    let cache =
        ClusterCache::new(store, ClusterCacheConfig::with_prefix(config.cache_prefix.clone()));
    Ok((cache, shared))
}

/// Creates the events topic unless it exists; a failure is logged and left to the broker's
/// own topic creation.
pub(crate) async fn ensure_events_topic(kafka: &KafkaConfig) {
    if let Err(error) = ensure_topic(kafka, &kafka.topic, TOPIC_PARTITIONS, 1, TOPIC_TIMEOUT).await
    {
        tracing::warn!(%error, topic = %kafka.topic, "could not create the events topic; relying on the broker creating it");
    }
}

/// Every process shows live status for its own WebSocket clients, so each reads every event:
/// a group of its own.
pub(crate) fn live_status_group() -> String {
    format!("live-status-{}", iaas_core::EventId::new_v7())
}

/// A shared (Redis) cache is invalidated once per event, by the configured group; a cache in
/// this process must see every event itself.
pub(crate) fn invalidator_group(config: &Config, shared_cache: bool) -> String {
    if shared_cache {
        config.cache_invalidation_group.clone()
    } else {
        format!("{CACHE_INVALIDATION_GROUP}-{}", iaas_core::EventId::new_v7())
    }
}

/// A reader of the platform's events: a group of the in-process bus, or a Kafka consumer
/// group run as a task of its own.
pub(crate) struct Subscriber {
    /// The in-process group's name.
    pub(crate) name: &'static str,
    /// The consumer task's name, for logs.
    pub(crate) task: &'static str,
    /// The Kafka consumer group.
    pub(crate) group: String,
    /// What handles each event.
    pub(crate) handler: Arc<dyn EventHandler>,
}

/// The bus the relay publishes to, with every subscriber attached: without brokers an
/// in-process bus delivering to each subscriber's group; with brokers the events topic
/// (created if missing), one consumer task per subscriber, and the Kafka publisher.
pub(crate) async fn event_bus(
    config: &Config,
    tasks: &mut TaskList,
    cancel: &CancellationToken,
    subscribers: Vec<Subscriber>,
) -> Result<Arc<dyn EventPublisher>, StartError> {
    let Some(brokers) = &config.kafka_brokers else {
        let bus = Arc::new(InProcessBus::new());
        for subscriber in subscribers {
            bus.subscribe(subscriber.name, subscriber.handler);
        }
        return Ok(bus);
    };
    let kafka = kafka_config(config, brokers);
    ensure_events_topic(&kafka).await;
    for subscriber in subscribers {
        spawn_consumer(
            tasks,
            cancel,
            subscriber.task,
            &kafka,
            subscriber.group,
            subscriber.handler,
        )?;
    }
    Ok(Arc::new(KafkaPublisher::new(&kafka)?))
}

/// The live-status subscriber (each process reads every event for its own sockets).
pub(crate) fn live_status_subscriber(live: &LiveStatus) -> Subscriber {
    Subscriber {
        name: "live-status",
        task: "live-status consumer",
        group: live_status_group(),
        handler: Arc::new(live.clone()),
    }
}

/// The cache-invalidation subscriber of `invalidator`.
pub(crate) fn invalidator_subscriber(
    config: &Config,
    shared_cache: bool,
    invalidator: Arc<dyn EventHandler>,
) -> Subscriber {
    Subscriber {
        name: "cluster-cache",
        task: "cache invalidator consumer",
        group: invalidator_group(config, shared_cache),
        handler: invalidator,
    }
}

/// The tasks that follow the engine and publish what changed: the outbox relay over
/// `publisher`, the Docker watcher (waking the relay on each change it commits) and the
/// one-off join of old instances to their owner's network. Returns the relay.
pub(crate) fn spawn_engine_tasks(
    tasks: &mut TaskList,
    cancel: &CancellationToken,
    repos: &Repositories,
    docker: &EngineConnection,
    runtime: &Arc<DockerRuntime>,
    publisher: Arc<dyn EventPublisher>,
) -> Arc<OutboxRelay> {
    let relay = spawn_relay(tasks, cancel, repos.outbox.clone(), publisher);
    spawn_watcher(tasks, cancel, docker.clone(), repos.instances.clone(), relay.clone());
    spawn_network_migration(tasks, cancel, runtime.clone(), repos.instances.clone());
    relay
}

/// Runs `handler` over the consumer group `group` until shutdown.
pub(crate) fn spawn_consumer(
    tasks: &mut TaskList,
    cancel: &CancellationToken,
    name: &'static str,
    kafka: &KafkaConfig,
    group: String,
    handler: Arc<dyn EventHandler>,
) -> Result<(), StartError> {
    let runner =
        Arc::new(KafkaConsumerRunner::new(ConsumerConfig::new(kafka.clone(), group), handler)?);
    spawn_task(tasks, cancel, name, |token| async move {
        runner.run(token).await;
    });
    Ok(())
}

/// Starts the outbox relay to `publisher`.
pub(crate) fn spawn_relay(
    tasks: &mut TaskList,
    cancel: &CancellationToken,
    outbox: Arc<dyn Outbox>,
    publisher: Arc<dyn EventPublisher>,
) -> Arc<OutboxRelay> {
    let relay = Arc::new(OutboxRelay::new(
        outbox,
        publisher,
        Arc::new(SystemClock),
        RelayConfig::new(format!("relay-{}", iaas_core::EventId::new_v7())),
    ));
    let task_relay = relay.clone();
    spawn_task(tasks, cancel, "outbox relay", |token| async move {
        task_relay.run(token).await;
    });
    relay
}

/// Starts the event watcher of the Docker engine over `instances`; each status change it commits wakes
/// `relay`, so the change reaches the bus without waiting for the relay's idle poll.
pub(crate) fn spawn_watcher(
    tasks: &mut TaskList,
    cancel: &CancellationToken,
    docker: EngineConnection,
    instances: Arc<dyn InstanceRepository>,
    relay: Arc<OutboxRelay>,
) {
    let watcher = Arc::new(
        Watcher::new(
            Arc::new(DockerWatch::new(docker)),
            instances,
            Arc::new(SystemClock),
            WatcherConfig::default(),
        )
        .with_on_commit(Arc::new(move || relay.wake())),
    );
    spawn_task(tasks, cancel, "docker watcher", |token| async move {
        watcher.run(token).await;
    });
}

/// How often a background task that needs the engine tries again while it is unavailable.
const ENGINE_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Joins instances made by a release with one network per instance to their owner's network
/// (`DockerRuntime::join_user_networks`), once, in the background: a start does not wait for
/// the engine, and a failure is logged and tried again at the next start.
pub(crate) fn spawn_network_migration(
    tasks: &mut TaskList,
    cancel: &CancellationToken,
    runtime: Arc<DockerRuntime>,
    instances: Arc<dyn InstanceRepository>,
) {
    spawn_task(tasks, cancel, "user network migration", |token| async move {
        // Waits for an engine that is not there yet (the platform starts without one).
        let migrate = async {
            loop {
                let active = instances.list_active_instances().await.map_err(|e| e.to_string())?;
                match runtime.join_user_networks(&active).await {
                    Err(error) if error.is_unavailable() => {
                        tokio::time::sleep(ENGINE_RETRY_INTERVAL).await;
                    }
                    done => return done.map_err(|e| iaas_core::error_chain(&e)),
                }
            }
        };
        tokio::select! {
            () = token.cancelled() => {}
            done = migrate => match done {
                Ok(report) if report.joined > 0 => tracing::info!(
                    joined = report.joined,
                    already = report.already,
                    "containers joined their owner's network"
                ),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "joining containers to their owner's network failed; retried at the next start"),
            },
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_monitoring_service_refuses_to_start_without_brokers() {
        let err = MonitoringService::start(&Config::default()).await.unwrap_err();
        assert!(matches!(err, StartError::Unconfigured { key: "kafka_brokers", .. }), "{err:?}");
        assert!(err.to_string().contains("IAAS_KAFKA_BROKERS"), "{err}");
    }
}
