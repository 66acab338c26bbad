//! The assembled platform: store, bus, relay, Docker watcher and live status, started as tasks
//! that stop together.

use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use iaas_auth::{
    AuthConfig, AuthService, KeySet, MemorySessionStore, RedisSessionConfig, RedisSessionStore,
    SessionStore, SigningKey,
};
use iaas_cache::{
    CacheInvalidator, CacheStore, CachedClusterSource, ClusterCache, ClusterCacheConfig,
    MemoryStore, RedisStore, RedisStoreConfig,
};
use iaas_core::{
    ClusterSource, EventHandler, EventPublisher, InstanceRepository, Outbox, SystemClock,
    UserRepository,
};
use iaas_docker::{
    ContainerRuntime, DockerRuntime, DockerRuntimeConfig, DockerWatcher, ImageCatalog, LiveStatus,
    WatcherConfig,
};
use iaas_events::kafka::{
    ConsumerConfig, KafkaConfig, KafkaConsumerRunner, KafkaPublisher, ensure_topic,
};
use iaas_events::monitoring::{LogIndex, MonitoringIndexer, SqliteIndexConfig, SqliteLogIndex};
use iaas_events::{InProcessBus, OutboxRelay, RelayConfig};
use iaas_store::{PostgresConfig, PostgresStore, SqliteConfig, SqliteStore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Database};

/// The auth service on the configured session store, signing with the key file's key.
async fn start_auth(
    config: &Config,
    users: Arc<dyn UserRepository>,
) -> Result<AuthService, StartError> {
    let keys = crate::auth_keys::load_or_create(&config.auth_key_file)?;
    let sessions: Arc<dyn SessionStore> = match &config.redis_url {
        None => Arc::new(MemorySessionStore::new()),
        Some(url) => Arc::new(
            RedisSessionStore::connect(RedisSessionConfig::new(url.clone()))
                .await
                .map_err(StartError::Auth)?,
        ),
    };
    let signing = SigningKey::ed25519_from_seed("platform-1", &keys.signing_seed)
        .map_err(StartError::Auth)?;
    let mut auth_config = AuthConfig::default();
    auth_config.default_scopes = vec![
        iaas_docker::SCOPE_READ.to_owned(),
        iaas_docker::SCOPE_WRITE.to_owned(),
        "events:read".to_owned(),
    ];
    AuthService::new(
        users,
        sessions,
        KeySet::new(signing),
        &keys.refresh_secret,
        Arc::new(SystemClock),
        auth_config,
    )
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
    /// No Docker client could be built from the environment.
    #[error("cannot configure the Docker client (DOCKER_HOST)")]
    Docker(#[source] bollard::errors::Error),
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
}

impl Repositories {
    fn of<S: UserRepository + InstanceRepository + Outbox + 'static>(store: S) -> Self {
        let store = Arc::new(store);
        Self { users: store.clone(), instances: store.clone(), outbox: store }
    }
}

/// The running platform.
pub struct Platform {
    /// The store.
    pub repos: Repositories,
    /// The Docker engine client.
    pub docker: Docker,
    /// Live status fan-out (fed from the bus).
    pub live: LiveStatus,
    /// Accounts, tokens and sessions.
    pub auth: AuthService,
    /// The container runtime.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// Cluster reads through the cache.
    pub clusters: Arc<dyn ClusterSource>,
    /// The searchable event log.
    pub events_index: Arc<dyn LogIndex>,
    relay: Arc<OutboxRelay>,
    cancel: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform").field("relay", &self.relay).finish_non_exhaustive()
    }
}

