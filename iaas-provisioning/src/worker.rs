//! The job worker: carries out the durable jobs of instances (see [`iaas_core::JobQueue`]) on
//! the engine, from whichever process of the platform claims them.
//!
//! The API only records what was asked for (the store writes the job with the status); every
//! process runs a worker that claims due jobs, at once when its own API woke it and otherwise
//! every [`JobConfig::poll_interval`], so a job written by a process that died is taken over by
//! another one once the holder's lease ran out: at most [`JobConfig::lease`] plus one poll
//! after the crash. While the engine works, the worker renews the lease every third of it.
//!
//! | job | on the engine | outcome recorded |
//! |---|---|---|
//! | provision | create the containers with the credentials the client was given (opened from the sealed secrets, which the store forgets when the instance leaves `provisioning`); a second attempt first removes what an interrupted one left | `running` by the watcher; `failed` with the reason when the engine refuses, or after the last attempt |
//! | start, stop, restart | the engine call | what the engine then shows ([`crate::lifecycle`]); a refusal goes back to the status the job began from |
//! | remove | remove the containers (and the data with `purge`) | `deleted` once none is left; retried until it is |
//!
//! An engine that is unavailable, or an engine error that may pass, gives the job back with an
//! exponential backoff; a provisioning that still fails after [`JobConfig::max_attempts`] ends
//! `failed` with the reason, an action goes back to the status it began from with the reason
//! (as when the engine refuses it). A removal is retried without end (nothing else can finish
//! it), each failure logged. A worker that loses its claim (a renewal refused, or none for two
//! thirds of the lease) abandons the engine call where it is and records nothing: the job is
//! its next holder's, whose attempt starts from what is there. A process that stops before its
//! jobs finished gives them back unspent ([`Jobs::give_back_claims`]).

use std::sync::Arc;
use std::time::Duration;

use iaas_core::{
    Error, EventAction, InfrastructureEvent, Instance, InstanceSpec, InstanceStatus, Job,
    JobAction, JobQueue, PrimaryState, RuntimeError, Secrets, StatusChange,
};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, ProvisioningApi};
use crate::sealed::SecretSealer;

/// Job worker settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JobConfig {
    /// How long a claim holds a job without renewal (default 15 s): the longest a job of a
    /// process that died waits for another one.
    pub lease: Duration,
    /// How often the worker looks for due jobs when nothing woke it (default 2 s).
    pub poll_interval: Duration,
    /// Attempts of a provisioning or an action before it ends `failed` (default 3).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles per attempt (default 2 s).
    pub first_backoff: Duration,
    /// Longest wait between attempts (default 60 s).
    pub max_backoff: Duration,
    /// Jobs carried out at once by this process (default 8).
    pub concurrency: usize,
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(15),
            poll_interval: Duration::from_secs(2),
            max_attempts: 3,
            first_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
            concurrency: 8,
        }
    }
}

impl JobConfig {
    /// The wait before the attempt after `attempts` failed ones.
    fn backoff(&self, attempts: u32) -> Duration {
        let doubled = self.first_backoff.saturating_mul(1 << attempts.saturating_sub(1).min(16));
        doubled.min(self.max_backoff)
    }
}

/// The job queue, the key the instances' secrets are sealed under, and this process's name as
/// a job holder: what the API and the worker share.
#[derive(Clone)]
pub struct Jobs {
    /// The jobs, in the store.
    pub queue: Arc<dyn JobQueue>,
    /// Seals the credentials kept for a provisioning that resumes elsewhere.
    pub sealer: SecretSealer,
    /// Settings.
    pub config: JobConfig,
    holder: Arc<str>,
    wake: Arc<Notify>,
    give_back: CancellationToken,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").field("holder", &self.holder).field("config", &self.config).finish()
    }
}

impl Jobs {
    /// The jobs of `queue`, held under a name unique to this process.
    pub fn new(queue: Arc<dyn JobQueue>, sealer: SecretSealer, config: JobConfig) -> Self {
        let holder = format!("pid-{}-{}", std::process::id(), iaas_core::EventId::new_v7());
        Self {
            queue,
            sealer,
            config,
            holder: holder.into(),
            wake: Arc::new(Notify::new()),
            give_back: CancellationToken::new(),
        }
    }

