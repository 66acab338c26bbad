//! Scheduled base backups of highly available clusters (`spec.backup_schedule`), taken by the
//! supervisor (so by the one process that follows the engine).
//!
//! At each look at a running cluster with a schedule, the supervisor asks [`BackupScheduler`]
//! whether a backup is due: the newest full backup (read from the repository once per process,
//! then remembered) is `every_hours` old, or there is none. A due backup runs in a task of its
//! own, so a long one never holds up the looks that notice a failover; one runs per cluster at
//! a time. A backup that fails (the cluster electing, the repository unreachable) is tried
//! again [`RETRY_AFTER`] later, doubling after each failure in a row up to
//! [`MAX_RETRY_AFTER`]. Each one taken is recorded as a `backed_up` event with `reason`
//! `scheduled`, and the schedule's `keep` expires the oldest full backups.
//!
//! The state is in memory: a new leader reads the repository again, so a backup is neither
//! skipped nor repeated across a hand-over beyond one taken twice when the old leader's was
//! still running (pgBackRest's lock refuses the second, which is then tried again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use iaas_core::pgbackrest::{BackupKind, BackupSet};
use iaas_core::{
    BackupSchedule, Clock, ContainerRuntime, EventAction, InfrastructureEvent, Instance,
    InstanceId, InstanceRepository,
};

/// Wait before a scheduled backup that failed is tried again; doubled after each failure in a
/// row, up to [`MAX_RETRY_AFTER`].
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Longest wait between two tries of a failing scheduled backup.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(30 * 60);

/// What the scheduler knows of one cluster.
#[derive(Debug, Clone, Copy, Default)]
struct Known {
    /// The newest full backup's end: `None` until read; `Some(None)` when there is none.
    newest: Option<Option<DateTime<Utc>>>,
    /// Not before this, after a failure.
    not_before: Option<DateTime<Utc>>,
    /// Failures in a row.
    failures: u32,
    /// A backup (or the read of the newest) is under way.
    running: bool,
}

/// Takes the backups schedules ask for; see the module docs.
#[derive(Clone)]
pub(crate) struct BackupScheduler {
    runtime: Arc<dyn ContainerRuntime>,
    repo: Arc<dyn InstanceRepository>,
    clock: Arc<dyn Clock>,
    on_commit: Arc<dyn Fn() + Send + Sync>,
    known: Arc<Mutex<HashMap<InstanceId, Known>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl BackupScheduler {
    pub(crate) fn new(
        runtime: Arc<dyn ContainerRuntime>,
        repo: Arc<dyn InstanceRepository>,
        clock: Arc<dyn Clock>,
        on_commit: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        Self { runtime, repo, clock, on_commit, known: Arc::default() }
    }

    /// Forgets the clusters not in `clusters` (deleted ones), so the map stays bounded.
    pub(crate) fn retain(&self, clusters: &std::collections::HashSet<InstanceId>) {
        lock(&self.known).retain(|id, _| clusters.contains(id));
    }

    /// Starts `instance`'s scheduled backup when one is due (see the module docs).
    pub(crate) fn look(&self, instance: &Instance, schedule: BackupSchedule) {
        let now = self.clock.now();
        let every = chrono::Duration::from_std(schedule.every()).unwrap_or(chrono::Duration::MAX);
        {
            let mut known = lock(&self.known);
            let state = known.entry(instance.id).or_default();
            let waiting = state.not_before.is_some_and(|at| now < at);
            let recent = matches!(state.newest, Some(Some(newest)) if now - newest < every);
            if state.running || waiting || recent {
                return;
            }
            state.running = true;
        }
        let (scheduler, instance) = (self.clone(), instance.clone());
        tokio::spawn(async move {
            let run = std::panic::AssertUnwindSafe(scheduler.run(&instance, schedule, every));
            // A panic must not leave the cluster's schedule marked as running for good.
            if futures_util::FutureExt::catch_unwind(run).await.is_err() {
                let error = iaas_core::RuntimeError::Engine {
                    operation: "a scheduled backup".to_owned(),
                    message: "the task panicked".to_owned(),
                };
                scheduler.failed(instance.id, &error);
            }
        });
    }

    /// Reads the newest backup when it is not known, then takes one if it is still due.
    async fn run(&self, instance: &Instance, schedule: BackupSchedule, every: chrono::Duration) {
        let id = instance.id;
        let known = lock(&self.known).get(&id).and_then(|k| k.newest);
        let newest = match known {
            Some(newest) => newest,
            None => match self.runtime.backups(id).await {
                Ok(catalog) => catalog
                    .backups
                    .iter()
                    .filter(|b| b.kind == BackupKind::Full)
                    .map(|b| b.stopped_at)
                    .max(),
                Err(error) => return self.failed(id, &error),
            },
        };
        let now = self.clock.now();
        if newest.is_some_and(|newest| now - newest < every) {
            self.settle(id, |state| state.newest = Some(newest));
            return;
        }
        let took = self.runtime.backup(id, BackupKind::Full, Some(schedule.keep)).await;
        match took {
            Ok(set) => {
                tracing::info!(instance = %id, label = %set.label, "took a scheduled backup");
                let event = backed_up_event(instance, &set, BackupKind::Full, self.clock.now())
                    .with_metadata("reason", "scheduled");
                match self.repo.record_event(&event).await {
                    Ok(()) => (self.on_commit)(),
                    Err(error) => {
                        tracing::warn!(instance = %id, error = %iaas_core::error_chain(&error), "recording a scheduled backup")
                    }
                }
                self.settle(id, |state| {
                    state.newest = Some(Some(set.stopped_at));
                    state.not_before = None;
                    state.failures = 0;
                });
            }
            Err(error) => self.failed(id, &error),
        }
    }

    fn failed(&self, id: InstanceId, error: &iaas_core::RuntimeError) {
        metrics::counter!("iaas_scheduled_backups_failed_total").increment(1);
        let now = self.clock.now();
        self.settle(id, |state| {
            state.failures = state.failures.saturating_add(1);
            let wait = RETRY_AFTER
                .saturating_mul(1 << state.failures.saturating_sub(1).min(16))
                .min(MAX_RETRY_AFTER);
            tracing::warn!(instance = %id, error = %iaas_core::error_chain(error), failures = state.failures, retry_in_secs = wait.as_secs(), "a scheduled backup failed");
            state.not_before =
                Some(now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX));
        });
    }

    /// Ends what ran for `id`, with `change` applied.
    fn settle(&self, id: InstanceId, change: impl FnOnce(&mut Known)) {
        let mut known = lock(&self.known);
        let state = known.entry(id).or_default();
        change(state);
        state.running = false;
    }
}

/// The `backed_up` event of `set`, a `kind` backup of `instance` (the caller adds `reason`).
pub(crate) fn backed_up_event(
    instance: &Instance,
    set: &BackupSet,
    kind: BackupKind,
    now: DateTime<Utc>,
) -> InfrastructureEvent {
    InfrastructureEvent::new(
        instance.id,
        instance.owner,
        instance.kind(),
        EventAction::BackedUp,
        now,
    )
    .with_metadata("label", &set.label)
    .with_metadata("type", kind.as_str())
    .with_metadata("database_bytes", set.database_bytes.to_string())
    .with_metadata("repository_bytes", set.repository_bytes.to_string())
}
