//! How the processes of one platform share work, run against the in-memory repository, SQLite
//! and PostgreSQL alike. The job queue: a job is written with the status change that asks for
//! it, claimed by one worker at a time, found again when its holder's lease runs out, and
//! fenced against a stale holder. Named leases: one holder at a time, a new term per holder.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{InstanceStore, change, event, nginx};
use iaas_core::{
    EventAction, InstanceStatus, JobAction, LeaseHolder, ManualClock, PURGE_METADATA, UserId,
};

const LEASE: Duration = Duration::from_secs(15);

on_every_instance_backend!(
    every_transitional_status_has_its_job_and_its_outcome_removes_it,
    a_job_is_held_by_one_claim_until_its_lease_runs_out,
    concurrent_workers_never_claim_the_same_job,
    a_job_given_back_waits_out_its_backoff,
    a_job_released_unspent_is_due_at_once_and_not_counted,
    a_delete_replaces_the_job_under_way_and_fences_its_holder,
    a_late_claim_of_an_earlier_job_cannot_settle_the_next_one,
    secrets_are_kept_until_the_provisioning_ends,
    the_platforms_secrets_are_kept_until_the_instance_is_deleted,
    a_lease_has_one_holder_until_it_expires_or_is_released,
    racing_acquirers_of_a_free_lease_get_one_term,
);

async fn every_transitional_status_has_its_job_and_its_outcome_removes_it(
    store: impl InstanceStore,
    _clock: Arc<ManualClock>,
) {
    let instance = nginx(UserId::new_random(), "web");
    store.create_instance(&instance, &event(&instance, EventAction::Created)).await.unwrap();
    let job = store.job_of(instance.id).await.unwrap().expect("a provisioning has its job");
    assert_eq!(
        (job.action, job.from, job.attempts),
        (JobAction::Provision, InstanceStatus::Provisioning, 0)
    );

    store.update_status(change(&instance, None, InstanceStatus::Running)).await.unwrap();
    assert_eq!(store.job_of(instance.id).await.unwrap(), None, "running asks nothing");

    for (to, action, from) in [
        (InstanceStatus::Stopping, JobAction::Stop, InstanceStatus::Running),
        (InstanceStatus::Stopped, JobAction::Stop, InstanceStatus::Running),
        (InstanceStatus::Starting, JobAction::Start, InstanceStatus::Stopped),
        (InstanceStatus::Running, JobAction::Start, InstanceStatus::Stopped),
        (InstanceStatus::Restarting, JobAction::Restart, InstanceStatus::Running),
    ] {
        store.update_status(change(&instance, None, to)).await.unwrap();
        let job = store.job_of(instance.id).await.unwrap();
        if to.is_transitional() {
            let job = job.unwrap_or_else(|| panic!("{to} has its job"));
            assert_eq!((job.action, job.from), (action, from), "{to}");
        } else {
            assert_eq!(job, None, "{to} ended the {action}");
        }
    }
    let mut deleting = change(&instance, None, InstanceStatus::Deleting);
    deleting.event = deleting.event.with_metadata(PURGE_METADATA, "true");
    store.update_status(deleting).await.unwrap();
    let job = store.job_of(instance.id).await.unwrap().unwrap();
    assert_eq!(
        (job.action, job.from),
        (JobAction::Remove { purge: true }, InstanceStatus::Restarting)
    );
    store.update_status(change(&instance, None, InstanceStatus::Deleted)).await.unwrap();
    assert_eq!(store.job_of(instance.id).await.unwrap(), None);
    assert_eq!(store.job_stats().await.unwrap().pending, 0);
}

