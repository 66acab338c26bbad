//! The event watcher and reconciler: keeps instance statuses true to the engine.
//!
//! The watcher follows the engine's event stream for managed containers
//! ([`RuntimeWatch::events`], each event already read as the status it implies) and applies
//! each to its instance with its event in one transaction ([`InstanceRepository::update_status`], which also appends the outbox
//! entry). Events for containers the platform does not know are counted and ignored.
//!
//! Nothing is lost across disconnections: when the stream ends or fails, the watcher reconnects
//! with backoff and asks the engine to replay from the last event it saw; and after
//! every (re)connect, and periodically, a reconciliation pass compares every active instance
//! with its containers and repairs each drift with a synthetic event (`metadata.reconciled =
//! "true"`), which covers what happened while the engine itself was restarting.
//!
//! What an observation means for an instance is the rule of [`crate::lifecycle`], shared with
//! the API's actions: while the user's stop, start, restart or delete is under way, the
//! engine's events are that action's outcome, never a failure; a crash, an OOM kill or a
//! `docker kill` nobody on the platform asked for is `failed`. While an instance is
//! `provisioning`, only the start of its last node counts (it becomes `running`). The
//! reconciler also finishes deletes: the containers of a `deleting` instance are removed, and
//! it becomes `deleted` once none is left, even when the process that took the delete died.
//!
//! For an instance of several containers (a PostgreSQL primary with replicas) the primary
//! decides the status, in the event path and in the reconciliation pass alike; see
//! [`role_decides_status`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use iaas_core::runtime::{
    ManagedContainer, RuntimeError, RuntimeEvent, RuntimeWatch, exited_by_stop_signal,
    last_node_role, role_decides_status, role_or_primary,
};
use iaas_core::{
    Clock, Error, Instance, InstanceId, InstanceRepository, InstanceStatus, PrimaryState, UserId,
};
use tokio_util::sync::CancellationToken;

use crate::lifecycle::{self, Seen};

/// Watcher settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WatcherConfig {
    /// First delay before reconnecting after the stream failed (doubles up to `max_backoff`).
    pub initial_backoff: Duration,
    /// Longest delay between reconnection attempts.
    pub max_backoff: Duration,
    /// How often a reconciliation pass runs while connected (default 60 s).
    pub reconcile_interval: Duration,
    /// Longer than any stop, start or restart takes (default 5 min, far above the engine's
    /// stop timeout): an instance still `stopping`, `starting` or `restarting` after it was
    /// abandoned by the process carrying it out, and a reconciliation pass records what the
    /// engine shows.
    pub action_deadline: Duration,
    /// How far back the first connection replays the engine's events (default 1 s, so a change
    /// racing the first connection is seen). A watcher that takes over from another process
    /// replays the hand-over (see [`crate::Leadership`]); applying an event twice is harmless,
    /// and an event older than its instance's last change is skipped.
    pub replay: Duration,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            reconcile_interval: Duration::from_secs(60),
            action_deadline: Duration::from_secs(300),
            replay: Duration::from_secs(1),
        }
    }
}

/// What a watcher did, for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WatcherStats {
    /// Engine events that changed an instance's status.
    pub applied: u64,
    /// Engine events about containers of no known instance.
    pub ignored_unknown: u64,
    /// Status events about replicas, which do not decide their instance's status.
    pub replica_events: u64,
    /// Status events left to a provisioning still in progress (see the module docs).
    pub while_provisioning: u64,
    /// Status events older than the instance's last recorded change (late arrivals).
    pub stale: u64,
    /// Drifts repaired by reconciliation.
    pub reconciled: u64,
    /// Containers of deleted instances that reconciliation removed (a removal that failed or
    /// raced the delete).
    pub swept: u64,
    /// Owner networks reconciliation removed: no container of the owner's left and no
    /// instance of theirs in the store that is not deleted.
    pub networks_released: u64,
    /// Times the event stream was (re)connected.
    pub connections: u64,
}

