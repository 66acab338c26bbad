//! The supervisor of highly available PostgreSQL clusters: it keeps every running cluster
//! whole and reports what its election did.
//!
//! Patroni, inside the cluster, decides: when the primary is lost it promotes the replica with
//! the most WAL (within `maximum_lag_on_failover`), the others follow it and the endpoint sends
//! clients there. The platform does not take part in that decision; every
//! [`interval`](SupervisorConfig::interval) it looks at each running cluster and
//!
//! 1. brings back what the cluster lost ([`ContainerRuntime::repair`]): a member, the store or
//!    the endpoint that stopped is started, one that was removed is made again (a member with
//!    a fresh volume it fills from the primary; with none left, on the data it left, from the
//!    secrets the platform keeps), and each is recorded as a `started` event with the role in
//!    its metadata. The replica count is the spec's, so this is also how a raised count is
//!    met: a member beyond the count of the last look is recorded as `node_added`. Members
//!    beyond a lowered count are removed with their data ([`ContainerRuntime::retire_surplus`],
//!    the primary handing over first), each recorded as `node_removed`; and a cluster with a
//!    `backup_schedule` gets its base backups (see [`crate::backup_schedule`]);
//! 2. reads the election ([`ContainerRuntime::cluster_members`]) and, when the primary is not
//!    the one of its last look, records a `failover` event with the old and new primary, the
//!    new timeline and the data-loss bound (the promoted member's lag at the last look), unless
//!    the platform asked for that change itself ([`Supervisor::expect_switchover`]; the API
//!    records its own `switchover` event). With several processes, the API that asks may not
//!    be the one supervising: the expectation is then also a short lease in the store
//!    ([`Supervisor::with_leases`]), `switchover:<instance>:<member or any>`, which the
//!    supervising process reads and gives up once it explained a change.
//!
//! None of these events changes the instance's status: a cluster that lost a member and got
//! it back was `running` throughout (see `InstanceRepository::record_event`). Only a lost
//! endpoint changes it, through the watcher: `failed` while the endpoint is gone and a member
//! runs, `running` again once the supervisor made it. A cluster being stopped, started,
//! restarted or deleted is left alone; so is one whose first look finds a primary already
//! elected (no event: the supervisor cannot tell what came before it).
//!
//! One supervisor per platform: two would both make a removed member again, and the engine
//! refuses the second by name, which is harmless but noisy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iaas_core::patroni::{PatroniCluster, leader_change};
use iaas_core::{
    Clock, ContainerRuntime, EventAction, InfrastructureEvent, Instance, InstanceId,
    InstanceRepository, InstanceSpec, InstanceStatus, JobQueue, Leases, PostgresSpec, Secrets,
};

use crate::backup_schedule::BackupScheduler;
use crate::sealed::SecretSealer;
use tokio_util::sync::CancellationToken;

/// How the supervisor runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SupervisorConfig {
    /// Time between two looks at every cluster (default 2 s: a lost member is noticed within
    /// it, and a failover is reported within it of the election).
    pub interval: Duration,
    /// How long a switchover the platform asked for explains a change of primary (default 60 s).
    pub switchover_window: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self { interval: Duration::from_secs(2), switchover_window: Duration::from_secs(60) }
    }
}

/// What the supervisor did, for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SupervisorStats {
    /// Completed passes over every cluster.
    pub passes: u64,
    /// Containers brought back.
    pub repaired: u64,
    /// Members added for a raised replica count.
    pub added: u64,
    /// Members removed for a lowered replica count.
    pub removed: u64,
    /// Failovers recorded.
    pub failovers: u64,
    /// Looks that failed (the engine, a member or the store did not answer).
    pub errors: u64,
}

/// A switchover the platform asked for: which member it hands over to (any, when the runtime
/// picks), and until when.
#[derive(Debug, Clone)]
struct Expected {
    to: Option<String>,
    until: tokio::time::Instant,
}