async fn a_job_is_held_by_one_claim_until_its_lease_runs_out(
    store: impl InstanceStore,
    clock: Arc<ManualClock>,
) {
    let instance = nginx(UserId::new_random(), "web");
    store.create_instance(&instance, &event(&instance, EventAction::Created)).await.unwrap();

    let first = store.claim_due_jobs("a", LEASE, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].instance_id, first[0].attempts), (instance.id, 1));
    assert!(store.claim_due_jobs("b", LEASE, 10).await.unwrap().is_empty(), "a holds it");
    let stats = store.job_stats().await.unwrap();
    assert_eq!((stats.pending, stats.leased), (1, 1));

    // Renewed, it stays a's past the first lease.
    clock.advance(chrono::Duration::from_std(LEASE - Duration::from_secs(1)).unwrap());
    assert!(store.renew_job(&first[0], "a", LEASE).await.unwrap());
    clock.advance(chrono::Duration::from_std(Duration::from_secs(2)).unwrap());
    assert!(store.claim_due_jobs("b", LEASE, 10).await.unwrap().is_empty(), "renewed");

    // a dies: once its lease ran out, b finds the job, and a's claim is fenced off.
    clock.advance(chrono::Duration::from_std(LEASE + Duration::from_secs(1)).unwrap());
    let second = store.claim_due_jobs("b", LEASE, 10).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempts, 2, "each claim is an attempt");
    assert!(!store.renew_job(&first[0], "a", LEASE).await.unwrap());
    assert!(!store.complete_job(&first[0], "a").await.unwrap());
    assert!(!store.retry_job(&first[0], "a", LEASE, "late").await.unwrap());
    assert!(!store.complete_job(&second[0], "a").await.unwrap(), "the holder is part of the fence");
    assert!(store.complete_job(&second[0], "b").await.unwrap());
    assert_eq!(store.job_of(instance.id).await.unwrap(), None);
    assert_eq!(store.job_stats().await.unwrap().pending, 0);
}

