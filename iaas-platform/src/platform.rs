//! The assembled platform: store, bus, relay, Docker watcher and live status, started as tasks
//! that stop together.

use std::sync::Arc;

use iaas_auth::{
    AuthConfig, AuthService, MemorySessionStore, RedisSessionConfig, RedisSessionStore,
    SessionStore, UserCacheConfig,
};
use iaas_cache::{CacheInvalidator, CachedClusterSource, ClusterCache};
use iaas_core::ContainerRuntime;
use iaas_core::{
    ClusterSource, EventHandler, InstanceRepository, Outbox, QuotaRepository, SystemClock,
    UserRepository,
};
use iaas_docker::EngineConnection;
use iaas_events::OutboxRelay;
use iaas_events::kafka::KafkaConfig;
use iaas_events::monitoring::{LogIndex, MonitoringIndexer};
use iaas_provisioning::LiveStatus;
use iaas_store::{PostgresConfig, PostgresStore, SqliteConfig, SqliteStore};

use crate::config::{Config, Database};
use crate::services;

/// The auth service on the configured session store (Redis or in-process), signing with the
/// key file's key; every service of one platform that checks tokens must build it from the same
/// key file.
pub async fn auth_service(
    config: &Config,
    users: Arc<dyn UserRepository>,
) -> Result<AuthService, StartError> {
    let (keys, refresh_secret) = crate::services::signing_keys(config)?;
    let sessions: Arc<dyn SessionStore> = match &config.redis_url {
        None => Arc::new(MemorySessionStore::new()),
        Some(url) => Arc::new(
            RedisSessionStore::connect(RedisSessionConfig::new(url.clone()))
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

/// Why the platform could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}")]
    DataDir {
        /// The directory.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] iaas_store::StoreError),
    /// The bus could not be set up.
    #[error(transparent)]
    Events(#[from] iaas_events::EventsError),
    /// The auth key file could not be read or created.
    #[error(transparent)]
    AuthKeys(#[from] crate::auth_keys::KeyFileError),
    /// The auth service could not be configured.
    #[error("cannot configure authentication")]
    Auth(#[source] iaas_auth::AuthError),
    /// The event log index could not be opened.
    #[error("cannot open the event log index")]
    LogIndex(#[source] iaas_events::monitoring::IndexError),
    /// The cache backend could not be configured.
    #[error("cannot configure the cluster cache")]
    Cache(#[source] iaas_cache::CacheError),
    /// The host-port range cannot be used (a configuration built in code, not loaded).
    #[error("cannot use host_port_range")]
    HostPorts(#[source] iaas_core::Error),
    /// `host_firewall = on` and the host firewall rule could not be added.
    #[error("cannot keep tenants' containers away from the host (host_firewall = on)")]
    HostFirewall(#[source] iaas_docker::firewall::FirewallError),
    /// A service cannot run without a setting that is optional elsewhere.
    #[error("{service} needs {key} ({env}) to be set: {why}")]
    Unconfigured {
        /// The service.
        service: &'static str,
        /// The file key.
        key: &'static str,
        /// The environment variable.
        env: &'static str,
        /// Why it is needed.
        why: &'static str,
    },
}

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
}

impl Repositories {
    fn of<S: UserRepository + InstanceRepository + Outbox + QuotaRepository + 'static>(
        store: S,
    ) -> Self {
        let store = Arc::new(store);
        Self {
            users: store.clone(),
            instances: store.clone(),
            outbox: store.clone(),
            quotas: store,
        }
    }
}

/// The running platform.
pub struct Platform {
    /// The store.
    pub repos: Repositories,
    /// The Docker engine (connected on first use: the platform starts without one).
    pub docker: EngineConnection,
    /// Live status fan-out (fed from the bus).
    pub live: LiveStatus,
    /// Accounts, tokens and sessions.
    pub auth: AuthService,
    /// The container runtime.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// Cluster reads through the cache.
    pub clusters: Arc<dyn ClusterSource>,
    /// The cluster cache behind `clusters` (Redis when configured, else in-process), for
    /// inspection: what is cached for an instance right now.
    pub cache: ClusterCache,
    /// The searchable event log.
    pub events_index: Arc<dyn LogIndex>,
    /// Clients of the optional backends (Redis, Kafka) for readiness and polled gauges.
    pub(crate) probes: crate::health::Probes,
    quota: iaas_core::Quota,
    relay: Arc<OutboxRelay>,
    tasks: services::Tasks,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform").field("relay", &self.relay).finish_non_exhaustive()
    }
}

/// Opens the configured store: the SQLite file `iaas.db` in the data directory (created if
/// needed), or PostgreSQL. Migrations run on open.
pub async fn open_store(config: &Config) -> Result<Repositories, StartError> {
    Ok(match &config.database {
        Database::Sqlite(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| StartError::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
            Repositories::of(SqliteStore::open(&SqliteConfig::new(dir.join("iaas.db"))).await?)
        }
        Database::Postgres(url) => {
            Repositories::of(PostgresStore::connect(&PostgresConfig::new(url.clone())).await?)
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

impl Platform {
    /// Opens the store, connects the bus and starts the background tasks.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        let repos = open_store(config).await?;
        let docker = connect_docker(config);
        let auth = auth_service(config, repos.users.clone()).await?;
        let live = LiveStatus::default();
        let mut tasks = services::Tasks::default();
        // Before any component is built: the cache registers its metric handles when it is.
        crate::telemetry::install();
        let probes = crate::health::Probes::new(config);
        tasks.handles.push((
            "metrics refresh",
            crate::telemetry::spawn_refresh(probes.redis(), tasks.cancel.child_token()),
        ));

        let engine = services::docker_runtime(config, &docker)?;
        services::isolate_host(config).await?;
        let (cache, shared_cache) = services::cluster_cache(config)?;
        let invalidator: Arc<dyn EventHandler> =
            crate::telemetry::timed_handler(Arc::new(CacheInvalidator::new(cache.clone())));
        // Monitoring: every event becomes a searchable log entry (embedded index or
        // Elasticsearch).
        let events_index = crate::log_index::open_log_index(config).await?;
        let indexer: Arc<dyn EventHandler> =
            crate::telemetry::timed_handler(Arc::new(MonitoringIndexer::new(events_index.clone())));
        let clusters: Arc<dyn ClusterSource> =
            Arc::new(CachedClusterSource::new(cache.clone(), engine.clone()));

        // The monitoring group: one indexer for the whole platform.
        let monitoring = services::Subscriber {
            name: "monitoring",
            task: "monitoring consumer",
            group: config.monitoring_group.clone(),
            handler: indexer,
        };
        let subscribers = vec![
            services::invalidator_subscriber(config, shared_cache, invalidator),
            monitoring,
            services::live_status_subscriber(&live),
        ];
        let publisher =
            services::event_bus(config, &mut tasks.handles, &tasks.cancel, subscribers).await?;
        let relay = services::spawn_engine_tasks(
            &mut tasks.handles,
            &tasks.cancel,
            &repos,
            &docker,
            &engine,
            publisher,
        );

        Ok(Self {
            repos,
            docker,
            live,
            auth,
            runtime: engine,
            clusters,
            cache,
            events_index,
            probes,
            quota: config.quota,
            relay,
            tasks,
        })
    }

    /// Wakes the relay (after a write that appended events).
    pub fn wake_relay(&self) {
        self.relay.wake();
    }

    /// The provisioning API's collaborators.
    pub fn provisioning_api(&self) -> iaas_provisioning::ProvisioningApi {
        services::provisioning_api(
            &self.repos,
            self.runtime.clone(),
            self.clusters.clone(),
            &self.relay,
            self.quota,
            &self.tasks.background,
        )
    }

    /// Waits for the work of accepted requests (bounded), then stops every background task,
    /// letting each finish its work in flight.
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
    }
}