impl Platform {
    /// Opens the store, connects the bus and starts the background tasks.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        let repos = match &config.database {
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
        };
        let docker = Docker::connect_with_defaults().map_err(StartError::Docker)?;
        let auth = start_auth(config, repos.users.clone()).await?;
        let live = LiveStatus::default();
        let cancel = CancellationToken::new();
        let mut tasks = Vec::new();

        let mut runtime_config = DockerRuntimeConfig::default();
        runtime_config.catalog = ImageCatalog::from_lookup(|key| std::env::var(key).ok());
        let engine = Arc::new(DockerRuntime::new(docker.clone(), runtime_config));
        let (cache_store, shared_cache): (Arc<dyn CacheStore>, bool) = match &config.redis_url {
            None => (Arc::new(MemoryStore::default()), false),
            // Lazy: a Redis that is down at start is a degraded cache, not a failed start.
            Some(url) => (
                Arc::new(
                    RedisStore::lazy(&RedisStoreConfig::new(url.clone()))
                        .map_err(StartError::Cache)?,
                ),
                true,
            ),
        };
        let cache = ClusterCache::new(cache_store, ClusterCacheConfig::with_prefix("iaas:"));
        let invalidator: Arc<dyn EventHandler> = Arc::new(CacheInvalidator::new(cache.clone()));
        // Monitoring: every event becomes a searchable log entry in the embedded index.
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let log_index =
            SqliteLogIndex::open(&SqliteIndexConfig::new(config.data_dir.join("events.db")))
                .await
                .map_err(StartError::LogIndex)?;
        let events_index: Arc<dyn LogIndex> = Arc::new(log_index);
        let indexer: Arc<dyn EventHandler> = Arc::new(MonitoringIndexer::new(events_index.clone()));
        let clusters: Arc<dyn ClusterSource> =
            Arc::new(CachedClusterSource::new(cache, engine.clone()));

        let publisher: Arc<dyn EventPublisher> = match &config.kafka_brokers {
            None => {
                let bus = Arc::new(InProcessBus::new());
                bus.subscribe("cluster-cache", invalidator.clone());
                bus.subscribe("monitoring", indexer.clone());
                bus.subscribe("live-status", Arc::new(live.clone()) as Arc<dyn EventHandler>);
                bus
            }
            Some(brokers) => {
                let kafka = KafkaConfig::new(brokers.clone());
                if let Err(error) =
                    ensure_topic(&kafka, &kafka.topic, 3, 1, Duration::from_secs(10)).await
                {
                    tracing::warn!(%error, "could not create the events topic; relying on the broker creating it");
                }
                // Every process shows live status for its own WebSocket clients, so each reads
                // every event: a group of its own.
                let group = format!("live-status-{}", iaas_core::EventId::new_v7());
                let runner = Arc::new(KafkaConsumerRunner::new(
                    ConsumerConfig::new(kafka.clone(), group),
                    Arc::new(live.clone()),
                )?);
                let token = cancel.child_token();
                tasks.push((
                    "live-status consumer",
                    tokio::spawn(async move {
                        runner.run(token).await;
                    }),
                ));
                // A shared (Redis) cache is invalidated once per event, by one group; a cache in
                // this process must see every event itself.
                let group = if shared_cache {
                    "cluster-cache-invalidator".to_owned()
                } else {
                    format!("cluster-cache-invalidator-{}", iaas_core::EventId::new_v7())
                };
                let runner = Arc::new(KafkaConsumerRunner::new(
                    ConsumerConfig::new(kafka.clone(), group),
                    invalidator.clone(),
                )?);
                let token = cancel.child_token();
                tasks.push((
                    "cache invalidator consumer",
                    tokio::spawn(async move {
                        runner.run(token).await;
                    }),
                ));
                // The seed's monitoring group: one indexer for the whole platform.
                let runner = Arc::new(KafkaConsumerRunner::new(
                    ConsumerConfig::new(kafka.clone(), "monitoring-consumer-group"),
                    indexer.clone(),
                )?);
                let token = cancel.child_token();
                tasks.push((
                    "monitoring consumer",
                    tokio::spawn(async move {
                        runner.run(token).await;
                    }),
                ));
                Arc::new(KafkaPublisher::new(&kafka)?)
            }
        };

        let relay_name = format!("relay-{}", iaas_core::EventId::new_v7());
        let relay = Arc::new(OutboxRelay::new(
            repos.outbox.clone(),
            publisher,
            Arc::new(SystemClock),
            RelayConfig::new(relay_name),
        ));
        let (task_relay, token) = (relay.clone(), cancel.child_token());
        tasks.push((
            "outbox relay",
            tokio::spawn(async move {
                task_relay.run(token).await;
            }),
        ));

        let watcher = Arc::new(DockerWatcher::new(
            docker.clone(),
            repos.instances.clone(),
            Arc::new(SystemClock),
            WatcherConfig::default(),
        ));
        let token = cancel.child_token();
        tasks.push((
            "docker watcher",
            tokio::spawn(async move {
                watcher.run(token).await;
            }),
        ));

        Ok(Self {
            repos,
            docker,
            live,
            auth,
            runtime: engine,
            clusters,
            events_index,
            relay,
            cancel,
            tasks,
        })
    }

    /// Wakes the relay (after a write that appended events).
    pub fn wake_relay(&self) {
        self.relay.wake();
    }

    /// The provisioning API's collaborators.
    pub fn provisioning_api(&self) -> iaas_docker::ProvisioningApi {
        let relay = self.relay.clone();
        iaas_docker::ProvisioningApi {
            repo: self.repos.instances.clone(),
            runtime: self.runtime.clone(),
            clusters: self.clusters.clone(),
            clock: Arc::new(SystemClock),
            on_commit: Arc::new(move || relay.wake()),
        }
    }

    /// Stops every background task, letting each finish its work in flight.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for (name, task) in self.tasks {
            match task.await {
                Ok(()) => tracing::info!(task = name, "stopped"),
                Err(error) => tracing::error!(task = name, %error, "task ended abnormally"),
            }
        }
    }
}