async fn concurrent_workers_never_claim_the_same_job(
    store: impl InstanceStore,
    _clock: Arc<ManualClock>,
) {
    const INSTANCES: usize = 24;
    let owner = UserId::new_random();
    for n in 0..INSTANCES {
        let instance = nginx(owner, &format!("web-{n}"));
        store.create_instance(&instance, &event(&instance, EventAction::Created)).await.unwrap();
    }
    let store = Arc::new(store);
    let log: Arc<Mutex<Vec<(usize, iaas_core::InstanceId)>>> = Arc::default();
    let start = Arc::new(tokio::sync::Barrier::new(4));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (store, log, start) = (store.clone(), log.clone(), start.clone());
            tokio::spawn(async move {
                let holder = format!("worker-{w}");
                start.wait().await;
                loop {
                    let claimed = store.claim_due_jobs(&holder, LEASE, 3).await.unwrap();
                    if claimed.is_empty() {
                        break;
                    }
                    for job in claimed {
                        log.lock().unwrap().push((w, job.instance_id));
                        assert!(store.complete_job(&job, &holder).await.unwrap());
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let log = log.lock().unwrap().clone();
    let mut claims: BTreeMap<_, usize> = BTreeMap::new();
    for (_, id) in &log {
        *claims.entry(*id).or_default() += 1;
    }
    assert_eq!(claims.len(), INSTANCES, "every job was claimed");
    assert!(claims.values().all(|&n| n == 1), "a job was claimed twice: {claims:?}");
    assert_eq!(store.job_stats().await.unwrap().pending, 0);
}

async fn a_job_given_back_waits_out_its_backoff(
    store: impl InstanceStore,
    clock: Arc<ManualClock>,
) {
    let instance = nginx(UserId::new_random(), "web");
    store.create_instance(&instance, &event(&instance, EventAction::Created)).await.unwrap();
    let job = store.claim_due_jobs("a", LEASE, 1).await.unwrap().remove(0);
    assert!(
        store
            .retry_job(&job, "a", Duration::from_secs(10), "the engine is restarting")
            .await
            .unwrap()
    );
    let stats = store.job_stats().await.unwrap();
    assert_eq!((stats.pending, stats.leased, stats.retried), (1, 0, 1));
    assert!(store.claim_due_jobs("a", LEASE, 1).await.unwrap().is_empty(), "not due yet");
    clock.advance(chrono::Duration::from_std(Duration::from_secs(11)).unwrap());
    let again = store.claim_due_jobs("b", LEASE, 1).await.unwrap().remove(0);
    assert_eq!(again.attempts, 2);
    assert_eq!(again.last_error.as_deref(), Some("the engine is restarting"));
}

async fn a_job_released_unspent_is_due_at_once_and_not_counted(
    store: impl InstanceStore,
    _clock: Arc<ManualClock>,
) {
    let instance = nginx(UserId::new_random(), "web");
    store.create_instance(&instance, &event(&instance, EventAction::Created)).await.unwrap();
    let job = store.claim_due_jobs("a", LEASE, 1).await.unwrap().remove(0);
    assert!(store.release_job(&job, "a").await.unwrap());
    let again = store.claim_due_jobs("b", LEASE, 1).await.unwrap().remove(0);
    assert_eq!((&again.id, again.attempts), (&job.id, 1), "the same job, its first attempt");
    assert_eq!(
        again.last_error.as_deref(),
        Some(iaas_core::RELEASED_UNFINISHED),
        "an attempt began"
    );
    assert!(!store.release_job(&job, "a").await.unwrap(), "a's claim is gone");
    assert!(store.renew_job(&again, "b", LEASE).await.unwrap(), "b's claim still holds");
}

async fn a_delete_replaces_the_job_under_way_and_fences_its_holder(
    store: impl InstanceStore,
    _clock: Arc<ManualClock>,
) {
    let instance = nginx(UserId::new_random(), "web");
    store.create_instance(&instance, &event(&instance, EventAction::Created)).await.unwrap();
    let provisioning = store.claim_due_jobs("a", LEASE, 1).await.unwrap().remove(0);
    store.update_status(change(&instance, None, InstanceStatus::Deleting)).await.unwrap();
    assert!(
        !store.complete_job(&provisioning, "a").await.unwrap(),
        "the provisioning was replaced"
    );
    let removal = store.claim_due_jobs("b", LEASE, 1).await.unwrap().remove(0);
    assert_eq!(
        (removal.action, removal.from, removal.attempts),
        (JobAction::Remove { purge: false }, InstanceStatus::Provisioning, 1)
    );
}

async fn secrets_are_kept_until_the_provisioning_ends(
    store: impl InstanceStore,
    _clock: Arc<ManualClock>,
) {
    let instance = nginx(UserId::new_random(), "db");
    assert_eq!(store.kept_secrets(instance.id).await.unwrap(), None);
    store.keep_secrets(instance.id, "sealed-1").await.unwrap();
    store.create_instance(&instance, &event(&instance, EventAction::Created)).await.unwrap();
    store.keep_secrets(instance.id, "sealed-2").await.unwrap();
    assert_eq!(store.kept_secrets(instance.id).await.unwrap().as_deref(), Some("sealed-2"));
    store.update_status(change(&instance, None, InstanceStatus::Running)).await.unwrap();
    assert_eq!(store.kept_secrets(instance.id).await.unwrap(), None, "provisioned: forgotten");

    // A provisioning that ends otherwise (a delete under way) forgets them too, and a deleted
    // instance in any case.
    let other = nginx(UserId::new_random(), "db2");
    store.keep_secrets(other.id, "sealed-4").await.unwrap();
    store.create_instance(&other, &event(&other, EventAction::Created)).await.unwrap();
    store.update_status(change(&other, None, InstanceStatus::Deleting)).await.unwrap();
    assert_eq!(store.kept_secrets(other.id).await.unwrap(), None);
    store.keep_secrets(other.id, "sealed-5").await.unwrap();
    store.update_status(change(&other, None, InstanceStatus::Deleted)).await.unwrap();
    assert_eq!(store.kept_secrets(other.id).await.unwrap(), None, "gone with the instance");

    // A create refused after its secrets were kept.
    let refused = nginx(UserId::new_random(), "db");
    store.keep_secrets(refused.id, "sealed-3").await.unwrap();
    store.forget_secrets(refused.id).await.unwrap();
    assert_eq!(store.kept_secrets(refused.id).await.unwrap(), None);
}

async fn the_platforms_secrets_are_kept_until_the_instance_is_deleted(
    store: impl InstanceStore,
    _clock: Arc<ManualClock>,
) {
    let instance = nginx(UserId::new_random(), "db");
    assert_eq!(store.platform_secrets(instance.id).await.unwrap(), None);
    store.keep_secrets(instance.id, "sealed-all").await.unwrap();
    store.keep_platform_secrets(instance.id, "sealed-platform-1").await.unwrap();
    store.create_instance(&instance, &event(&instance, EventAction::Created)).await.unwrap();
    store.keep_platform_secrets(instance.id, "sealed-platform-2").await.unwrap();
    // Provisioned, stopped, started, deleting: the provisioning's go, the platform's stay.
    for to in [
        InstanceStatus::Running,
        InstanceStatus::Stopping,
        InstanceStatus::Stopped,
        InstanceStatus::Starting,
        InstanceStatus::Running,
        InstanceStatus::Deleting,
    ] {
        store.update_status(change(&instance, None, to)).await.unwrap();
        assert_eq!(
            store.platform_secrets(instance.id).await.unwrap().as_deref(),
            Some("sealed-platform-2"),
            "{to}"
        );
    }
    assert_eq!(store.kept_secrets(instance.id).await.unwrap(), None);
    store.update_status(change(&instance, None, InstanceStatus::Deleted)).await.unwrap();
    assert_eq!(store.platform_secrets(instance.id).await.unwrap(), None, "gone with the instance");

    // A create refused after they were kept.
    let refused = nginx(UserId::new_random(), "db");
    store.keep_platform_secrets(refused.id, "sealed-platform-3").await.unwrap();
    store.forget_secrets(refused.id).await.unwrap();
    assert_eq!(store.platform_secrets(refused.id).await.unwrap(), None);
}

async fn a_lease_has_one_holder_until_it_expires_or_is_released(
    store: impl InstanceStore,
    clock: Arc<ManualClock>,
) {
    let engine = "engine-watch:unix:///var/run/docker.sock";
    let advance = |by: Duration| clock.advance(chrono::Duration::from_std(by).unwrap());
    assert_eq!(store.lease_holder(engine).await.unwrap(), None);
    assert_eq!(store.acquire_lease(engine, "a", LEASE).await.unwrap(), Some(1));
    assert_eq!(store.acquire_lease(engine, "b", LEASE).await.unwrap(), None, "a holds it");
    assert_eq!(
        store.acquire_lease("another", "b", LEASE).await.unwrap(),
        Some(1),
        "leases are named"
    );

    // Renewed before it expires, it stays a's, in the same term.
    advance(LEASE - Duration::from_secs(1));
    assert_eq!(store.acquire_lease(engine, "a", LEASE).await.unwrap(), Some(1));
    advance(Duration::from_secs(2));
    assert_eq!(store.acquire_lease(engine, "b", LEASE).await.unwrap(), None);

    // a stops renewing: after expiry b takes it in a new term, and a has lost it.
    advance(LEASE + Duration::from_secs(1));
    let expired = store.lease_holder(engine).await.unwrap().unwrap();
    assert_eq!(expired, LeaseHolder { holder: "a".into(), term: 1, expired: true });
    assert_eq!(store.acquire_lease(engine, "b", LEASE).await.unwrap(), Some(2));
    assert_eq!(store.acquire_lease(engine, "a", LEASE).await.unwrap(), None);

    // Released, it is free at once; a release by another holder changes nothing.
    store.release_lease(engine, "a").await.unwrap();
    assert_eq!(store.acquire_lease(engine, "a", LEASE).await.unwrap(), None);
    store.release_lease(engine, "b").await.unwrap();
    assert_eq!(store.acquire_lease(engine, "a", LEASE).await.unwrap(), Some(3));
    let held = store.lease_holder(engine).await.unwrap().unwrap();
    assert_eq!(held, LeaseHolder { holder: "a".into(), term: 3, expired: false });
}

async fn racing_acquirers_of_a_free_lease_get_one_term(
    store: impl InstanceStore,
    _clock: Arc<ManualClock>,
) {
    let store = Arc::new(store);
    let start = Arc::new(tokio::sync::Barrier::new(8));
    let racers: Vec<_> = (0..8)
        .map(|n| {
            let (store, start) = (store.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                store.acquire_lease("engine", &format!("replica-{n}"), LEASE).await.unwrap()
            })
        })
        .collect();
    let mut won = Vec::new();
    for racer in racers {
        won.extend(racer.await.unwrap());
    }
    assert_eq!(won, [1], "exactly one acquirer, in the first term");
}

async fn a_late_claim_of_an_earlier_job_cannot_settle_the_next_one(
    store: impl InstanceStore,
    clock: Arc<ManualClock>,
) {
    let instance = nginx(UserId::new_random(), "web");
    store.create_instance(&instance, &event(&instance, EventAction::Created)).await.unwrap();
    store.update_status(change(&instance, None, InstanceStatus::Running)).await.unwrap();
    // One restart, claimed by a, whose outcome the watcher records before a settles it.
    store.update_status(change(&instance, None, InstanceStatus::Restarting)).await.unwrap();
    let first = store.claim_due_jobs("a", LEASE, 1).await.unwrap().remove(0);
    store.update_status(change(&instance, None, InstanceStatus::Running)).await.unwrap();
    // The next restart, claimed by a too: the same holder, action and attempt.
    clock.advance(chrono::Duration::seconds(1));
    store.update_status(change(&instance, None, InstanceStatus::Restarting)).await.unwrap();
    let second = store.claim_due_jobs("a", LEASE, 1).await.unwrap().remove(0);
    assert_eq!((second.action, second.attempts), (first.action, first.attempts));
    assert_ne!(second.id, first.id, "each job has an id of its own");
    assert!(!store.complete_job(&first, "a").await.unwrap(), "the first job is gone");
    assert!(!store.retry_job(&first, "a", LEASE, "late").await.unwrap());
    assert!(!store.renew_job(&first, "a", LEASE).await.unwrap());
    assert_eq!(store.job_of(instance.id).await.unwrap(), Some(second.clone()));
    assert!(store.complete_job(&second, "a").await.unwrap());
}

/// A job written by a version that knows an action this one does not (a rolling upgrade): the
/// claim returns the jobs it can read and hands that one back unspent, for a process that knows
/// it.
macro_rules! unknown_action_job_is_handed_back {
    ($store:expr) => {{
        use iaas_core::{InstanceRepository, JobQueue};
        let store = $store;
        let (readable, unknown) =
            (nginx(UserId::new_random(), "web"), nginx(UserId::new_random(), "later"));
        for instance in [&readable, &unknown] {
            store.create_instance(instance, &event(instance, EventAction::Created)).await.unwrap();
        }
        sqlx::query("UPDATE jobs SET action = 'resize' WHERE instance_id = $1")
            .bind(*unknown.id.as_uuid())
            .execute(store.pool())
            .await
            .unwrap();
        let claimed = store.claim_due_jobs("a", LEASE, 10).await.unwrap();
        assert_eq!(claimed.iter().map(|job| job.instance_id).collect::<Vec<_>>(), [readable.id]);
        let (holder, attempts): (Option<String>, i64) =
            sqlx::query_as("SELECT holder, attempts FROM jobs WHERE instance_id = $1")
                .bind(*unknown.id.as_uuid())
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!((holder, attempts), (None, 0), "handed back as it was");
        // Not claimed again at once: the readable jobs come first.
        assert!(store.claim_due_jobs("a", LEASE, 10).await.unwrap().is_empty());
        store
    }};
}

#[tokio::test]
async fn sqlite_a_job_it_cannot_read_is_handed_back() {
    let clock = Arc::new(ManualClock::new(common::start_time()));
    let (store, _file) = common::sqlite(clock).await;
    unknown_action_job_is_handed_back!(store);
}

#[tokio::test]
async fn postgres_a_job_it_cannot_read_is_handed_back() {
    let clock = Arc::new(ManualClock::new(common::start_time()));
    let (store, db, _server) = common::postgres(clock, "unknown_job").await;
    let store = unknown_action_job_is_handed_back!(store);
    store.pool().close().await;
    db.drop_database().await.unwrap();
}
