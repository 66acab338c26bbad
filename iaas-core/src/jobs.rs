//! Durable jobs: the engine work an instance in a transitional status is owed.
//!
//! Every status that promises work on the engine (`provisioning`, `starting`, `stopping`,
//! `restarting`, `deleting`) has exactly one job, written by the store **in the transaction that
//! records the status** ([`JobAction::for_change`] says which): a process that accepted a request
//! and died before or while carrying it out leaves the job behind, and any process of the
//! platform finishes it. A status change that ends the transitional status (the watcher saw the
//! outcome, the user deleted the instance meanwhile) removes or replaces the job in the same
//! transaction, so a job never outlives what it was for.
//!
//! A worker [claims](JobQueue::claim_due_jobs) a due job with a **lease**: the job is its own
//! until the lease runs out, and it [renews](JobQueue::renew_job) the lease while the engine
//! works. A worker that dies stops renewing; once the lease has run out any other worker claims
//! the job again, so an interrupted job is found by its expired lease and nothing else. Each
//! claim counts an attempt; the job's id, the attempt count and the holder are the claim's
//! **fence**: renewing, completing or retrying a job succeeds only for the claim that holds it
//! now, so a worker that stalled past its lease cannot complete (and so remove) the job another
//! worker took over, nor a later job of the same instance. The engine work
//! itself is idempotent (creating what already exists, removing what is gone), so running a job
//! twice is harmless; recording its outcome goes through the instance's version as every other
//! status change does.
//!
//! The sealed secrets a provisioning needs (the database password the client was given) are kept
//! beside the instance ([`JobQueue::keep_secrets`]), written before the instance itself, so a job
//! that resumes elsewhere creates the very credentials the client holds. They are sealed by the
//! caller: the store keeps opaque text. They go when the provisioning ends (see
//! [`forgets_secrets`]). The platform's own secrets of an instance (those it needs again after
//! the provisioning, say to make a lost cluster member again, never the tenant's application
//! password) are kept apart, the same way ([`JobQueue::keep_platform_secrets`]), until the
//! instance is `deleted`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::event::InfrastructureEvent;
use crate::id::InstanceId;
use crate::status::InstanceStatus;

/// The metadata key of a `deleting` event that says whether the data goes too.
pub const PURGE_METADATA: &str = "purge";

/// What a job does on the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobAction {
    /// Create the instance's containers (and, restoring, its data).
    Provision,
    /// Start its containers.
    Start,
    /// Stop them.
    Stop,
    /// Restart them.
    Restart,
    /// Remove them; with `purge`, their data too.
    Remove {
        /// Remove the volumes as well.
        purge: bool,
    },
}

impl JobAction {
    /// The job a change into `to` asks for, `event` being the change's event (a `deleting`
    /// event names its purge in [`PURGE_METADATA`]); `None` for a status that asks nothing of
    /// the engine.
    pub fn for_change(to: InstanceStatus, event: &InfrastructureEvent) -> Option<Self> {
        Some(match to {
            InstanceStatus::Provisioning => Self::Provision,
            InstanceStatus::Starting => Self::Start,
            InstanceStatus::Stopping => Self::Stop,
            InstanceStatus::Restarting => Self::Restart,
            InstanceStatus::Deleting => Self::Remove {
                purge: event.metadata.get(PURGE_METADATA).is_some_and(|purge| purge == "true"),
            },
            _ => return None,
        })
    }

    /// The stored name: `provision`, `start`, `stop`, `restart`, `remove`, `purge`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Provision => "provision",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Remove { purge: false } => "remove",
            Self::Remove { purge: true } => "purge",
        }
    }

    /// The action stored as `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "provision" => Self::Provision,
            "start" => Self::Start,
            "stop" => Self::Stop,
            "restart" => Self::Restart,
            "remove" => Self::Remove { purge: false },
            "purge" => Self::Remove { purge: true },
            _ => return None,
        })
    }
}

impl std::fmt::Display for JobAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A claimed job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Unique to this job (a new one for each job written): with the attempt and the holder,
    /// the fence of a claim.
    pub id: String,
    /// The instance it works on (one job per instance at a time).
    pub instance_id: InstanceId,
    /// What it does.
    pub action: JobAction,
    /// The status the instance left when the job was written (where a refused start, stop or
    /// restart goes back to).
    pub from: InstanceStatus,
    /// Claims so far, this one included; also the fence of this claim.
    pub attempts: u32,
    /// Why the previous attempt failed, if one did.
    pub last_error: Option<String>,
    /// When the job was written.
    pub created_at: DateTime<Utc>,
}

/// What the job queue holds, for metrics and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobStats {
    /// Jobs not done.
    pub pending: u64,
    /// Of those, held under a lease that has not run out.
    pub leased: u64,
    /// Of those, claimed before at least once (a failed or interrupted attempt).
    pub retried: u64,
}