    /// Abandons the engine calls of every job under way in this process and gives the jobs
    /// back unspent, due at once ([`JobQueue::release_job`]): for a process that stops before
    /// they finished, so another one takes them over now instead of after their leases.
    pub fn give_back_claims(&self) {
        self.give_back.cancel();
    }

    /// This process's name in the leases it holds.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Makes the worker look for due jobs now (after a write that asked for one).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Claims and carries out due jobs until `cancel`; jobs under way then finish (they are tracked
/// by the API's `background`, which stopping waits for) or, past that wait, their leases run out
/// and another process takes them over.
pub async fn run_jobs(api: ProvisioningApi, cancel: CancellationToken) {
    let jobs = api.jobs.clone();
    let slots = Arc::new(Semaphore::new(jobs.config.concurrency.max(1)));
    loop {
        // Stopping: the jobs under way finish, no new one is taken (another process will).
        if api.background.is_closed() {
            return;
        }
        let free = u32::try_from(slots.available_permits()).unwrap_or(u32::MAX);
        if free > 0 {
            match jobs.queue.claim_due_jobs(jobs.holder(), jobs.config.lease, free).await {
                Ok(claimed) => {
                    for job in claimed {
                        let Ok(slot) = slots.clone().try_acquire_owned() else { break };
                        metrics::counter!("iaas_jobs_claimed_total", "action" => job.action.as_str()).increment(1);
                        let api = api.clone();
                        api.background.clone().spawn(async move {
                            carry_out(&api, job).await;
                            drop(slot);
                            // A slot is free: the next due job is claimed now, not at the next
                            // poll (which held a burst of creates to 8 jobs per poll interval).
                            api.jobs.wake();
                        });
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %iaas_core::error_chain(&error), "claiming due jobs; trying again when a job ends or at the next poll");
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = jobs.wake.notified() => {}
            () = tokio::time::sleep(jobs.config.poll_interval) => {}
        }
    }
}

/// What an attempt of a job came to.
enum Attempt {
    /// The job's work is done (whatever outcome was recorded).
    Done,
    /// It may succeed later: give it back.
    Again(String),
}

/// Carries out `job`, renewing its lease meanwhile, then completes it or gives it back.
async fn carry_out(api: &ProvisioningApi, job: Job) {
    let jobs = &api.jobs;
    let holder = jobs.holder();
    let id = job.instance_id;
    // Renewed every third of the lease; when a renewal is refused (the job was replaced, or
    // another worker claimed it after the lease ran out) or none succeeded for two thirds of
    // it, the claim is given up before the lease can have expired.
    let renewing = async {
        let every = jobs.config.lease / 3;
        let give_up_after = jobs.config.lease.saturating_sub(every);
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(every).await;
            match tokio::time::timeout(every, jobs.queue.renew_job(&job, holder, jobs.config.lease))
                .await
            {
                Ok(Ok(true)) => renewed = tokio::time::Instant::now(),
                Ok(Ok(false)) => {
                    tracing::info!(instance_id = %id, action = %job.action, "the job moved on (replaced, or claimed after the lease ran out)");
                    return;
                }
                Ok(Err(error)) => {
                    tracing::warn!(instance_id = %id, error = %iaas_core::error_chain(&error), "renewing a job's lease")
                }
                Err(_) => {
                    tracing::warn!(instance_id = %id, "renewing a job's lease took longer than a third of it")
                }
            }
            if renewed.elapsed() >= give_up_after {
                tracing::warn!(instance_id = %id, action = %job.action, "no renewal of the job's lease for two thirds of it");
                return;
            }
        }
    };
    let attempt = tokio::select! {
        attempt = attempt(api, &job) => attempt,
        // The claim is lost: the engine call is abandoned where it is (dropped, so this worker
        // neither rolls back nor records anything), and the job is its new holder's, which
        // starts again from what is there.
        () = renewing => {
            metrics::counter!("iaas_jobs_abandoned_total", "action" => job.action.as_str())
                .increment(1);
            tracing::warn!(instance_id = %id, action = %job.action, "abandoning a job whose lease is lost");
            // A provisioning replaced by a delete: the delete may have run before the
            // containers this attempt made, so they go now. One the engine finishes making
            // after this goes at the next reconciliation, which removes the containers of
            // deleted instances.
            if job.action == JobAction::Provision {
                match api.repo.get_instance(id).await {
                    Ok(Some(instance)) => remove_if_deleted_meanwhile(api, &instance).await,
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(instance_id = %id, error = %iaas_core::error_chain(&error), "reading an abandoned provisioning's instance; the reconciliation removes what a delete left")
                    }
                }
            }
            return;
        }
        // The process stops: the attempt is abandoned where it is and the job given back, for
        // a next holder that starts again from what is there.
        () = jobs.give_back.cancelled() => {
            match jobs.queue.release_job(&job, holder).await {
                Ok(_) => tracing::info!(instance_id = %id, action = %job.action, "gave an unfinished job back on the way out"),
                Err(error) => tracing::warn!(instance_id = %id, error = %iaas_core::error_chain(&error), "giving an unfinished job back; its lease runs out instead"),
            }
            return;
        }
    };
    let settled = match attempt {
        Attempt::Done => jobs.queue.complete_job(&job, holder).await,
        Attempt::Again(reason) => {
            let after = jobs.config.backoff(job.attempts);
            tracing::warn!(instance_id = %id, action = %job.action, attempt = job.attempts, retry_in_ms = after.as_millis() as u64, reason, "a job failed; it will be tried again");
            metrics::counter!("iaas_jobs_retried_total", "action" => job.action.as_str())
                .increment(1);
            jobs.queue.retry_job(&job, holder, after, &reason).await
        }
    };
    match settled {
        Ok(true) => {}
        // A status change ended or replaced the job first (the watcher saw the outcome, or the
        // instance was deleted meanwhile): nothing left to settle.
        Ok(false) => {}
        Err(error) => {
            tracing::warn!(instance_id = %id, error = %iaas_core::error_chain(&error), "settling a job; its lease runs out and it is tried again")
        }
    }
}

/// One attempt of `job` on the engine.
async fn attempt(api: &ProvisioningApi, job: &Job) -> Attempt {
    let instance = match api.repo.get_instance(job.instance_id).await {
        Ok(Some(instance)) => instance,
        Ok(None) => return Attempt::Done,
        Err(error) => return Attempt::Again(iaas_core::error_chain(&error)),
    };
    match job.action {
        JobAction::Provision => provision(api, job, &instance).await,
        JobAction::Start | JobAction::Stop | JobAction::Restart => act(api, job, &instance).await,
        JobAction::Remove { purge } => remove(api, &instance, purge).await,
    }
}

/// Whether an engine failure may pass by itself.
fn may_pass(err: &RuntimeError) -> bool {
    err.is_unavailable() || matches!(err, RuntimeError::Engine { .. })
}

/// The credentials kept for `instance` (none for kinds that take none): `Err(Ok(reason))`
/// when they cannot be had (not kept, or sealed under another key), `Err(Err(reason))` when
/// the store did not answer (worth another attempt).
async fn kept_secrets(
    api: &ProvisioningApi,
    instance: &Instance,
) -> Result<Secrets, Result<String, String>> {
    let kept = api.jobs.queue.kept_secrets(instance.id).await;
    match kept.map_err(|error| Err(iaas_core::error_chain(&error)))? {
        Some(sealed) => api.jobs.sealer.open(instance.id, &sealed).map_err(|e| Ok(e.to_string())),
        None if matches!(instance.spec, InstanceSpec::Postgres(_)) => Err(Ok(format!(
            "the credentials of instance {} were not kept, so it cannot be provisioned",
            instance.id
        ))),
        None => Ok(Secrets::new()),
    }
}

/// Creates the containers; a failure that may pass is tried again, any other (or the last)
/// marks the instance failed with the reason in its event. The running status itself arrives
/// through the watcher.
async fn provision(api: &ProvisioningApi, job: &Job, instance: &Instance) -> Attempt {
    if instance.status != InstanceStatus::Provisioning {
        return Attempt::Done;
    }
    let secrets = match kept_secrets(api, instance).await {
        Ok(secrets) => secrets,
        Err(Err(store)) => return Attempt::Again(store),
        Err(Ok(reason)) => {
            record_failed(api, instance, reason).await;
            return Attempt::Done;
        }
    };
    // What an interrupted attempt left may be half a cluster: start again from nothing (the
    // containers hold no data of the user's yet). An attempt began before when this is not the
    // first, or when the first was given back unfinished.
    if (job.attempts > 1 || job.last_error.is_some())
        && let Err(err) = api.runtime.remove_instance(instance, true).await
    {
        if job.attempts < api.jobs.config.max_attempts {
            return Attempt::Again(iaas_core::error_chain(&err));
        }
        let reason = format!("removing what an interrupted provisioning left: {err}");
        record_failed(api, instance, reason).await;
        return Attempt::Done;
    }
    match api.runtime.provision(instance, &secrets).await {
        Ok(_) => {
            remove_if_deleted_meanwhile(api, instance).await;
            // The watcher records `running` from the last node's start event; the job records
            // it too from what the engine shows now, so a missed event (a hand-over of the
            // engine lease) cannot leave the instance provisioning.
            match api.runtime.primary_state(instance.id).await {
                Ok(observed) => finish(api, instance, observed).await,
                Err(error) => {
                    tracing::warn!(instance_id = %instance.id, error = %iaas_core::error_chain(&error), "reading a provisioned instance's state; the watcher records it")
                }
            }
            Attempt::Done
        }
        Err(err) if may_pass(&err) && job.attempts < api.jobs.config.max_attempts => {
            Attempt::Again(iaas_core::error_chain(&err))
        }
        Err(err) => {
            tracing::warn!(instance_id = %instance.id, error = %iaas_core::error_chain(&err), "provisioning failed");
            record_failed(api, instance, err.to_string()).await;
            Attempt::Done
        }
    }
}

/// A delete that ran while the containers were being created found nothing to remove: remove
/// them now, so a deleted instance never leaves containers behind.
async fn remove_if_deleted_meanwhile(api: &ProvisioningApi, instance: &Instance) {
    if let Ok(Some(current)) = api.repo.get_instance(instance.id).await
        && matches!(current.status, InstanceStatus::Deleting | InstanceStatus::Deleted)
        && let Err(error) = api.runtime.remove_instance(instance, true).await
    {
        tracing::error!(instance_id = %instance.id, %error, "removing the containers of an instance deleted while provisioning");
    }
}

/// Records a provisioning that failed for good, `reason` in its event.
async fn record_failed(api: &ProvisioningApi, instance: &Instance, reason: String) {
    metrics::counter!("iaas_jobs_failed_total", "action" => "provision").increment(1);
    let now = api.clock.now();
    let event = InfrastructureEvent::new(
        instance.id,
        instance.owner,
        instance.kind(),
        EventAction::Failed,
        now,
    )
    .with_metadata("error", reason);
    let change = StatusChange {
        id: instance.id,
        expected_version: None,
        to: InstanceStatus::Failed,
        event,
        at: now,
    };
    match api.repo.update_status(change).await {
        Ok(_) => (api.on_commit)(),
        // Deleted meanwhile: nothing to report.
        Err(Error::InvalidTransition(_)) => {}
        Err(error) => {
            tracing::error!(instance_id = %instance.id, %error, "recording a failed provisioning")
        }
    }
}

/// Runs the engine call of the action `instance` is in, then records its outcome from the
/// primary container's state (unless the watcher did first). An action the engine refused goes
/// back to the status it began from (`job.from`), the refusal in its event; when even that
/// cannot be recorded (the engine is gone), it ends `failed`.
async fn act(api: &ProvisioningApi, job: &Job, instance: &Instance) -> Attempt {
    let done = match (job.action, instance.status) {
        (JobAction::Start, InstanceStatus::Starting) => api.runtime.start(instance.id).await,
        (JobAction::Stop, InstanceStatus::Stopping) => api.runtime.stop(instance.id).await,
        (JobAction::Restart, InstanceStatus::Restarting) => api.runtime.restart(instance.id).await,
        // Its outcome was recorded, or another action followed.
        _ => return Attempt::Done,
    };
    match done {
        Ok(()) => match api.runtime.primary_state(instance.id).await {
            Ok(observed) => finish(api, instance, observed).await,
            Err(err) if may_pass(&err) && job.attempts < api.jobs.config.max_attempts => {
                return Attempt::Again(iaas_core::error_chain(&err));
            }
            Err(err) => refused(api, instance, InstanceStatus::Failed, err).await,
        },
        Err(err) if may_pass(&err) && job.attempts < api.jobs.config.max_attempts => {
            return Attempt::Again(iaas_core::error_chain(&err));
        }
        Err(err) => refused(api, instance, job.from, err).await,
    }
    Attempt::Done
}

/// Records `to` with the engine's refusal `err` in its event (the client-safe message), unless
/// something was recorded since the action began: an outcome the watcher saw stands.
async fn refused(
    api: &ProvisioningApi,
    instance: &Instance,
    to: InstanceStatus,
    err: RuntimeError,
) {
    tracing::warn!(instance_id = %instance.id, status = %instance.status, error = %iaas_core::error_chain(&err), "the engine refused an action");
    metrics::counter!("iaas_jobs_failed_total", "action" => instance.status.as_str()).increment(1);
    let now = api.clock.now();
    let to = if instance.status.can_change_to(to) { to } else { InstanceStatus::Failed };
    let event = InfrastructureEvent::new(
        instance.id,
        instance.owner,
        instance.kind(),
        EventAction::for_status(to),
        now,
    )
    .with_metadata("status", to.as_str())
    .with_metadata("refused", instance.status.as_str())
    .with_metadata("error", ApiError::from(err).client_message());
    let change = StatusChange {
        id: instance.id,
        expected_version: Some(instance.version),
        to,
        event,
        at: now,
    };
    match api.repo.update_status(change).await {
        Ok(_) => (api.on_commit)(),
        Err(Error::Conflict { .. } | Error::InvalidTransition(_)) => {}
        Err(error) => {
            tracing::error!(instance_id = %instance.id, %error, "recording a refused action")
        }
    }
}

/// Removes the containers of a `deleting` instance and records `deleted` once they are gone.
async fn remove(api: &ProvisioningApi, instance: &Instance, purge: bool) -> Attempt {
    if instance.status != InstanceStatus::Deleting {
        return Attempt::Done;
    }
    if let Err(error) = api.runtime.remove_instance(instance, purge).await {
        return Attempt::Again(iaas_core::error_chain(&error));
    }
    // A container made meanwhile (a cluster's supervisor bringing back what it had lost from
    // a list read before the delete) would outlive the instance: removed again first.
    match api.runtime.primary_state(instance.id).await {
        Ok(left) if left.status == InstanceStatus::Deleted => {}
        Ok(left) => {
            let what = match left.name.as_str() {
                "" => "a member or the store of the cluster".to_owned(),
                name => format!("container {name}"),
            };
            return Attempt::Again(format!("{what} still there after removing"));
        }
        Err(error) => return Attempt::Again(iaas_core::error_chain(&error)),
    }
    finish(api, instance, PrimaryState::gone()).await;
    Attempt::Done
}

/// Records what `observed` means for `acting` (the instance as its action began; see
/// [`crate::lifecycle::record`]): nothing when the watcher recorded the outcome first.
async fn finish(api: &ProvisioningApi, acting: &Instance, observed: PrimaryState) {
    let recorded = crate::lifecycle::record(
        api.repo.as_ref(),
        api.clock.as_ref(),
        acting,
        &observed,
        crate::lifecycle::Seen::ActionDone,
        None,
    )
    .await;
    match recorded {
        Ok(true) => (api.on_commit)(),
        Ok(false) => {}
        Err(error) => {
            tracing::error!(instance_id = %acting.id, %error, "recording an action's outcome; the reconciliation will")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_bound() {
        let config = JobConfig::default();
        let waits: Vec<u64> = (1..=8).map(|n| config.backoff(n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(config.backoff(u32::MAX), config.max_backoff);
    }
}
