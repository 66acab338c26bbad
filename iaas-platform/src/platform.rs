//! The assembled platform: the auth service, provisioning (store, bus, relay, Docker watcher,
//! live status) and monitoring (the event log and its indexer) in one process, built by
//! `parts` and started as tasks that stop together.

use std::sync::Arc;

use iaas_auth::AuthService;
use iaas_cache::ClusterCache;
use iaas_core::ClusterSource;
use iaas_core::ContainerRuntime;
use iaas_docker::EngineConnection;
use iaas_events::monitoring::LogIndex;
use iaas_provisioning::LiveStatus;

use crate::config::Config;
use crate::error::StartError;
use crate::health::{Check, Probes, Readiness};
use crate::log_index::open_log_index;
use crate::parts::{self, Provisioning, Repositories, Tasks};

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
    probes: Probes,
    quota: iaas_core::Quota,
    provisioning: Provisioning,
    tasks: Tasks,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform").field("relay", &self.provisioning.relay).finish_non_exhaustive()
    }
}

impl Platform {
    /// Opens the store, connects the bus and starts the background tasks.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        // Before any component is built: the cache registers its metric handles when it is.
        crate::telemetry::install();
        let repos = parts::open_store(config).await?;
        let auth = parts::auth_service(config, repos.users.clone()).await?;
        let mut tasks = Tasks::default();
        let probes = Probes::new(config);
        tasks.handles.push((
            "metrics refresh",
            crate::telemetry::spawn_refresh(probes.redis(), tasks.cancel.child_token()),
        ));
        // Monitoring: every event becomes a searchable log entry (embedded index or
        // Elasticsearch), read beside the provisioning side's own subscribers.
        let events_index = open_log_index(config).await?;
        let monitoring = parts::monitoring_subscriber(config, &events_index);
        let provisioning =
            Provisioning::start(config, &repos, vec![monitoring], &mut tasks).await?;
        Ok(Self {
            repos,
            docker: provisioning.docker.clone(),
            live: provisioning.live.clone(),
            auth,
            runtime: provisioning.runtime.clone(),
            clusters: provisioning.clusters.clone(),
            cache: provisioning.cache.clone(),
            events_index,
            probes,
            quota: config.quota(),
            provisioning,
            tasks,
        })
    }

    /// Wakes the relay (after a write that appended events).
    pub fn wake_relay(&self) {
        self.provisioning.relay.wake();
    }

    /// The provisioning API's collaborators.
    pub fn provisioning_api(&self) -> iaas_provisioning::ProvisioningApi {
        self.provisioning.api(&self.repos, self.quota, &self.tasks)
    }

    /// `/readyz` over every backend the platform is configured with: the store, the Docker
    /// engine, the event log index, and Redis and Kafka when configured.
    pub(crate) fn readiness(&self) -> Readiness {
        let mut checks = vec![
            Check::store(self.repos.outbox.clone()),
            Check::docker(self.docker.clone()),
            Check::log_index(self.events_index.clone()),
        ];
        checks.extend(self.probes.checks());
        Readiness::of_checks(checks)
    }

    /// Waits for the work of accepted requests (bounded), then stops every background task,
    /// letting each finish its work in flight.
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
    }
}