/// The jobs of instances, written by the store with the status changes that ask for them.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Claims up to `limit` jobs that are due and not held under a live lease (new, given back
    /// for a retry, or interrupted), oldest first, for `holder` until `lease` from now. Two
    /// claimers never get the same job while its lease lasts, from one process or many.
    async fn claim_due_jobs(&self, holder: &str, lease: Duration, limit: u32) -> Result<Vec<Job>>;

    /// Extends the lease of `job` (as claimed by `holder`) to `lease` from now; `false` when the
    /// job is no longer this claim's (completed, replaced, or claimed again after the lease ran
    /// out).
    async fn renew_job(&self, job: &Job, holder: &str, lease: Duration) -> Result<bool>;

    /// Removes `job`: its work is done. `false` (and nothing removed) when the job is no longer
    /// this claim's.
    async fn complete_job(&self, job: &Job, holder: &str) -> Result<bool>;

    /// Gives `job` back, due again `after` from now, with the reason its attempt failed;
    /// `false` when the job is no longer this claim's.
    async fn retry_job(
        &self,
        job: &Job,
        holder: &str,
        after: Duration,
        error: &str,
    ) -> Result<bool>;

    /// Gives `job` back unspent, due at once: its holder stops before the attempt ended (a
    /// process shutting down), so the attempt does not count against the job's attempts; its
    /// `last_error` becomes [`RELEASED_UNFINISHED`], so the next holder knows an attempt began.
    /// `false` when the job is no longer this claim's.
    async fn release_job(&self, job: &Job, holder: &str) -> Result<bool>;

    /// The job of `instance`, if it has one (claimed or not).
    async fn job_of(&self, instance: InstanceId) -> Result<Option<Job>>;

    /// Counts of the jobs held.
    async fn job_stats(&self) -> Result<JobStats>;

    /// Keeps `sealed` (secrets sealed by the caller) for `instance`, replacing what was kept.
    /// Written before the instance itself, so every instance whose provisioning may resume
    /// elsewhere has them. Removed in the transaction of the status change that ends the
    /// provisioning (see [`forgets_secrets`]), or of the instance becoming `deleted`.
    async fn keep_secrets(&self, instance: InstanceId, sealed: &str) -> Result<()>;

    /// The sealed secrets kept for `instance`, if any.
    async fn kept_secrets(&self, instance: InstanceId) -> Result<Option<String>>;

    /// Removes what [`Self::keep_secrets`] and [`Self::keep_platform_secrets`] kept for
    /// `instance`: for an instance whose creation was refused after its secrets were kept
    /// (nothing else would remove them).
    async fn forget_secrets(&self, instance: InstanceId) -> Result<()>;

    /// Keeps `sealed` (the platform's own secrets of `instance`, sealed by the caller) for as
    /// long as the instance exists, replacing what was kept: written before the instance, like
    /// [`Self::keep_secrets`], and removed in the transaction of the instance becoming
    /// `deleted`.
    async fn keep_platform_secrets(&self, instance: InstanceId, sealed: &str) -> Result<()>;

    /// The platform's sealed secrets kept for `instance`, if any.
    async fn platform_secrets(&self, instance: InstanceId) -> Result<Option<String>>;
}

/// The `last_error` of a job given back unfinished ([`JobQueue::release_job`]).
pub const RELEASED_UNFINISHED: &str = "given back unfinished by a process that stopped";

/// Whether a status change from `from` to `to` ends the need for an instance's kept secrets:
/// its provisioning is over (whatever came of it; nothing provisions it again), or it is
/// `deleted`.
pub fn forgets_secrets(from: InstanceStatus, to: InstanceStatus) -> bool {
    (from == InstanceStatus::Provisioning && to != InstanceStatus::Provisioning)
        || to == InstanceStatus::Deleted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventAction;
    use crate::id::UserId;
    use crate::instance::InstanceKind;

    fn event(action: EventAction) -> InfrastructureEvent {
        InfrastructureEvent::new(
            InstanceId::new_random(),
            UserId::new_random(),
            InstanceKind::Docker,
            action,
            Utc::now(),
        )
    }

    #[test]
    fn every_status_that_promises_engine_work_asks_for_one_job() {
        for status in InstanceStatus::ALL {
            let job = JobAction::for_change(status, &event(EventAction::for_status(status)));
            let promised = status.is_transitional() || status == InstanceStatus::Provisioning;
            assert_eq!(job.is_some(), promised, "{status}");
        }
    }

    #[test]
    fn a_delete_purges_only_when_its_event_says_so() {
        let deleting = event(EventAction::Deleting);
        assert_eq!(
            JobAction::for_change(InstanceStatus::Deleting, &deleting),
            Some(JobAction::Remove { purge: false })
        );
        assert_eq!(
            JobAction::for_change(
                InstanceStatus::Deleting,
                &deleting.with_metadata(PURGE_METADATA, "true")
            ),
            Some(JobAction::Remove { purge: true })
        );
    }

    #[test]
    fn every_action_reads_back_as_stored() {
        for action in [
            JobAction::Provision,
            JobAction::Start,
            JobAction::Stop,
            JobAction::Restart,
            JobAction::Remove { purge: false },
            JobAction::Remove { purge: true },
        ] {
            assert_eq!(JobAction::parse(action.as_str()), Some(action));
        }
        assert_eq!(JobAction::parse("format"), None);
    }
}
