//! The auth, provisioning and monitoring services one per process, from the same configuration
//! and the same parts (`parts`) as the platform: [`ProvisioningService`] (store, Docker runtime,
//! watcher, outbox relay, cluster cache, Kafka publisher when configured) and
//! [`MonitoringService`] (Kafka consumer group `monitoring_group`, by default
//! `monitoring-consumer-group` -> indexer -> log index, and the search API), plus
//! [`auth_router`] for the auth service. `examples/*-service` are thin mains over these.
//!
//! Every service checks access tokens locally, so all of them must read the same auth key file
//! (`auth_key_file`, by default in the shared data directory) as the auth service that signs
//! them, or the auth service's public keys (`auth_jwks`).
//!
//! Each router is behind the platform's HTTP layers ([`instrumented`]: `GET /metrics`,
//! request ids, and the configured body limit and timeout).

use std::sync::Arc;

use axum::Router;
use iaas_auth::{AuthService, TokenIssuer};
use iaas_core::ClusterSource;
use iaas_core::ContainerRuntime;
use iaas_docker::EngineConnection;
use iaas_events::kafka::KafkaConfig;
use iaas_events::monitoring::LogIndex;
use iaas_provisioning::LiveStatus;

use crate::config::{Config, KAFKA_BROKERS_VAR};
use crate::error::StartError;
use crate::health::{Check, Readiness};
use crate::http_layers::{HttpLimits, instrumented, not_found};
use crate::log_index::open_log_index;
use crate::parts::{self, Provisioning, Repositories, Tasks};

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
    instrumented(routes, HttpLimits::from_config(config))
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
    provisioning: Provisioning,
    tasks: Tasks,
}

impl std::fmt::Debug for ProvisioningService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisioningService")
            .field("relay", &self.provisioning.relay)
            .finish_non_exhaustive()
    }
}

impl ProvisioningService {
    /// Opens the store and starts the relay, the Docker watcher and, with Kafka, the live
    /// status and cache invalidation consumers. Without Kafka the events travel on an
    /// in-process bus to this process's cache and live status only.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        let repos = parts::open_store(config).await?;
        let mut tasks = Tasks::default();
        let issuer = parts::token_verifier(config, &mut tasks).await?;
        let sessions = parts::session_liveness(config).await?;
        let provisioning = Provisioning::start(config, &repos, Vec::new(), &mut tasks).await?;
        Ok(Self {
            repos,
            docker: provisioning.docker.clone(),
            live: provisioning.live.clone(),
            runtime: provisioning.runtime.clone(),
            clusters: provisioning.clusters.clone(),
            issuer,
            sessions,
            limits: HttpLimits::from_config(config),
            trusted_proxies: config.trusted_proxies.clone(),
            quota: config.quota(),
            provisioning,
            tasks,
        })
    }

    /// `/v1/instances*` and `/v1/ws` behind the access-token check, `/healthz`, and a
    /// `/readyz` that checks the store and the Docker engine.
    pub fn router(&self) -> Router {
        let api = self.provisioning.api(&self.repos, self.quota, &self.tasks);
        let mut live = iaas_provisioning::LiveOptions::default()
            .with_shutdown(crate::health::draining())
            .with_limits(self.limits.live);
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
        instrumented(routes, self.limits)
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
        let kafka = parts::kafka_config(config, brokers);
        let mut tasks = Tasks::default();
        let issuer = parts::token_verifier(config, &mut tasks).await?;
        let index = open_log_index(config).await?;
        parts::ensure_events_topic(&kafka).await;
        parts::spawn_subscriber(&mut tasks, &kafka, parts::monitoring_subscriber(config, &index))?;
        Ok(Self {
            index,
            issuer,
            limits: HttpLimits::from_config(config),
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
        instrumented(routes, self.limits)
    }

    /// Stops the consumer after the event in flight.
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
    }
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
