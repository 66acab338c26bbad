//! The composition root: every component of the platform built from the configuration, each
//! in one place, for the all-in-one binary ([`crate::Platform::start`]) and the single-service
//! examples ([`crate::ProvisioningService`], [`crate::MonitoringService`], and the auth
//! service's `main`) alike.
//!
//! The single components ([`open_store`], [`connect_docker`], [`auth_service`],
//! [`kafka_config`], the cluster cache, the container runtime, the event bus and its
//! subscribers, the outbox relay, the Docker watcher) are functions of the configuration.
//! Two assemblies are shared by several processes, so they are written here once:
//! [`Provisioning`] (the engine, the runtime, the cluster cache, live status, the bus with its
//! subscribers, the relay and the watcher) and the verify-only token check of the services
//! that do not sign ([`token_verifier`]). Background tasks are kept in [`Tasks`], which stops
//! them together.
//!
//! This module sits above the configuration and the single-concern modules (keys, log index,
//! health probes, metrics) and below the processes that use it (`platform`, `services`); it
//! imports neither of those.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use iaas_auth::{
    AuthConfig, AuthService, MemorySessionStore, RedisSessionConfig, RedisSessionStore,
    SessionStore, TokenIssuer, UserCacheConfig,
};
use iaas_cache::{
    CacheInvalidator, CacheStore, CachedClusterSource, ClusterCache, ClusterCacheConfig,
    MemoryStore, RedisStore, RedisStoreConfig,
};
use iaas_core::{
    ClusterSource, EventHandler, EventPublisher, HostPortPolicy, InstanceRepository, JobQueue,
    Leases, Outbox, QuotaRepository, SystemClock, UserRepository,
};
use iaas_docker::{DockerRuntime, DockerRuntimeConfig, DockerWatch, EngineConnection};
use iaas_events::kafka::{
    ConsumerConfig, KafkaConfig, KafkaConsumerRunner, KafkaPublisher, Membership, ensure_topic,
};
use iaas_events::monitoring::{LogIndex, MonitoringIndexer};
use iaas_events::{InProcessBus, OutboxRelay, RelayConfig};
use iaas_provisioning::{
    JobConfig, Jobs, Leadership, LeaseConfig, LiveStatus, SecretSealer, Supervisor,
    SupervisorConfig, Watcher, WatcherConfig,
};
use iaas_store::{PostgresConfig, PostgresStore, SqliteConfig, SqliteStore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{CACHE_INVALIDATION_GROUP, Config, Database, HostFirewall, JwksSource};
use crate::error::StartError;
use crate::telemetry::timed_handler;

/// Partitions of the events topic when this process creates it.
const TOPIC_PARTITIONS: i32 = 3;
/// How long creating the events topic at start may take.
const TOPIC_TIMEOUT: Duration = Duration::from_secs(10);

/// The repositories of one store.
#[derive(Clone)]
pub struct Repositories {
    /// Accounts.
    pub users: Arc<dyn UserRepository>,
    /// Instances (and their outbox writes).
    pub instances: Arc<dyn InstanceRepository>,
    /// The outbox the relay drains.
    pub outbox: Arc<dyn Outbox>,
    /// Per-user quota overrides.
    pub quotas: Arc<dyn QuotaRepository>,
    /// The jobs the instance writes ask for, and the credentials kept for them.
    pub jobs: Arc<dyn JobQueue>,
    /// Named leases (one process follows the engine).
    pub leases: Arc<dyn Leases>,
}

impl Repositories {
    fn of<S>(store: S) -> Self
    where
        S: UserRepository
            + InstanceRepository
            + Outbox
            + QuotaRepository
            + JobQueue
            + Leases
            + 'static,
    {
        let store = Arc::new(store);
        Self {
            users: store.clone(),
            instances: store.clone(),
            outbox: store.clone(),
            quotas: store.clone(),
            jobs: store.clone(),
            leases: store,
        }
    }
}

/// Opens the configured store: the SQLite file `iaas.db` in the data directory (created if
/// needed), or PostgreSQL. Migrations run on open.
pub async fn open_store(config: &Config) -> Result<Repositories, StartError> {
    Ok(match config.database() {
        Database::Sqlite(dir) => {
            std::fs::create_dir_all(&dir).map_err(|source| StartError::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
            Repositories::of(SqliteStore::open(&SqliteConfig::new(dir.join("iaas.db"))).await?)
        }
        Database::Postgres(url) => {
            Repositories::of(PostgresStore::connect(&PostgresConfig::new(url)).await?)
        }
    })
}

/// The configured Docker engine (`docker_host`, else the local socket), connected on first
/// use: until it answers, provisioning is refused with 503 and `/readyz` names it, and it is
/// used as soon as it appears.
pub fn connect_docker(config: &Config) -> EngineConnection {
    let engine = EngineConnection::new(config.docker_host.clone());
    if let Err(error) = engine.client() {
        tracing::warn!(
            error = %iaas_core::error_chain(&error),
            "no Docker engine yet: provisioning answers 503 until it appears (start dockerd, or set DOCKER_HOST)"
        );
    }
    engine
}

/// The Kafka settings of the configured brokers, topic and producer idempotence, the
/// library's safe defaults otherwise.
pub fn kafka_config(config: &Config, brokers: &str) -> KafkaConfig {
    let mut kafka = KafkaConfig::new(brokers.to_owned());
    kafka.topic.clone_from(&config.kafka_topic);
    kafka.idempotent = config.kafka_idempotence;
    kafka
}

/// The auth service on the configured session store (Redis or in-process), signing with the
/// key file's key; every service of one platform that checks tokens must build it from the same
/// key file.
pub async fn auth_service(
    config: &Config,
    users: Arc<dyn UserRepository>,
) -> Result<AuthService, StartError> {
    let (keys, refresh_secret) = crate::auth_keys::signing_keys(config)?;
    let sessions: Arc<dyn SessionStore> = match &config.redis_url {
        None => Arc::new(MemorySessionStore::new()),
        Some(url) => Arc::new(
            RedisSessionStore::connect(session_config(config, url))
                .await
                .map_err(StartError::Auth)?,
        ),
    };
    let mut auth_config = AuthConfig::default();
    auth_config.default_scopes = vec![
        iaas_provisioning::SCOPE_READ.to_owned(),
        iaas_provisioning::SCOPE_WRITE.to_owned(),
        "events:read".to_owned(),
    ];
    auth_config.user_cache = UserCacheConfig::with_ttl(config.auth_user_cache_ttl);
    auth_config.tokens.verify_cache_capacity = config.auth_token_cache_entries;
    auth_config.trusted_proxies = config.trusted_proxies.clone();
    auth_config.throttle.max_registrations_per_client = config.registrations_per_client;
    AuthService::new(users, sessions, keys, &refresh_secret, Arc::new(SystemClock), auth_config)
        .map_err(StartError::Auth)
}

/// Background tasks, each with a name for the log, cancelled together by one token.
pub(crate) type TaskList = Vec<(&'static str, JoinHandle<()>)>;

/// How long stopping waits for the work of accepted requests (an action, a removal, a
/// provisioning) before it stops the tasks anyway.
const BACKGROUND_GRACE: Duration = Duration::from_secs(30);

/// How long stopping waits for jobs to be given back once they were told to.
const GIVE_BACK_GRACE: Duration = Duration::from_secs(5);

/// Background tasks that stop together, and the work of accepted requests.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    pub(crate) cancel: CancellationToken,
    pub(crate) handles: TaskList,
    /// What the API answered 202 for and still carries out (see
    /// `iaas_provisioning::ProvisioningApi::background`).
    pub(crate) background: TaskTracker,
    /// The jobs this process carries out, given back when they outlast the grace.
    pub(crate) jobs: Option<Jobs>,
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
                "stopping with jobs unfinished; giving them back to the other processes of the platform (or this one after its next start)"
            );
            if let Some(jobs) = &self.jobs {
                jobs.give_back_claims();
                if tokio::time::timeout(GIVE_BACK_GRACE, self.background.wait()).await.is_err() {
                    tracing::warn!(
                        unfinished = self.background.len(),
                        "jobs not given back in time; they are taken over once their leases run out"
                    );
                }
            }
        }
        stop_tasks(&self.cancel, self.handles).await;
    }
}