/// Watches highly available clusters; see the module docs.
pub struct Supervisor {
    runtime: Arc<dyn ContainerRuntime>,
    repo: Arc<dyn InstanceRepository>,
    clock: Arc<dyn Clock>,
    config: SupervisorConfig,
    views: Mutex<HashMap<InstanceId, PatroniCluster>>,
    /// The replica count of each cluster at its last repair, which tells a member the count
    /// asks for from one that was lost.
    counts: Mutex<HashMap<InstanceId, u8>>,
    expected: Mutex<HashMap<InstanceId, Expected>>,
    stats: Mutex<SupervisorStats>,
    on_commit: Arc<dyn Fn() + Send + Sync>,
    leases: Option<Arc<dyn Leases>>,
    backups: BackupScheduler,
    kept: Option<(Arc<dyn JobQueue>, SecretSealer)>,
}

/// The holder of every switchover expectation shared through leases.
const EXPECTATION_HOLDER: &str = "platform";

/// How long sharing or reading a switchover expectation may take before it is left out.
const SHARED_EXPECTATION_TIMEOUT: Duration = Duration::from_secs(2);

/// The lease that says a switchover of `instance` to `to` (any member when `None`) is asked.
fn switchover_lease(instance: InstanceId, to: Option<&str>) -> String {
    format!("switchover:{instance}:{}", to.unwrap_or("any"))
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Supervisor {
    /// A supervisor of the clusters in `repo`, run on `runtime`; nothing runs until
    /// [`Supervisor::run`].
    pub fn new(
        runtime: Arc<dyn ContainerRuntime>,
        repo: Arc<dyn InstanceRepository>,
        clock: Arc<dyn Clock>,
        config: SupervisorConfig,
    ) -> Self {
        let on_commit: Arc<dyn Fn() + Send + Sync> = Arc::new(|| {});
        let backups =
            BackupScheduler::new(runtime.clone(), repo.clone(), clock.clone(), on_commit.clone());
        Self {
            runtime,
            repo,
            clock,
            config,
            backups,
            views: Mutex::default(),
            counts: Mutex::default(),
            expected: Mutex::default(),
            stats: Mutex::default(),
            on_commit,
            leases: None,
            kept: None,
        }
    }

    /// Reads the platform's secrets of a cluster kept in `queue` (sealed by `sealer`) when
    /// none of its members is left to copy a lost one's settings from, so a member whose data
    /// survived can be made again (see [`ContainerRuntime::repair`]).
    #[must_use]
    pub fn with_kept_secrets(mut self, queue: Arc<dyn JobQueue>, sealer: SecretSealer) -> Self {
        self.kept = Some((queue, sealer));
        self
    }

    /// The platform's secrets kept for `instance`; none when none were kept or they cannot be
    /// read now (said in the log: the next look asks again).
    async fn kept_secrets(&self, instance: InstanceId) -> Secrets {
        let Some((queue, sealer)) = &self.kept else { return Secrets::new() };
        match queue.platform_secrets(instance).await {
            Ok(Some(sealed)) => sealer.open_platform(instance, &sealed).unwrap_or_else(|error| {
                tracing::warn!(%instance, %error, "opening the platform's secrets of a cluster");
                Secrets::new()
            }),
            Ok(None) => Secrets::new(),
            Err(error) => {
                tracing::warn!(%instance, error = %iaas_core::error_chain(&error), "reading the platform's secrets of a cluster");
                Secrets::new()
            }
        }
    }

    /// Shares switchover expectations through `leases` (the store every process of the
    /// platform uses), so a switchover asked through one process is not reported as a
    /// failover by the one supervising.
    #[must_use]
    pub fn with_leases(mut self, leases: Arc<dyn Leases>) -> Self {
        self.leases = Some(leases);
        self
    }

    /// Calls `hook` after every event the supervisor records (the platform wakes its relay).
    #[must_use]
    pub fn with_on_commit(mut self, hook: Arc<dyn Fn() + Send + Sync>) -> Self {
        self.backups = BackupScheduler::new(
            self.runtime.clone(),
            self.repo.clone(),
            self.clock.clone(),
            hook.clone(),
        );
        self.on_commit = hook;
        self
    }

    /// Counters so far.
    pub fn stats(&self) -> SupervisorStats {
        *lock(&self.stats)
    }

    /// Tells the supervisor that the platform is handing `instance` over to member `to` (or
    /// to the member the runtime picks), so the change of primary it is about to see is no
    /// failover.
    pub async fn expect_switchover(&self, instance: InstanceId, to: Option<&str>) {
        let until = tokio::time::Instant::now() + self.config.switchover_window;
        lock(&self.expected).insert(instance, Expected { to: to.map(str::to_owned), until });
        let Some(leases) = &self.leases else { return };
        let name = switchover_lease(instance, to);
        let shared = leases.acquire_lease(&name, EXPECTATION_HOLDER, self.config.switchover_window);
        match tokio::time::timeout(SHARED_EXPECTATION_TIMEOUT, shared).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%instance, error = %iaas_core::error_chain(&error), "sharing a switchover expectation; another process may report it as a failover")
            }
            Err(_) => {
                tracing::warn!(%instance, "sharing a switchover expectation timed out; another process may report it as a failover")
            }
        }
    }

    /// Whether another process asked for the switchover of `instance` to `new_leader` (see
    /// [`Self::with_leases`]); an expectation found is given up, so it explains one change.
    async fn expected_elsewhere(&self, instance: InstanceId, new_leader: &str) -> bool {
        let Some(leases) = &self.leases else { return false };
        let mut found = false;
        for name in [switchover_lease(instance, None), switchover_lease(instance, Some(new_leader))]
        {
            let read = tokio::time::timeout(SHARED_EXPECTATION_TIMEOUT, leases.lease_holder(&name));
            match read.await {
                Ok(Ok(Some(held))) if !held.expired && held.holder == EXPECTATION_HOLDER => {
                    found = true;
                    if let Err(error) = leases.release_lease(&name, EXPECTATION_HOLDER).await {
                        tracing::warn!(%instance, error = %iaas_core::error_chain(&error), "giving up a switchover expectation; it expires by itself");
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%instance, error = %iaas_core::error_chain(&error), "reading switchover expectations")
                }
                Err(_) => tracing::warn!(%instance, "reading switchover expectations timed out"),
            }
        }
        found
    }

    /// Records that the switchover of `instance` is over (the API recorded it), with the
    /// election as it stands, so the next look compares with the new primary.
    pub fn switchover_done(&self, instance: InstanceId, now: Option<PatroniCluster>) {
        lock(&self.expected).remove(&instance);
        if let Some(now) = now {
            lock(&self.views).insert(instance, now);
        }
    }

    /// Looks at every cluster every interval until `cancel` fires.
    pub async fn run(&self, cancel: CancellationToken) {
        loop {
            if let Err(error) = self.pass().await {
                tracing::warn!(error = %iaas_core::error_chain(&error), "supervising clusters");
                lock(&self.stats).errors += 1;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }

    /// One look at every running highly available cluster.
    pub async fn pass(&self) -> iaas_core::Result<()> {
        let instances = self.repo.list_active_instances().await?;
        let clusters: Vec<Instance> =
            instances.into_iter().filter(|i| i.spec.is_highly_available()).collect();
        // Forget what no longer is (deleted clusters), so the map stays bounded.
        {
            let ids: std::collections::HashSet<InstanceId> =
                clusters.iter().map(|i| i.id).collect();
            lock(&self.views).retain(|id, _| ids.contains(id));
            lock(&self.counts).retain(|id, _| ids.contains(id));
            self.backups.retain(&ids);
        }
        // A failed cluster is brought back too: its endpoint died, and starting it again is
        // what makes it `running` (the watcher records that start).
        let supervised =
            |i: &&Instance| matches!(i.status, InstanceStatus::Running | InstanceStatus::Failed);
        for instance in clusters.iter().filter(supervised) {
            if let Err(error) = self.look(instance).await {
                tracing::warn!(instance = %instance.id, error = %iaas_core::error_chain(&error), "supervising a cluster");
                lock(&self.stats).errors += 1;
            }
        }
        lock(&self.stats).passes += 1;
        Ok(())
    }

    async fn look(&self, instance: &Instance) -> iaas_core::Result<()> {
        // The member the election still names primary is left down: Patroni promotes a
        // replica once its leadership lapses, and the old primary, started after that, follows
        // the new one. Started at once, it would take its leadership back before any replica
        // could, and a crash would never fail over.
        let election = self.runtime.cluster_members(instance.id).await?;
        let keep_down: Vec<String> = election
            .as_ref()
            .and_then(|c| c.leader())
            .map(|l| vec![l.name.clone()])
            .unwrap_or_default();
        // A repair that fails (the engine busy, say) is tried again at the next look; the
        // election is still read and reported now.
        // Only a cluster none of whose members answers may need them: the others copy a lost
        // member's settings from one still there.
        let kept = match &election {
            Some(_) => Secrets::new(),
            None => self.kept_secrets(instance.id).await,
        };
        let replicas = match &instance.spec {
            InstanceSpec::Postgres(pg) => pg.replicas,
            _ => 0,
        };
        let counted = lock(&self.counts).get(&instance.id).copied();
        let brought = match self.runtime.repair(instance, &keep_down, &kept).await {
            Ok(roles) => {
                lock(&self.counts).insert(instance.id, replicas);
                roles
            }
            Err(error) => {
                tracing::warn!(instance = %instance.id, error = %iaas_core::error_chain(&error), "bringing back a lost container");
                lock(&self.stats).errors += 1;
                Vec::new()
            }
        };
        if !brought.is_empty() && self.undo_if_changed(instance).await {
            return Ok(());
        }
        // A member beyond the count of the last repair is one a raised count asks for; any
        // other was lost (however long ago: Patroni forgets a lost member after a while, the
        // count does not).
        for role in brought {
            let index = role
                .strip_prefix(iaas_core::runtime::MEMBER_PREFIX)
                .and_then(|n| n.parse::<u8>().ok());
            let added = index.zip(counted).is_some_and(|(n, before)| n > before);
            let event = if added {
                tracing::info!(instance = %instance.id, %role, "added a member for the replica count");
                lock(&self.stats).added += 1;
                self.event(instance, EventAction::NodeAdded)
                    .with_metadata("member", &role)
                    .with_metadata("reason", "the replica count was raised")
            } else {
                tracing::info!(instance = %instance.id, %role, "brought back a lost container");
                lock(&self.stats).repaired += 1;
                self.event(instance, EventAction::Started)
                    .with_metadata("member", &role)
                    .with_metadata("reason", "brought back by the supervisor")
            };
            self.record(event).await?;
        }
        if instance.status == InstanceStatus::Running
            && let InstanceSpec::Postgres(PostgresSpec { backup_schedule: Some(schedule), .. }) =
                &instance.spec
        {
            self.backups.look(instance, *schedule);
        }
        if instance.status == InstanceStatus::Running {
            // A failure (a hand-over refused, the engine busy) is tried again at the next look.
            match self.runtime.retire_surplus(instance).await {
                Ok(retired) => {
                    for role in retired.removed {
                        let event = self
                            .event(instance, EventAction::NodeRemoved)
                            .with_metadata("member", &role)
                            .with_metadata("reason", "the replica count was lowered");
                        self.record(event).await?;
                        lock(&self.stats).removed += 1;
                    }
                    // The election read above is from before the hand-over: not compared.
                    if let Some(change) = retired.handed_over {
                        return self.handed_over(instance, change).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(instance = %instance.id, error = %iaas_core::error_chain(&error), "removing members beyond the replica count");
                    lock(&self.stats).errors += 1;
                }
            }
        }
        if instance.status != InstanceStatus::Running {
            return Ok(());
        }
        // Only a view with a leader is remembered: between the old primary's lapse and the
        // promotion there is none, and forgetting the old one then would hide the failover.
        let Some(now) = election.filter(|c| c.leader().is_some()) else { return Ok(()) };
        let before = lock(&self.views).insert(instance.id, now.clone());
        let Some(before) = before else { return Ok(()) };
        let Some(change) = leader_change(&before, &now) else { return Ok(()) };
        let planned_here = {
            let mut expected = lock(&self.expected);
            match expected.get(&instance.id) {
                Some(e)
                    if e.to.as_ref().is_none_or(|to| *to == change.new_leader)
                        && e.until > tokio::time::Instant::now() =>
                {
                    expected.remove(&instance.id);
                    true
                }
                _ => false,
            }
        };
        // Read (and given up) even when expected here, so it cannot explain a later change.
        let planned_elsewhere = self.expected_elsewhere(instance.id, &change.new_leader).await;
        if planned_here || planned_elsewhere {
            return Ok(());
        }
        tracing::warn!(
            instance = %instance.id,
            old = change.old_leader.as_deref().unwrap_or("none"),
            new = %change.new_leader,
            "failover: a replica was promoted"
        );
        let mut event = self
            .event(instance, EventAction::Failover)
            .with_metadata("new_primary", &change.new_leader);
        if let Some(old) = &change.old_leader {
            event = event.with_metadata("old_primary", old);
        }
        if let Some(timeline) = change.timeline {
            event = event.with_metadata("timeline", timeline.to_string());
        }
        event = event.with_metadata(
            "lost_wal_bytes_at_most",
            change.lag_bound_bytes.map_or_else(|| "unknown".to_owned(), |b| b.to_string()),
        );
        self.record(event).await?;
        lock(&self.stats).failovers += 1;
        Ok(())
    }

    /// After containers were brought back from a list read before: when the cluster is being
    /// deleted or stopped by now, what was just made would outlive that (the removal or the
    /// stop listed the containers before it), so it is removed or stopped again here. Says
    /// whether it was.
    async fn undo_if_changed(&self, instance: &Instance) -> bool {
        let now = match self.repo.get_instance(instance.id).await {
            Ok(Some(now)) => now.status,
            Ok(None) => InstanceStatus::Deleted,
            Err(error) => {
                tracing::warn!(instance = %instance.id, error = %iaas_core::error_chain(&error), "reading a cluster after bringing back its containers");
                return false;
            }
        };
        let undone = match now {
            InstanceStatus::Deleting | InstanceStatus::Deleted => {
                self.runtime.remove_instance(instance, false).await
            }
            InstanceStatus::Stopping | InstanceStatus::Stopped => {
                self.runtime.stop(instance.id).await
            }
            _ => return false,
        };
        tracing::info!(instance = %instance.id, status = %now, "the cluster changed while its lost containers were made; undoing them");
        if let Err(error) = undone {
            tracing::warn!(instance = %instance.id, error = %iaas_core::error_chain(&error), "undoing containers made for a cluster that changed meanwhile");
        }
        true
    }

    /// Records the platform's own switchover `change` (a primary beyond a lowered replica
    /// count handed over to a member that stays), and takes the election as it is now as the
    /// last look, so the change is not taken for a failover.
    async fn handed_over(
        &self,
        instance: &Instance,
        change: iaas_core::patroni::LeaderChange,
    ) -> iaas_core::Result<()> {
        match self.runtime.cluster_members(instance.id).await {
            Ok(Some(now)) if now.leader().is_some() => {
                lock(&self.views).insert(instance.id, now);
            }
            // Read again at the next look; meanwhile the change is expected.
            _ => self.expect_switchover(instance.id, Some(&change.new_leader)).await,
        }
        let mut event = self
            .event(instance, EventAction::Switchover)
            .with_metadata("new_primary", &change.new_leader)
            .with_metadata("reason", "the primary was beyond the lowered replica count");
        if let Some(old) = &change.old_leader {
            event = event.with_metadata("old_primary", old);
        }
        if let Some(timeline) = change.timeline {
            event = event.with_metadata("timeline", timeline.to_string());
        }
        self.record(event).await
    }

    fn event(&self, instance: &Instance, action: EventAction) -> InfrastructureEvent {
        InfrastructureEvent::new(
            instance.id,
            instance.owner,
            instance.kind(),
            action,
            self.clock.now(),
        )
    }

    async fn record(&self, event: InfrastructureEvent) -> iaas_core::Result<()> {
        self.repo.record_event(&event).await?;
        (self.on_commit)();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use iaas_core::memory::{MemoryInstanceRepository, MemoryLeases};
    use iaas_core::patroni::{PatroniMember, PatroniRole};
    use iaas_core::{
        ContainerRef, InstanceName, InstanceSpec, ManagedContainer, PostgresSpec, PrimaryState,
        Resources, RuntimeError, Secrets, StatusChange, SystemClock, UserId,
    };

    use super::*;

    /// A runtime that has nothing but an election, whose leader the test sets, and repairs
    /// that bring back the roles the test sets (once).
    #[derive(Default)]
    struct Election(Mutex<String>, Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl ContainerRuntime for Election {
        async fn provision(
            &self,
            _: &Instance,
            _: &Secrets,
        ) -> Result<Vec<ContainerRef>, RuntimeError> {
            Ok(Vec::new())
        }
        async fn start(&self, _: InstanceId) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn stop(&self, _: InstanceId) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn restart(&self, _: InstanceId) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn remove(&self, _: InstanceId, _: bool) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn list_managed(&self) -> Result<Vec<ManagedContainer>, RuntimeError> {
            Ok(Vec::new())
        }
        async fn primary_state(&self, _: InstanceId) -> Result<PrimaryState, RuntimeError> {
            Ok(PrimaryState::gone())
        }
        async fn cluster_members(
            &self,
            _: InstanceId,
        ) -> Result<Option<PatroniCluster>, RuntimeError> {
            let leader = lock(&self.0).clone();
            let member = |name: &str| PatroniMember {
                name: name.to_owned(),
                role: if name == leader { PatroniRole::Leader } else { PatroniRole::Replica },
                state: "running".to_owned(),
                timeline: Some(1),
                lag_bytes: Some(0),
            };
            Ok(Some(PatroniCluster { members: vec![member("member-0"), member("member-1")] }))
        }
        async fn repair(
            &self,
            _: &Instance,
            _: &[String],
            _: &Secrets,
        ) -> Result<Vec<String>, RuntimeError> {
            Ok(std::mem::take(&mut *lock(&self.1)))
        }
    }

    /// A running 1+1 cluster in a new repository.
    async fn running_cluster() -> (Arc<MemoryInstanceRepository>, Instance) {
        let repo = Arc::new(MemoryInstanceRepository::new());
        let spec = PostgresSpec::new("app", 1).highly_available();
        let name = InstanceName::new("db").unwrap();
        let owner = UserId::new_random();
        let now = chrono::Utc::now();
        let db =
            Instance::new(owner, name, InstanceSpec::Postgres(spec), Resources::default(), now)
                .unwrap();
        let event = |action| InfrastructureEvent::new(db.id, owner, db.kind(), action, now);
        repo.create_instance(&db, &event(EventAction::Created)).await.unwrap();
        let running = StatusChange {
            id: db.id,
            expected_version: None,
            to: InstanceStatus::Running,
            event: event(EventAction::Started),
            at: now,
        };
        repo.update_status(running).await.unwrap();
        (repo, db)
    }

    #[tokio::test]
    async fn a_member_beyond_the_last_count_is_added_and_any_other_was_lost() {
        let (repo, db) = running_cluster().await;
        let election = Arc::new(Election::default());
        *lock(&election.0) = "member-0".to_owned();
        let supervisor = Supervisor::new(
            election.clone(),
            repo.clone(),
            Arc::new(SystemClock),
            SupervisorConfig::default(),
        );
        let actions = |repo: &MemoryInstanceRepository| -> Vec<(EventAction, String)> {
            repo.outbox()
                .into_iter()
                .filter(|e| matches!(e.action, EventAction::NodeAdded | EventAction::Started))
                .filter_map(|e| Some((e.action, e.metadata.get("member")?.clone())))
                .collect()
        };
        supervisor.pass().await.unwrap();

        // The count raised to 3: members 2 and 3 are added.
        let stored = repo.get_instance(db.id).await.unwrap().unwrap();
        let spec = InstanceSpec::Postgres(PostgresSpec::new("app", 3).highly_available());
        let event = InfrastructureEvent::new(
            db.id,
            db.owner,
            db.kind(),
            EventAction::ConfigChanged,
            chrono::Utc::now(),
        );
        let change =
            iaas_core::SpecChange { id: db.id, expected_version: stored.version, spec, event };
        repo.update_spec_within(change, &iaas_core::Quota::default()).await.unwrap();
        *lock(&election.1) = vec!["member-2".to_owned(), "member-3".to_owned()];
        supervisor.pass().await.unwrap();
        // Later a member lost long enough for Patroni to forget it (the election does not list
        // member-3), and the store: both brought back, neither added.
        *lock(&election.1) = vec!["member-3".to_owned(), "store".to_owned()];
        supervisor.pass().await.unwrap();

        let expected = [
            (EventAction::NodeAdded, "member-2"),
            (EventAction::NodeAdded, "member-3"),
            (EventAction::Started, "member-3"),
            (EventAction::Started, "store"),
        ];
        let expected: Vec<(EventAction, String)> =
            expected.into_iter().map(|(action, member)| (action, member.to_owned())).collect();
        assert_eq!(actions(&repo), expected);
        assert_eq!((supervisor.stats().added, supervisor.stats().repaired), (2, 2));
    }

    #[tokio::test]
    async fn a_switchover_asked_through_another_process_is_not_a_failover() {
        let (repo, db) = running_cluster().await;

        let election = Arc::new(Election::default());
        *lock(&election.0) = "member-0".to_owned();
        let leases = Arc::new(MemoryLeases::new());
        let process = |leases: Option<Arc<MemoryLeases>>| {
            let supervisor = Supervisor::new(
                election.clone(),
                repo.clone(),
                Arc::new(SystemClock),
                SupervisorConfig::default(),
            );
            match leases {
                Some(leases) => supervisor.with_leases(leases),
                None => supervisor,
            }
        };
        let (api, supervising) = (process(Some(leases.clone())), process(Some(leases.clone())));
        supervising.pass().await.unwrap();

        // Asked through the API's process; seen by the supervising one.
        api.expect_switchover(db.id, Some("member-1")).await;
        *lock(&election.0) = "member-1".to_owned();
        supervising.pass().await.unwrap();
        assert_eq!(supervising.stats().failovers, 0, "the switchover was expected");

        // The expectation explained one change: a real failover after it is reported.
        *lock(&election.0) = "member-0".to_owned();
        supervising.pass().await.unwrap();
        assert_eq!(supervising.stats().failovers, 1);

        // Without shared expectations, the same switchover is taken for a failover.
        let alone = process(None);
        alone.pass().await.unwrap();
        process(None).expect_switchover(db.id, Some("member-1")).await;
        *lock(&election.0) = "member-1".to_owned();
        alone.pass().await.unwrap();
        assert_eq!(alone.stats().failovers, 1);
    }
}