/// Follows the engine and updates instances.
pub struct Watcher {
    runtime: Arc<dyn RuntimeWatch>,
    repo: Arc<dyn InstanceRepository>,
    clock: Arc<dyn Clock>,
    config: WatcherConfig,
    stats: std::sync::Mutex<WatcherStats>,
    /// Called after every committed status change (the platform wakes its outbox relay).
    on_commit: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Watcher {
    /// A watcher of the engine behind `runtime` (until the engine answers, each attempt fails
    /// and is retried with the reconnection backoff); nothing runs until [`Watcher::run`].
    pub fn new(
        runtime: Arc<dyn RuntimeWatch>,
        repo: Arc<dyn InstanceRepository>,
        clock: Arc<dyn Clock>,
        config: WatcherConfig,
    ) -> Self {
        Self {
            runtime,
            repo,
            clock,
            config,
            stats: std::sync::Mutex::default(),
            on_commit: Arc::new(|| {}),
        }
    }

    /// Calls `hook` after every status change the watcher commits, as
    /// [`ProvisioningApi::on_commit`](crate::ProvisioningApi) does for the API's writes. Pass the
    /// outbox relay's wake-up here: without it a change observed on the engine waits for the
    /// relay's next idle poll (up to 100 ms by default) before it reaches the bus.
    #[must_use]
    pub fn with_on_commit(mut self, hook: Arc<dyn Fn() + Send + Sync>) -> Self {
        self.on_commit = hook;
        self
    }

    /// Counters so far.
    pub fn stats(&self) -> WatcherStats {
        *self.stats.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn count(&self, update: impl FnOnce(&mut WatcherStats)) {
        update(&mut self.stats.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    }

    /// Follows the engine until `cancel` fires.
    pub async fn run(&self, cancel: CancellationToken) {
        // Replay from before the start (see `WatcherConfig::replay`).
        let replay = i64::try_from(self.config.replay.as_secs().max(1)).unwrap_or(i64::MAX);
        let mut since = self.clock.now().timestamp().saturating_sub(replay);
        let mut failures: u32 = 0;
        while !cancel.is_cancelled() {
            match self.follow(&mut since, &cancel).await {
                Ok(()) => failures = 0,
                Err(error) => {
                    let delay = self
                        .config
                        .initial_backoff
                        .saturating_mul(2u32.saturating_pow(failures.min(16)));
                    let delay = delay.min(self.config.max_backoff);
                    failures = failures.saturating_add(1);
                    tracing::warn!(%error, attempt = failures, retry_in_ms = delay.as_millis() as u64, "engine event stream lost; reconnecting");
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        tracing::info!(stats = ?self.stats(), "watcher stopped");
    }

    /// One connection: reconcile, then apply events until the stream ends, fails or `cancel`.
    async fn follow(
        &self,
        since: &mut i64,
        cancel: &CancellationToken,
    ) -> Result<(), RuntimeError> {
        let mut events = self.runtime.events(*since).await?;
        self.count(|s| s.connections += 1);
        // Reconciling after subscribing: what changes during the pass arrives as events.
        self.reconcile().await?;
        let mut tick = tokio::time::interval(self.config.reconcile_interval);
        tick.reset();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    self.reconcile().await?;
                }
                next = events.next() => match next {
                    None => return Err(RuntimeError::Engine { operation: "following events".into(), message: "the event stream ended".into() }),
                    Some(Err(err)) => return Err(err),
                    Some(Ok(event)) => {
                        if let Some(cursor) = event.cursor {
                            *since = (*since).max(cursor);
                        }
                        let action = event.action.clone();
                        if let Err(error) = self.apply(event).await {
                            if error.is_transient() {
                                // The store is down: reconnect from `since` and replay, so this
                                // event is applied later rather than lost.
                                *since -= 1;
                                return Err(RuntimeError::Engine { operation: "applying an event".into(), message: error.to_string() });
                            }
                            tracing::warn!(%error, action, "engine event not applied");
                        }
                    }
                },
            }
        }
    }

    async fn apply(&self, event: RuntimeEvent) -> Result<(), Error> {
        let Some(status) = event.status else { return Ok(()) };
        let (action, role, at) = (event.action.as_str(), event.role.as_str(), event.at);
        let Some(instance_id) = event.instance else {
            self.count(|s| s.ignored_unknown += 1);
            return Ok(());
        };
        let Some(instance) = self.repo.get_instance(instance_id).await? else {
            tracing::debug!(%instance_id, action, "event for a container of no known instance");
            self.count(|s| s.ignored_unknown += 1);
            return Ok(());
        };
        // Events arrive late, and every change is recorded at the time it was seen (an
        // event's own time, an inspection's start, the moment the user asked): an event older
        // than the instance's last change is news no more. So the `start` event of a start
        // already recorded from its task's inspection cannot end the restart asked for next,
        // nor the `die` of a restart's own stop undo the `restarted` recorded before it arrived.
        if at.is_some_and(|at| at < instance.updated_at) {
            tracing::debug!(%instance_id, action, status = %instance.status, "event older than the instance's last change");
            self.count(|s| s.stale += 1);
            return Ok(());
        }
        if instance.status == InstanceStatus::Provisioning {
            // Until its last node starts the instance belongs to its provisioning: a failure
            // there rolls back (stopping and removing what was created) and records `failed`
            // with the reason itself, which these events would otherwise bury under
            // `stopped`, `failed` or `deleted`.
            if status != InstanceStatus::Running
                || role_or_primary(role) != last_node_role(&instance.spec)
            {
                tracing::debug!(%instance_id, action, role, "event while provisioning; the provisioning reports the outcome");
                self.count(|s| s.while_provisioning += 1);
                return Ok(());
            }
        } else if !role_decides_status(role) {
            self.count(|s| s.replica_events += 1);
            return Ok(());
        }
        let mut observed = PrimaryState::gone();
        observed.container_id = event.container_id.clone();
        observed.name = event.name.clone();
        observed.status = status;
        observed.exit_code = event.exit_code;
        observed.started_at = at
            .filter(|_| status == InstanceStatus::Running)
            .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
        observed.observed_at = at;
        if self.record(&instance, &observed, Seen::EngineEvent, Some(action)).await? {
            self.count(|s| s.applied += 1);
        }
        Ok(())
    }

    /// [`lifecycle::record`], waking the relay after a change.
    async fn record(
        &self,
        instance: &Instance,
        observed: &PrimaryState,
        seen: Seen,
        docker_action: Option<&str>,
    ) -> Result<bool, Error> {
        let changed = lifecycle::record(
            self.repo.as_ref(),
            self.clock.as_ref(),
            instance,
            observed,
            seen,
            docker_action,
        )
        .await?;
        if changed {
            (self.on_commit)();
        }
        Ok(changed)
    }

    /// Compares every active instance with its containers and repairs each drift.
    pub async fn reconcile(&self) -> Result<u64, RuntimeError> {
        let containers = self.runtime.list_managed().await?;
        let mut by_instance: HashMap<InstanceId, Vec<ManagedContainer>> = HashMap::new();
        for container in containers {
            by_instance.entry(container.instance).or_default().push(container);
        }
        let instances = self.repo.list_active_instances().await.map_err(|err| {
            RuntimeError::Engine { operation: "reconciling".into(), message: err.to_string() }
        })?;
        self.sweep_deleted(&instances, &by_instance).await?;
        // Owners with a container of an instance not deleted in this pass's listing keep their
        // network without the engine being asked (the swept ones' owners are asked).
        let busy: HashSet<UserId> = instances
            .iter()
            .filter(|instance| by_instance.contains_key(&instance.id))
            .map(|instance| instance.owner)
            .collect();
        let mut repaired = 0;
        for instance in instances {
            // Provisioning is in progress: its containers may not exist yet.
            if instance.status == InstanceStatus::Provisioning {
                continue;
            }
            let containers = by_instance.get(&instance.id).map_or(&[][..], Vec::as_slice);
            if instance.status == InstanceStatus::Deleting && !containers.is_empty() {
                // A delete under way, or one whose process died: removing is idempotent, and
                // the removals' events (or the next pass) make it deleted.
                self.remove_containers(instance.id, containers).await?;
                continue;
            }
            // Recorded running, and the listing shows the primary running: an inspection could
            // only confirm it (running on running changes nothing), so the engine is not asked.
            // In a steady fleet this is every instance: a pass costs two listings, not one
            // inspection per instance.
            let primary = containers.iter().find(|container| role_decides_status(&container.role));
            if instance.status == InstanceStatus::Running && primary.is_some_and(|c| c.running) {
                continue;
            }
            let observed = self.runtime.observe(containers).await?;
            // The state cannot tell a bare `docker kill` (which the event path saw end failed)
            // from a stop: both leave exit 137 or 143. What the watcher saw happen stands.
            if instance.status == InstanceStatus::Failed
                && observed.status == InstanceStatus::Stopped
                && observed.exit_code.is_some_and(exited_by_stop_signal)
            {
                continue;
            }
            let abandoned = instance.status.is_transitional()
                && chrono::Duration::from_std(self.config.action_deadline)
                    .is_ok_and(|deadline| self.clock.now() - instance.updated_at > deadline);
            let seen = if abandoned { Seen::Abandoned } else { Seen::Reconciliation };
            let changed = self.record(&instance, &observed, seen, None).await.map_err(|err| {
                RuntimeError::Engine { operation: "reconciling".into(), message: err.to_string() }
            })?;
            if changed {
                repaired += 1;
            }
        }
        self.count(|s| s.reconciled += repaired);
        self.release_networks(&busy).await;
        Ok(repaired)
    }

    /// Removes the containers of instances this platform knows as deleted. Containers of
    /// instances it does not know at all are left alone: another platform may share the engine.
    async fn sweep_deleted(
        &self,
        active: &[Instance],
        by_instance: &HashMap<InstanceId, Vec<ManagedContainer>>,
    ) -> Result<(), RuntimeError> {
        let store_error = |err: Error| RuntimeError::Engine {
            operation: "reconciling".into(),
            message: err.to_string(),
        };
        let active: HashSet<InstanceId> = active.iter().map(|instance| instance.id).collect();
        for (id, containers) in by_instance {
            if active.contains(id) {
                continue;
            }
            let known = self.repo.get_instance(*id).await.map_err(store_error)?;
            if known.is_none_or(|instance| instance.status != InstanceStatus::Deleted) {
                continue;
            }
            self.remove_containers(*id, containers).await?;
        }
        Ok(())
    }

    /// Removes the owner networks no container uses any more whose owner this platform knows
    /// (another platform may share the engine) and has no instance of that is not deleted,
    /// read now: a network of an owner whose new instance is being made stays. Owners in
    /// `busy` (a container of theirs was listed) are not asked about. A failure is logged and
    /// the other networks still tried; the next pass tries it again.
    async fn release_networks(&self, busy: &HashSet<UserId>) {
        let unused = match self.runtime.unused_networks(busy).await {
            Ok(unused) => unused,
            Err(err) => {
                tracing::warn!(error = %err, "listing unused owner networks");
                return;
            }
        };
        for (owner, network) in unused {
            let instances = match self.repo.list_instances_by_owner(owner).await {
                Ok(instances) => instances,
                Err(err) => {
                    tracing::warn!(%owner, error = %err, "reading an owner's instances before removing their network");
                    continue;
                }
            };
            let all_deleted = !instances.is_empty()
                && instances.iter().all(|instance| instance.status == InstanceStatus::Deleted);
            if !all_deleted {
                continue;
            }
            match self.runtime.remove_network(&network).await {
                Ok(true) => {
                    tracing::info!(%owner, network, "removed an owner network no container uses");
                    self.count(|s| s.networks_released += 1);
                }
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(%owner, network, error = %err, "removing an unused owner network")
                }
            }
        }
    }

    /// Removes `containers` (of the deleted or deleting instance `id`), force: a removal
    /// already done or under way is no error, and one that fails is logged and retried on the
    /// next pass.
    async fn remove_containers(
        &self,
        id: InstanceId,
        containers: &[ManagedContainer],
    ) -> Result<(), RuntimeError> {
        for container in containers {
            let container_id = container.id.as_str();
            match self.runtime.remove_container(container_id).await {
                Ok(true) => {
                    tracing::warn!(instance_id = %id, container_id, "removed a container of a deleted instance");
                    self.count(|s| s.swept += 1);
                }
                Ok(false) => {}
                // No engine to ask: the pass ends here, as any other call to it would.
                Err(err @ RuntimeError::NoEngine { .. }) => return Err(err),
                Err(err) => {
                    tracing::warn!(instance_id = %id, container_id, error = %err, "removing a container of a deleted instance")
                }
            }
        }
        Ok(())
    }
}