/// The job queue of `repos`, its sealer keyed by the configured secrets key file (created on
/// the first start).
fn jobs(config: &Config, repos: &Repositories) -> Result<Jobs, StartError> {
    let lost =
        "the kept credentials of instances still provisioning cannot be read; they end failed";
    let key = crate::auth_keys::read_or_create(&config.secrets_key_path(), 32, lost)?;
    let mut sealing_key = [0u8; 32];
    sealing_key.copy_from_slice(&key);
    Ok(Jobs::new(repos.jobs.clone(), SecretSealer::new(&sealing_key), JobConfig::default()))
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

/// The Redis session store of `url` under `cache_prefix` + `auth:` (`iaas:auth:` by default),
/// so two platforms sharing one Redis keep their sessions and throttle counters apart, as they
/// do their cache keys.
fn session_config(config: &Config, url: &str) -> RedisSessionConfig {
    let mut sessions = RedisSessionConfig::new(url.to_owned());
    sessions.key_prefix = format!("{}auth:", config.cache_prefix);
    sessions
}

/// Whether logins are live, read from the auth service's Redis session store; `None` without
/// Redis (the auth service then keeps its sessions in its own memory, out of reach): live
/// sockets then end only when their token expires.
pub(crate) async fn session_liveness(
    config: &Config,
) -> Result<Option<Arc<dyn iaas_core::SessionLiveness>>, StartError> {
    let Some(url) = &config.redis_url else {
        tracing::info!("no redis_url: live sockets end when their token expires, not at logout");
        return Ok(None);
    };
    let store = iaas_auth::RedisSessionStore::connect(session_config(config, url))
        .await
        .map_err(StartError::Auth)?;
    Ok(Some(Arc::new(iaas_auth::StoreLiveness::new(Arc::new(store), Arc::new(SystemClock)))))
}

/// With a JWKS, keeps `issuer`'s keys current (see `verify_keys`).
fn spawn_jwks_refresh(tasks: &mut Tasks, source: Option<JwksSource>, issuer: &TokenIssuer) {
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
async fn stop_tasks(cancel: &CancellationToken, tasks: TaskList) {
    cancel.cancel();
    for (name, task) in tasks {
        match task.await {
            Ok(()) => tracing::info!(task = name, "stopped"),
            Err(error) => tracing::error!(task = name, %error, "task ended abnormally"),
        }
    }
}

/// The container runtime with the configured image catalog, publish address and host-port
/// policy (the configured range, minus every port of this platform's own).
fn docker_runtime(
    config: &Config,
    docker: &EngineConnection,
) -> Result<Arc<DockerRuntime>, StartError> {
    let mut runtime_config = DockerRuntimeConfig::default();
    runtime_config.catalog = config.images();
    runtime_config.publish_host = config.publish_address.to_string();
    runtime_config.host_ports = HostPortPolicy::new(config.host_port_range.clone())
        .map_err(StartError::HostPorts)?
        .reserving(config.own_ports());
    runtime_config.backup_s3 = config.backup_s3().map_err(StartError::BackupRepository)?;
    Ok(Arc::new(DockerRuntime::new(docker.clone(), runtime_config)))
}

/// Adds the rule that drops traffic from tenants' networks to the host, as `host_firewall`
/// says (see `iaas_docker::firewall`).
async fn isolate_host(config: &Config) -> Result<(), StartError> {
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
fn cluster_cache(config: &Config) -> Result<(ClusterCache, bool), StartError> {
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
    let mut settings = ClusterCacheConfig::with_prefix(config.cache_prefix.clone());
    // Replication lag is read to watch it move (the dashboard charts it every 5 s): a view
    // minutes old would draw a flat line. The cache still spares the primary more than one
    // query per cluster per TTL, whoever asks.
    settings.replication_ttl = REPLICATION_TTL;
    let cache = ClusterCache::new(store, settings);
    Ok((cache, shared))
}

/// How long a cluster's replication view is served from the cache.
pub(crate) const REPLICATION_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Creates the events topic unless it exists; a failure is logged and left to the broker's
/// own topic creation.
pub(crate) async fn ensure_events_topic(kafka: &KafkaConfig) {
    if let Err(error) = ensure_topic(kafka, &kafka.topic, TOPIC_PARTITIONS, 1, TOPIC_TIMEOUT).await
    {
        tracing::warn!(%error, topic = %kafka.topic, "could not create the events topic; relying on the broker creating it");
    }
}

/// How the cache invalidator reads: a shared (Redis) cache is invalidated once per event, by
/// the configured group; a cache in this process must see every event itself, as a standalone
/// consumer (see `iaas_events::kafka::Membership`), so no group per process piles up on the
/// broker.
fn invalidator_reading(config: &Config, shared_cache: bool) -> (String, Membership) {
    if shared_cache {
        (config.cache_invalidation_group.clone(), Membership::Group)
    } else {
        (CACHE_INVALIDATION_GROUP.to_owned(), Membership::Standalone)
    }
}

/// A reader of the platform's events: a group of the in-process bus, or a Kafka consumer
/// group run as a task of its own.
pub(crate) struct Subscriber {
    /// The in-process group's name.
    pub(crate) name: &'static str,
    /// The consumer task's name, for logs.
    pub(crate) task: &'static str,
    /// The Kafka consumer group (a standalone reader's name in logs and metrics).
    pub(crate) group: String,
    /// In the group, or standalone (no group on the broker).
    pub(crate) membership: Membership,
    /// What handles each event.
    pub(crate) handler: Arc<dyn EventHandler>,
}

/// The bus the relay publishes to, with every subscriber attached: without brokers an
/// in-process bus delivering to each subscriber's group; with brokers the events topic
/// (created if missing), one consumer task per subscriber, and the Kafka publisher.
async fn event_bus(
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
            subscriber.membership,
            subscriber.handler,
        )?;
    }
    Ok(Arc::new(KafkaPublisher::new(&kafka)?))
}

/// The live-status subscriber: every process shows live status for its own WebSocket clients,
/// so each reads every event from its start on, as a standalone consumer (no group of its own
/// left on the broker by each start).
fn live_status_subscriber(live: &LiveStatus) -> Subscriber {
    Subscriber {
        name: "live-status",
        task: "live-status consumer",
        group: "live-status".to_owned(),
        membership: Membership::Standalone,
        handler: Arc::new(live.clone()),
    }
}

/// The cache-invalidation subscriber of `invalidator`.
fn invalidator_subscriber(
    config: &Config,
    shared_cache: bool,
    invalidator: Arc<dyn EventHandler>,
) -> Subscriber {
    let (group, membership) = invalidator_reading(config, shared_cache);
    Subscriber {
        name: "cluster-cache",
        task: "cache invalidator consumer",
        group,
        membership,
        handler: invalidator,
    }
}

/// The tasks that follow the engine and publish what changed: the outbox relay over
/// `publisher`, the one-off join of old instances to their owner's network, and, while this
/// process holds the engine's lease (see [`engine_lease`]), the Docker watcher (waking the
/// relay on each change it commits) and the supervisor of highly available clusters (which
/// reads the secrets `jobs` keeps). Returns the relay and the supervisor.
fn spawn_engine_tasks(
    config: &Config,
    tasks: &mut TaskList,
    cancel: &CancellationToken,
    repos: &Repositories,
    engine: (&EngineConnection, &Arc<DockerRuntime>),
    publisher: Arc<dyn EventPublisher>,
    jobs: &Jobs,
) -> (Arc<OutboxRelay>, Arc<Supervisor>) {
    let holder = jobs.holder();
    let (docker, runtime) = engine;
    let relay = spawn_relay(tasks, cancel, repos.outbox.clone(), publisher);
    spawn_network_migration(tasks, cancel, runtime.clone(), repos.instances.clone());
    let wake = relay.clone();
    let supervisor = Arc::new(
        Supervisor::new(
            runtime.clone(),
            repos.instances.clone(),
            Arc::new(SystemClock),
            SupervisorConfig::default(),
        )
        .with_on_commit(Arc::new(move || wake.wake()))
        .with_leases(repos.leases.clone())
        .with_kept_secrets(jobs.queue.clone(), jobs.sealer.clone()),
    );
    let lease = LeaseConfig::default();
    let leadership = Leadership::new(
        repos.leases.clone(),
        engine_lease(config),
        holder.to_owned(),
        lease.clone(),
    );
    let mut watching = WatcherConfig::default();
    // A new leader replays what the engine did since the last one may have stopped.
    watching.replay = lease.ttl + lease.renew_every;
    let (instances, wake, supervising) =
        (repos.instances.clone(), relay.clone(), supervisor.clone());
    let docker = docker.clone();
    spawn_task(tasks, cancel, "engine leadership", |token| async move {
        leadership
            .run(token, move |term| {
                let watcher = Watcher::new(
                    Arc::new(DockerWatch::new(docker.clone())),
                    instances.clone(),
                    Arc::new(SystemClock),
                    watching.clone(),
                )
                .with_on_commit({
                    let wake = wake.clone();
                    Arc::new(move || wake.wake())
                });
                let supervisor = supervising.clone();
                async move {
                    tokio::join!(watcher.run(term.clone()), supervisor.run(term));
                }
            })
            .await;
    });
    (relay, supervisor)
}

/// The engine a process uses when `docker_host` is unset.
const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// The name of the lease on the configured engine, `engine:<docker_host>` (the default socket
/// when unset): of the processes of a platform on one engine, the one holding it follows the
/// engine (see `iaas_provisioning::Leadership`).
pub(crate) fn engine_lease(config: &Config) -> String {
    format!("engine:{}", config.docker_host.as_deref().unwrap_or(DEFAULT_DOCKER_HOST))
}

/// Runs `handler` over the consumer group `group` (or standalone, named `group`) until
/// shutdown.
fn spawn_consumer(
    tasks: &mut TaskList,
    cancel: &CancellationToken,
    name: &'static str,
    kafka: &KafkaConfig,
    group: String,
    membership: Membership,
    handler: Arc<dyn EventHandler>,
) -> Result<(), StartError> {
    let consumer = match membership {
        Membership::Standalone => ConsumerConfig::standalone(kafka.clone(), group),
        _ => ConsumerConfig::new(kafka.clone(), group),
    };
    let runner = Arc::new(KafkaConsumerRunner::new(consumer, handler)?);
    spawn_task(tasks, cancel, name, |token| async move {
        runner.run(token).await;
    });
    Ok(())
}

/// Runs `subscriber` as a Kafka consumer group, a task of `tasks`, until shutdown.
pub(crate) fn spawn_subscriber(
    tasks: &mut Tasks,
    kafka: &KafkaConfig,
    subscriber: Subscriber,
) -> Result<(), StartError> {
    spawn_consumer(
        &mut tasks.handles,
        &tasks.cancel,
        subscriber.task,
        kafka,
        subscriber.group,
        subscriber.membership,
        subscriber.handler,
    )
}

/// Starts the outbox relay to `publisher`.
fn spawn_relay(
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

/// How often a background task that needs the engine tries again while it is unavailable.
const ENGINE_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Joins instances made by a release with one network per instance to their owner's network
/// (`DockerRuntime::join_user_networks`), once, in the background: a start does not wait for
/// the engine, and a failure is logged and tried again at the next start.
fn spawn_network_migration(
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

/// The provisioning side of a process: the Docker engine, the container runtime, cluster reads
/// through the cache, live status, and the tasks that follow the engine and publish what
/// changed (the outbox relay over the bus, the Docker watcher). The all-in-one platform and the
/// provisioning service both start it.
pub(crate) struct Provisioning {
    /// The Docker engine (connected on first use).
    pub(crate) docker: EngineConnection,
    /// The container runtime.
    pub(crate) runtime: Arc<DockerRuntime>,
    /// Cluster reads through the cache.
    pub(crate) clusters: Arc<dyn ClusterSource>,
    /// The cluster cache behind `clusters`.
    pub(crate) cache: ClusterCache,
    /// Live status fan-out (fed from the bus).
    pub(crate) live: LiveStatus,
    /// The outbox relay, woken after each commit.
    pub(crate) relay: Arc<OutboxRelay>,
    /// The supervisor of highly available clusters.
    pub(crate) supervisor: Arc<Supervisor>,
    /// The durable jobs, carried out by this process's worker among others.
    pub(crate) jobs: Jobs,
}

impl Provisioning {
    /// Builds the provisioning side over `repos` and starts its tasks in `tasks`. `others`
    /// read this process's events too (the monitoring indexer of the all-in-one platform).
    ///
    /// The subscribers are the cache invalidator, then `others`, then live status: on the
    /// in-process bus the groups are delivered in that order, so a client told of a change over
    /// its socket finds the change already out of the cache and in the event log.
    pub(crate) async fn start(
        config: &Config,
        repos: &Repositories,
        others: Vec<Subscriber>,
        tasks: &mut Tasks,
    ) -> Result<Self, StartError> {
        // Before any component is built: the cache registers its metric handles when it is.
        crate::telemetry::install();
        let docker = connect_docker(config);
        let runtime = docker_runtime(config, &docker)?;
        isolate_host(config).await?;
        let (cache, shared_cache) = cluster_cache(config)?;
        let invalidator = timed_handler(Arc::new(CacheInvalidator::new(cache.clone())));
        let clusters: Arc<dyn ClusterSource> =
            Arc::new(CachedClusterSource::new(cache.clone(), runtime.clone()));
        let live = LiveStatus::default();
        let mut subscribers = vec![invalidator_subscriber(config, shared_cache, invalidator)];
        subscribers.extend(others);
        subscribers.push(live_status_subscriber(&live));
        let publisher = event_bus(config, &mut tasks.handles, &tasks.cancel, subscribers).await?;
        let jobs = jobs(config, repos)?;
        tasks.jobs = Some(jobs.clone());
        let (relay, supervisor) = spawn_engine_tasks(
            config,
            &mut tasks.handles,
            &tasks.cancel,
            repos,
            (&docker, &runtime),
            publisher,
            &jobs,
        );
        let provisioning = Self { docker, runtime, clusters, cache, live, relay, supervisor, jobs };
        let worker = provisioning.api(repos, config.quota(), tasks);
        spawn_task(&mut tasks.handles, &tasks.cancel, "job worker", |token| {
            iaas_provisioning::run_jobs(worker, token)
        });
        Ok(provisioning)
    }

    /// The provisioning API over these parts and `repos`, with `quota` for users without an
    /// override; the relay is woken after each commit, and the work of accepted requests is
    /// tracked by `tasks`.
    pub(crate) fn api(
        &self,
        repos: &Repositories,
        quota: iaas_core::Quota,
        tasks: &Tasks,
    ) -> iaas_provisioning::ProvisioningApi {
        let relay = self.relay.clone();
        iaas_provisioning::ProvisioningApi {
            repo: repos.instances.clone(),
            runtime: self.runtime.clone(),
            clusters: self.clusters.clone(),
            clock: Arc::new(SystemClock),
            on_commit: Arc::new(move || relay.wake()),
            users: repos.users.clone(),
            quotas: repos.quotas.clone(),
            default_quota: quota,
            background: tasks.background.clone(),
            supervisor: Some(self.supervisor.clone()),
            jobs: self.jobs.clone(),
        }
    }
}

/// The monitoring indexer as a subscriber: every event becomes a searchable entry of `index`,
/// read in the configured `monitoring_group` (one indexer for the whole platform).
pub(crate) fn monitoring_subscriber(config: &Config, index: &Arc<dyn LogIndex>) -> Subscriber {
    Subscriber {
        name: "monitoring",
        task: "monitoring consumer",
        group: config.monitoring_group.clone(),
        membership: Membership::Group,
        handler: timed_handler(Arc::new(MonitoringIndexer::new(index.clone()))),
    }
}

/// A checker of access tokens that cannot sign (see `verify_keys`); with `auth_jwks`, a task
/// of `tasks` keeps its keys current.
pub(crate) async fn token_verifier(
    config: &Config,
    tasks: &mut Tasks,
) -> Result<TokenIssuer, StartError> {
    let (issuer, jwks) = crate::verify_keys::token_verifier(config).await?;
    spawn_jwks_refresh(tasks, jwks, &issuer);
    Ok(issuer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kafka_settings_reach_the_producer() {
        let config = Config::from_lookup(|key| match key {
            "IAAS_KAFKA_IDEMPOTENCE" => Some("off".to_owned()),
            "IAAS_KAFKA_TOPIC" => Some("platform-a.events".to_owned()),
            _ => None,
        })
        .unwrap();
        let kafka = kafka_config(&config, "k1:9092");
        assert!(!kafka.idempotent);
        assert_eq!(kafka.topic, "platform-a.events");
        assert_eq!(kafka.brokers, "k1:9092");
    }

    #[test]
    fn a_cache_in_this_process_reads_every_event_standalone_and_a_shared_one_in_its_group() {
        let config = Config::default();
        assert_eq!(
            invalidator_reading(&config, true),
            (CACHE_INVALIDATION_GROUP.to_owned(), Membership::Group)
        );
        assert_eq!(invalidator_reading(&config, false).1, Membership::Standalone);
    }
}
