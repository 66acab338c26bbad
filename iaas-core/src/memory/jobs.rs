//! [`JobQueue`] of [`MemoryInstanceRepository`]: the jobs live beside the instances, under the
//! same lock, so a job is written with the status change that asks for it.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::instances::MemoryInstanceRepository;
use super::lock;
use crate::error::Result;
use crate::event::InfrastructureEvent;
use crate::id::InstanceId;
use crate::jobs::{Job, JobAction, JobQueue, JobStats};
use crate::status::InstanceStatus;

/// A job with its queue bookkeeping.
#[derive(Debug, Clone)]
pub(super) struct StoredJob {
    job: Job,
    due: DateTime<Utc>,
    holder: Option<String>,
    until: Option<DateTime<Utc>>,
}

impl StoredJob {
    fn free(&self, now: DateTime<Utc>) -> bool {
        self.until.is_none_or(|until| until < now)
    }

    fn held_by(&self, job: &Job, holder: &str) -> bool {
        self.holder.as_deref() == Some(holder)
            && self.job.id == job.id
            && self.job.attempts == job.attempts
    }
}

/// The jobs and kept secrets of the repository.
#[derive(Debug, Default)]
pub(super) struct Jobs {
    jobs: HashMap<InstanceId, StoredJob>,
    secrets: HashMap<InstanceId, String>,
    platform_secrets: HashMap<InstanceId, String>,
}

impl Jobs {
    /// What a status change of `instance` from `from` to `to` (with `event`) does to its job:
    /// replaces it with the one `to` asks for, or removes it; the kept secrets go when the
    /// provisioning ends, the platform's when the instance is `deleted`.
    pub(super) fn follow_change(
        &mut self,
        instance: InstanceId,
        from: InstanceStatus,
        to: InstanceStatus,
        event: &InfrastructureEvent,
        now: DateTime<Utc>,
    ) {
        self.jobs.remove(&instance);
        if forgets_secrets(from, to) {
            self.secrets.remove(&instance);
        }
        if to == InstanceStatus::Deleted {
            self.platform_secrets.remove(&instance);
        }
        if let Some(action) = JobAction::for_change(to, event) {
            let job = Job {
                id: uuid::Uuid::now_v7().to_string(),
                instance_id: instance,
                action,
                from,
                attempts: 0,
                last_error: None,
                created_at: now,
            };
            self.jobs.insert(instance, StoredJob { job, due: now, holder: None, until: None });
        }
    }
}

use crate::jobs::forgets_secrets;

fn later(now: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX)
}

#[async_trait]
impl JobQueue for MemoryInstanceRepository {
    async fn claim_due_jobs(&self, holder: &str, lease: Duration, limit: u32) -> Result<Vec<Job>> {
        let now = self.now();
        let mut state = lock(self.state());
        let mut due: Vec<&mut StoredJob> =
            state.jobs.jobs.values_mut().filter(|s| s.due <= now && s.free(now)).collect();
        due.sort_by_key(|s| (s.due, s.job.created_at));
        Ok(due
            .into_iter()
            .take(limit as usize)
            .map(|stored| {
                stored.job.attempts += 1;
                stored.holder = Some(holder.to_owned());
                stored.until = Some(later(now, lease));
                stored.job.clone()
            })
            .collect())
    }

    async fn renew_job(&self, job: &Job, holder: &str, lease: Duration) -> Result<bool> {
        let now = self.now();
        let mut state = lock(self.state());
        match state.jobs.jobs.get_mut(&job.instance_id) {
            Some(stored) if stored.held_by(job, holder) => {
                stored.until = Some(later(now, lease));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn complete_job(&self, job: &Job, holder: &str) -> Result<bool> {
        let mut state = lock(self.state());
        let held = state.jobs.jobs.get(&job.instance_id).is_some_and(|s| s.held_by(job, holder));
        if held {
            state.jobs.jobs.remove(&job.instance_id);
        }
        Ok(held)
    }

    async fn retry_job(
        &self,
        job: &Job,
        holder: &str,
        after: Duration,
        error: &str,
    ) -> Result<bool> {
        let now = self.now();
        let mut state = lock(self.state());
        match state.jobs.jobs.get_mut(&job.instance_id) {
            Some(stored) if stored.held_by(job, holder) => {
                stored.due = later(now, after);
                stored.holder = None;
                stored.until = None;
                stored.job.last_error = Some(error.to_owned());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release_job(&self, job: &Job, holder: &str) -> Result<bool> {
        let now = self.now();
        let mut state = lock(self.state());
        match state.jobs.jobs.get_mut(&job.instance_id) {
            Some(stored) if stored.held_by(job, holder) => {
                stored.due = now;
                stored.holder = None;
                stored.until = None;
                stored.job.attempts = stored.job.attempts.saturating_sub(1);
                stored.job.last_error = Some(crate::jobs::RELEASED_UNFINISHED.to_owned());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn job_of(&self, instance: InstanceId) -> Result<Option<Job>> {
        Ok(lock(self.state()).jobs.jobs.get(&instance).map(|s| s.job.clone()))
    }

    async fn job_stats(&self) -> Result<JobStats> {
        let now = self.now();
        let state = lock(self.state());
        let jobs = state.jobs.jobs.values();
        Ok(JobStats {
            pending: jobs.len() as u64,
            leased: jobs.clone().filter(|s| !s.free(now)).count() as u64,
            retried: jobs.filter(|s| s.job.attempts > 0 && s.free(now)).count() as u64,
        })
    }

    async fn keep_secrets(&self, instance: InstanceId, sealed: &str) -> Result<()> {
        lock(self.state()).jobs.secrets.insert(instance, sealed.to_owned());
        Ok(())
    }

    async fn kept_secrets(&self, instance: InstanceId) -> Result<Option<String>> {
        Ok(lock(self.state()).jobs.secrets.get(&instance).cloned())
    }

    async fn forget_secrets(&self, instance: InstanceId) -> Result<()> {
        let jobs = &mut lock(self.state()).jobs;
        jobs.secrets.remove(&instance);
        jobs.platform_secrets.remove(&instance);
        Ok(())
    }

    async fn keep_platform_secrets(&self, instance: InstanceId, sealed: &str) -> Result<()> {
        lock(self.state()).jobs.platform_secrets.insert(instance, sealed.to_owned());
        Ok(())
    }

    async fn platform_secrets(&self, instance: InstanceId) -> Result<Option<String>> {
        Ok(lock(self.state()).jobs.platform_secrets.get(&instance).cloned())
    }
}
