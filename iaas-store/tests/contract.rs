//! The store contract, run against SQLite and PostgreSQL alike.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{InstanceStore, Store, change, event, nginx, user};
use iaas_core::memory::RecordingHandler;
use iaas_core::{
    Clock, Error, EventAction, EventHandler, InstanceRepository, InstanceStatus, ManualClock,
    Outbox, Quota, QuotaLimit, QuotaOverride, UserId,
};

const LEASE: Duration = Duration::from_secs(30);

on_every_backend!(
    a_duplicate_username_is_a_conflict,
    users_are_found_and_their_password_changes,
    a_failed_event_write_leaves_no_instance,
    instance_names_are_unique_per_owner_until_deleted,
    a_stale_writer_gets_a_conflict_and_changes_nothing,
    concurrent_observers_both_land,
    many_concurrent_reads_beside_writes_all_answer,
    illegal_transitions_are_refused,
    events_come_out_in_per_instance_order,
    concurrent_relays_never_claim_the_same_entry,
    a_crash_before_mark_sent_resends_with_the_same_event_id,
    stats_and_retention_follow_the_clock,
    a_parked_entry_is_skipped_until_retried_or_dropped,
    concurrent_creates_never_overshoot_a_quota,
    quota_overrides_are_stored_per_user,
    scopes_change,
);

on_every_instance_backend!(
    recorded_events_keep_their_place,
    recording_needs_a_live_instance,
    recording_racing_status_changes,
);

/// `record_event` appends after the instance's earlier events and before its later ones, and
/// touches neither status, version nor `updated_at`.
async fn recorded_events_keep_their_place(store: impl InstanceStore, clock: Arc<ManualClock>) {
    let (web, other) = (nginx(UserId::new_random(), "web"), nginx(UserId::new_random(), "other"));
    let created = event(&web, EventAction::Created);
    store.create_instance(&web, &created).await.unwrap();
    store.create_instance(&other, &event(&other, EventAction::Created)).await.unwrap();
    let started = change(&web, Some(0), InstanceStatus::Running);
    let started_id = started.event.id;
    let before = store.update_status(started).await.unwrap();

    clock.advance(chrono::Duration::seconds(5));
    let failover = event(&web, EventAction::Failover).with_metadata("primary", "web-1");
    store.record_event(&failover).await.unwrap();
    let backup = event(&web, EventAction::Other("backup_taken".into()));
    store.record_event(&backup).await.unwrap();
    let after = store.get_instance(web.id).await.unwrap().unwrap();
    assert_eq!(after, before, "status, version and updated_at unchanged");

    // The version the caller read before the events is still current.
    let stopped = change(&web, Some(before.version), InstanceStatus::Stopped);
    let stopped_id = stopped.event.id;
    store.update_status(stopped).await.unwrap();

    let claimed = store.claim("relay", 100, LEASE).await.unwrap();
    assert!(claimed.windows(2).all(|w| w[0].seq < w[1].seq));
    let ids: Vec<_> =
        claimed.iter().filter(|e| e.event.instance_id == web.id).map(|e| e.event.id).collect();
    assert_eq!(ids, [created.id, started_id, failover.id, backup.id, stopped_id]);
    let recorded = claimed.iter().find(|e| e.event.id == failover.id).unwrap();
    assert_eq!(recorded.event, failover, "the payload is the event as recorded");
    assert_eq!(recorded.created_at, clock.now());
    assert_eq!(store.stats().await.unwrap().pending, 6);
}

/// Unknown instance: `NotFound`; deleted one: `Conflict`; neither writes anything.
async fn recording_needs_a_live_instance(store: impl InstanceStore, _clock: Arc<ManualClock>) {
    let ghost = nginx(UserId::new_random(), "ghost");
    let err = store.record_event(&event(&ghost, EventAction::Failover)).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { entity: "instance", .. }), "{err}");
    assert_eq!(store.stats().await.unwrap().pending, 0);

    let web = nginx(UserId::new_random(), "web");
    store.create_instance(&web, &event(&web, EventAction::Created)).await.unwrap();
    // A deleting instance still takes events: its `deleted` one has not been written yet.
    store.update_status(change(&web, None, InstanceStatus::Deleting)).await.unwrap();
    store.record_event(&event(&web, EventAction::Other("backup_taken".into()))).await.unwrap();
    let deleted = store.update_status(change(&web, None, InstanceStatus::Deleted)).await.unwrap();
    let err = store.record_event(&event(&web, EventAction::Failover)).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { entity: "instance", .. }), "{err}");
    assert_eq!(store.get_instance(web.id).await.unwrap(), Some(deleted));
    let claimed = store.claim("relay", 100, LEASE).await.unwrap();
    let names: Vec<_> = claimed.iter().map(|e| e.event.name()).collect();
    assert_eq!(names, ["nginx.created", "nginx.deleting", "nginx.backup_taken", "nginx.deleted"]);
}

/// Events recorded from several tasks while another walks the instance through status changes,
/// each with the version it read, and a relay publishes meanwhile: no change fails on a version
/// bump, no event is lost or doubled, and the relay publishes in commit order (each writer's
/// events in the order it wrote them), never an entry behind one it already published.
async fn recording_racing_status_changes(store: impl InstanceStore, _clock: Arc<ManualClock>) {
    const RECORDERS: usize = 3;
    const EVENTS: usize = 10;
    const CHANGES: u64 = 12;
    let store = Arc::new(store);
    let web = nginx(UserId::new_random(), "web");
    let created = event(&web, EventAction::Created);
    store.create_instance(&web, &created).await.unwrap();

    let start = Arc::new(tokio::sync::Barrier::new(RECORDERS + 2));
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let relay = {
        let (store, start, writing) = (store.clone(), start.clone(), writing.clone());
        tokio::spawn(async move {
            start.wait().await;
            let mut published = Vec::new();
            loop {
                // Read the flag first: a claim after the writers finished sees all they wrote.
                let last_round = !writing.load(std::sync::atomic::Ordering::SeqCst);
                let claimed = store.claim("relay", 4, LEASE).await.unwrap();
                if claimed.is_empty() && last_round {
                    return published;
                }
                let seqs: Vec<_> = claimed.iter().map(|e| e.seq).collect();
                store.mark_sent("relay", &seqs).await.unwrap();
                published.extend(claimed);
                tokio::task::yield_now().await;
            }
        })
    };
    let recorders: Vec<_> = (0..RECORDERS)
        .map(|r| {
            let (store, start, web) = (store.clone(), start.clone(), web.clone());
            tokio::spawn(async move {
                start.wait().await;
                let mut ids = Vec::new();
                for n in 0..EVENTS {
                    let recorded = event(&web, EventAction::Failover)
                        .with_metadata("recorder", r.to_string())
                        .with_metadata("n", n.to_string());
                    store.record_event(&recorded).await.unwrap();
                    ids.push(recorded.id);
                    tokio::task::yield_now().await;
                }
                ids
            })
        })
        .collect();
    let changer = {
        let (store, start, web) = (store.clone(), start.clone(), web.clone());
        tokio::spawn(async move {
            start.wait().await;
            let mut ids = Vec::new();
            for version in 0..CHANGES {
                let to = if version % 2 == 0 {
                    InstanceStatus::Running
                } else {
                    InstanceStatus::Stopped
                };
                let change = change(&web, Some(version), to);
                ids.push(change.event.id);
                let stored = store.update_status(change).await.unwrap();
                assert_eq!(stored.version, version + 1);
                tokio::task::yield_now().await;
            }
            ids
        })
    };
    let mut writers = vec![changer.await.unwrap()];
    for recorder in recorders {
        writers.push(recorder.await.unwrap());
    }
    writing.store(false, std::sync::atomic::Ordering::SeqCst);
    let published = relay.await.unwrap();

    let stored = store.get_instance(web.id).await.unwrap().unwrap();
    assert_eq!((stored.version, stored.status), (CHANGES, InstanceStatus::Stopped));
    assert!(
        published.windows(2).all(|w| w[0].seq < w[1].seq),
        "published out of commit order: {:?}",
        published.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    let expected = 1 + CHANGES as usize + RECORDERS * EVENTS;
    assert_eq!(published.len(), expected, "every event published once");
    let unique: HashSet<_> = published.iter().map(|e| e.event.id).collect();
    assert_eq!(unique.len(), expected, "no event doubled");
    assert_eq!(published[0].event.id, created.id);
    let position: HashMap<_, _> =
        published.iter().enumerate().map(|(i, e)| (e.event.id, i)).collect();
    for ids in &writers {
        let at: Vec<_> = ids.iter().map(|id| position[id]).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "a writer's events out of order: {at:?}");
    }
    assert_eq!(store.stats().await.unwrap().pending, 0);
}

/// PostgreSQL, where writers really run side by side: `record_event` waits for a transaction
/// that holds the instance's row, then decides on what that one committed (a delete refuses
/// the event), so its entry can never be published ahead of, or after, a concurrent writer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_recording_waits_for_the_instance_row() {
    use sqlx::{Connection, PgConnection};
    let clock = Arc::new(ManualClock::new(common::start_time()));
    let (store, db, _server) = common::postgres(clock, "recording_row_lock").await;
    let web = nginx(UserId::new_random(), "web");
    store.create_instance(&web, &event(&web, EventAction::Created)).await.unwrap();

    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    let mut deleting = conn.begin().await.unwrap();
    sqlx::query("UPDATE instances SET status = 'deleted', version = version + 1 WHERE id = $1")
        .bind(*web.id.as_uuid())
        .execute(&mut *deleting)
        .await
        .unwrap();
    let recording = tokio::spawn({
        let (store, failover) = (store.clone(), event(&web, EventAction::Failover));
        async move { store.record_event(&failover).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!recording.is_finished(), "record_event went past a writer holding the row");
    deleting.commit().await.unwrap();
    let err = recording.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Conflict { entity: "instance", .. }), "{err}");
    assert_eq!(store.stats().await.unwrap().pending, 1, "only the created event");

    conn.close().await.unwrap();
    store.pool().close().await;
    db.drop_database().await.unwrap();
}

/// 20 creates of one owner at once against a quota of 5 instances: exactly 5 are stored, every
/// other one is refused with the limit named, and another owner is not held back by them.
async fn concurrent_creates_never_overshoot_a_quota(store: impl Store, _clock: Arc<ManualClock>) {
    let quota = Quota { instances: 5, ..Quota::default() };
    let owner = UserId::new_random();
    let tasks: Vec<_> = (0..20)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let instance = nginx(owner, &format!("web-{n}"));
                store
                    .create_instance_within(
                        &instance,
                        &event(&instance, EventAction::Created),
                        &quota,
                    )
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => created += 1,
            Err(Error::QuotaExceeded(exceeded)) => {
                assert_eq!(exceeded.limit, QuotaLimit::Instances);
                assert_eq!((exceeded.allowed, exceeded.used, exceeded.requested), (5, 5, 1));
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(created, 5);
    assert_eq!(store.list_instances_by_owner(owner).await.unwrap().len(), 5);
    assert_eq!(store.stats().await.unwrap().pending, 5, "no event of a refused create");

    // A deleted instance frees its place.
    let first = store.list_instances_by_owner(owner).await.unwrap().remove(0);
    store.update_status(change(&first, None, InstanceStatus::Deleted)).await.unwrap();
    let sixth = nginx(owner, "web-again");
    store
        .create_instance_within(&sixth, &event(&sixth, EventAction::Created), &quota)
        .await
        .unwrap();

    let other = nginx(UserId::new_random(), "web-0");
    store
        .create_instance_within(&other, &event(&other, EventAction::Created), &quota)
        .await
        .unwrap();
}

async fn quota_overrides_are_stored_per_user(store: impl Store, clock: Arc<ManualClock>) {
    let (ada, bob) = (UserId::new_random(), UserId::new_random());
    assert_eq!(store.quota_override(ada).await.unwrap(), None);
    let more =
        QuotaOverride { instances: Some(50), memory_mib: Some(65_536), ..QuotaOverride::default() };
    store.set_quota_override(ada, &more, clock.now()).await.unwrap();
    assert_eq!(store.quota_override(ada).await.unwrap(), Some(more));
    assert_eq!(store.quota_override(bob).await.unwrap(), None);
    let fewer = QuotaOverride { instances: Some(1), ..QuotaOverride::default() };
    store.set_quota_override(ada, &fewer, clock.now()).await.unwrap();
    assert_eq!(store.quota_override(ada).await.unwrap(), Some(fewer));
    store.set_quota_override(ada, &QuotaOverride::default(), clock.now()).await.unwrap();
    assert_eq!(store.quota_override(ada).await.unwrap(), None, "an empty override removes it");
}

async fn scopes_change(store: impl Store, _clock: Arc<ManualClock>) {
    let ada = user("ada");
    store.create_user(&ada).await.unwrap();
    let scopes = vec!["instances:read".to_owned(), "admin".to_owned()];
    store.set_scopes(ada.id, &scopes).await.unwrap();
    assert_eq!(store.get_user(ada.id).await.unwrap().unwrap().scopes, scopes);
    let err = store.set_scopes(UserId::new_random(), &scopes).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { entity: "user", .. }), "{err}");
}

async fn a_duplicate_username_is_a_conflict(store: impl Store, _clock: Arc<ManualClock>) {
    store.create_user(&user("ada")).await.unwrap();
    let err = store.create_user(&user("ada")).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { entity: "user", .. }), "{err}");
}

async fn users_are_found_and_their_password_changes(store: impl Store, clock: Arc<ManualClock>) {
    let ada = user("ada");
    store.create_user(&ada).await.unwrap();
    assert_eq!(store.get_user(ada.id).await.unwrap(), Some(ada.clone()));
    assert_eq!(store.find_user_by_username("ada").await.unwrap(), Some(ada.clone()));
    assert_eq!(store.find_user_by_username("bob").await.unwrap(), None);

    clock.advance(chrono::Duration::minutes(5));
    store.set_password_hash(ada.id, "$argon2id$new", clock.now()).await.unwrap();
    let stored = store.get_user(ada.id).await.unwrap().unwrap();
    assert_eq!(stored.password_hash, "$argon2id$new");
    assert_eq!(stored.password_changed_at, clock.now());

    let err = store.set_password_hash(UserId::new_random(), "x", clock.now()).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { entity: "user", .. }), "{err}");
}

async fn a_failed_event_write_leaves_no_instance(store: impl Store, _clock: Arc<ManualClock>) {
    let owner = UserId::new_random();
    let first = nginx(owner, "first");
    let created = event(&first, EventAction::Created);
    store.create_instance(&first, &created).await.unwrap();

    // The second instance's row is written, then its event fails (the id is taken): the
    // transaction must take the instance row with it.
    let second = nginx(owner, "second");
    let mut clashing = event(&second, EventAction::Created);
    clashing.id = created.id;
    let err = store.create_instance(&second, &clashing).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(store.get_instance(second.id).await.unwrap(), None);
    assert_eq!(store.stats().await.unwrap().pending, 1);
    assert_eq!(store.list_instances_by_owner(owner).await.unwrap(), vec![first]);
}

async fn instance_names_are_unique_per_owner_until_deleted(
    store: impl Store,
    _clock: Arc<ManualClock>,
) {
    let owner = UserId::new_random();
    let web = nginx(owner, "web");
    store.create_instance(&web, &event(&web, EventAction::Created)).await.unwrap();
    let again = nginx(owner, "web");
    let err =
        store.create_instance(&again, &event(&again, EventAction::Created)).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { entity: "instance", .. }), "{err}");

    let elsewhere = nginx(UserId::new_random(), "web");
    store.create_instance(&elsewhere, &event(&elsewhere, EventAction::Created)).await.unwrap();

    store.update_status(change(&web, None, InstanceStatus::Deleted)).await.unwrap();
    store.create_instance(&again, &event(&again, EventAction::Created)).await.unwrap();
    let active: HashSet<_> =
        store.list_active_instances().await.unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(active, HashSet::from([again.id, elsewhere.id]));
}

async fn a_stale_writer_gets_a_conflict_and_changes_nothing(
    store: impl Store,
    _clock: Arc<ManualClock>,
) {
    let web = nginx(UserId::new_random(), "web");
    store.create_instance(&web, &event(&web, EventAction::Created)).await.unwrap();
    let running =
        store.update_status(change(&web, Some(0), InstanceStatus::Running)).await.unwrap();
    assert_eq!((running.status, running.version), (InstanceStatus::Running, 1));

    let err =
        store.update_status(change(&web, Some(0), InstanceStatus::Stopped)).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    let stored = store.get_instance(web.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.version), (InstanceStatus::Running, 1));
    assert_eq!(store.stats().await.unwrap().pending, 2, "no event for the refused change");

    // Re-applying the current status writes nothing.
    let same = store.update_status(change(&web, None, InstanceStatus::Running)).await.unwrap();
    assert_eq!(same.version, 1);
    assert_eq!(store.stats().await.unwrap().pending, 2);
}

async fn concurrent_observers_both_land(store: impl Store, _clock: Arc<ManualClock>) {
    // Two writers without an expected version (Docker events) race on one instance: both
    // changes are applied, one after the other, each with its event.
    let web = nginx(UserId::new_random(), "web");
    store.create_instance(&web, &event(&web, EventAction::Created)).await.unwrap();
    let (a, b) = tokio::join!(
        store.update_status(change(&web, None, InstanceStatus::Running)),
        store.update_status(change(&web, None, InstanceStatus::Failed)),
    );
    a.unwrap();
    b.unwrap();
    let stored = store.get_instance(web.id).await.unwrap().unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(store.stats().await.unwrap().pending, 3);
}

async fn many_concurrent_reads_beside_writes_all_answer(
    store: impl Store,
    _clock: Arc<ManualClock>,
) {
    // Far more reads in flight than the store has reading connections, beside status writes:
    // each read waits for a free connection and sees a committed state; none fails or hangs.
    let owner = UserId::new_random();
    let web = nginx(owner, "web");
    store.create_instance(&web, &event(&web, EventAction::Created)).await.unwrap();
    let reads = (0..64).map(|_| async {
        let listed = store.list_instances_by_owner(owner).await.unwrap();
        assert_eq!(listed.len(), 1);
        store.get_instance(web.id).await.unwrap().expect("the instance is found")
    });
    let writes = async {
        store.update_status(change(&web, None, InstanceStatus::Running)).await.unwrap();
        store.update_status(change(&web, None, InstanceStatus::Stopping)).await.unwrap();
    };
    let (read, ()) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(futures_util::future::join_all(reads), writes)
    })
    .await
    .expect("every read answers within 30 s");
    assert_eq!(read.len(), 64);
    assert!(read.iter().all(|instance| instance.version <= 2), "only committed versions");
    let stored = store.get_instance(web.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.version), (InstanceStatus::Stopping, 2));
}

async fn illegal_transitions_are_refused(store: impl Store, _clock: Arc<ManualClock>) {
    let web = nginx(UserId::new_random(), "web");
    store.create_instance(&web, &event(&web, EventAction::Created)).await.unwrap();
    store.update_status(change(&web, None, InstanceStatus::Deleted)).await.unwrap();
    let err = store.update_status(change(&web, None, InstanceStatus::Running)).await.unwrap_err();
    assert!(matches!(err, Error::InvalidTransition(_)), "{err}");
    let missing = nginx(UserId::new_random(), "ghost");
    let err =
        store.update_status(change(&missing, None, InstanceStatus::Running)).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

async fn events_come_out_in_per_instance_order(store: impl Store, _clock: Arc<ManualClock>) {
    let owner = UserId::new_random();
    let instances: Vec<_> = (0..3).map(|i| nginx(owner, &format!("web-{i}"))).collect();
    let mut written: HashMap<_, Vec<_>> = HashMap::new();
    for instance in &instances {
        let created = event(instance, EventAction::Created);
        store.create_instance(instance, &created).await.unwrap();
        written.entry(instance.id).or_default().push(created.id);
    }
    // Interleave status changes across the instances.
    for to in [InstanceStatus::Running, InstanceStatus::Stopped, InstanceStatus::Running] {
        for instance in &instances {
            let change = change(instance, None, to);
            written.entry(instance.id).or_default().push(change.event.id);
            store.update_status(change).await.unwrap();
        }
    }
    let claimed = store.claim("relay", 100, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 12);
    assert!(claimed.windows(2).all(|w| w[0].seq < w[1].seq));
    let mut read: HashMap<_, Vec<_>> = HashMap::new();
    for entry in &claimed {
        read.entry(entry.event.instance_id).or_default().push(entry.event.id);
    }
    assert_eq!(read, written);
    // The payload is the event as written.
    let names: Vec<_> = claimed
        .iter()
        .filter(|e| e.event.instance_id == instances[0].id)
        .map(|e| e.event.name())
        .collect();
    assert_eq!(names, ["nginx.created", "nginx.started", "nginx.stopped", "nginx.started"]);
}

async fn concurrent_relays_never_claim_the_same_entry(store: impl Store, _clock: Arc<ManualClock>) {
    const INSTANCES: usize = 12;
    const CHANGES: usize = 6;
    let owner = UserId::new_random();
    let mut expected = 0;
    for i in 0..INSTANCES {
        let instance = nginx(owner, &format!("svc-{i}"));
        store.create_instance(&instance, &event(&instance, EventAction::Created)).await.unwrap();
        expected += 1;
        for step in 0..CHANGES {
            let to = if step % 2 == 0 { InstanceStatus::Running } else { InstanceStatus::Stopped };
            store.update_status(change(&instance, None, to)).await.unwrap();
            expected += 1;
        }
    }

    // Every claim is logged, in the order the claims returned, under one lock.
    let log: Arc<Mutex<Vec<(String, u64, iaas_core::InstanceId)>>> = Arc::default();
    let start = Arc::new(tokio::sync::Barrier::new(4));
    let relays: Vec<_> = (0..4)
        .map(|r| {
            let store = store.clone();
            let log = log.clone();
            let start = start.clone();
            tokio::spawn(async move {
                let relay = format!("relay-{r}");
                start.wait().await;
                let mut idle_rounds = 0;
                while idle_rounds < 20 {
                    let claimed = store.claim(&relay, 3, LEASE).await.unwrap();
                    if claimed.is_empty() {
                        idle_rounds += 1;
                        tokio::task::yield_now().await;
                        continue;
                    }
                    idle_rounds = 0;
                    log.lock().unwrap().extend(
                        claimed.iter().map(|e| (relay.clone(), e.seq, e.event.instance_id)),
                    );
                    let seqs: Vec<_> = claimed.iter().map(|e| e.seq).collect();
                    store.mark_sent(&relay, &seqs).await.unwrap();
                }
            })
        })
        .collect();
    for relay in relays {
        relay.await.unwrap();
    }

    let log = log.lock().unwrap().clone();
    let mut claims_per_seq: BTreeMap<u64, usize> = BTreeMap::new();
    for (_, seq, _) in &log {
        *claims_per_seq.entry(*seq).or_default() += 1;
    }
    assert_eq!(claims_per_seq.len(), expected, "every entry was claimed");
    assert!(
        claims_per_seq.values().all(|&n| n == 1),
        "an entry was claimed twice: {claims_per_seq:?}"
    );
    let mut last_seq: HashMap<_, u64> = HashMap::new();
    for (relay, seq, instance) in &log {
        let previous = last_seq.insert(*instance, *seq).unwrap_or(0);
        assert!(
            previous < *seq,
            "{relay} published entry {seq} of {instance} after entry {previous}"
        );
    }
    assert_eq!(store.stats().await.unwrap().pending, 0);
    let relays_used: HashSet<_> = log.iter().map(|(relay, ..)| relay.clone()).collect();
    eprintln!("{} entries over {} relays", log.len(), relays_used.len());
}

async fn a_crash_before_mark_sent_resends_with_the_same_event_id(
    store: impl Store,
    clock: Arc<ManualClock>,
) {
    let web = nginx(UserId::new_random(), "web");
    store.create_instance(&web, &event(&web, EventAction::Created)).await.unwrap();
    store.update_status(change(&web, None, InstanceStatus::Running)).await.unwrap();
    let consumer = RecordingHandler::new();

    // relay-1 publishes, then dies before marking the entries sent.
    let published = store.claim("relay-1", 10, LEASE).await.unwrap();
    for entry in &published {
        consumer.handle(&entry.event).await.unwrap();
    }
    assert!(store.claim("relay-2", 10, LEASE).await.unwrap().is_empty(), "the lease still holds");

    clock.advance(chrono::Duration::seconds(31));
    let resent = store.claim("relay-2", 10, LEASE).await.unwrap();
    assert_eq!(resent, published);
    for entry in &resent {
        consumer.handle(&entry.event).await.unwrap();
    }
    store.mark_sent("relay-2", &resent.iter().map(|e| e.seq).collect::<Vec<_>>()).await.unwrap();

    assert_eq!(consumer.events().len(), 2, "each event handled once");
    assert_eq!(consumer.duplicates(), 2, "the redelivered copies were recognised");
    assert_eq!(store.stats().await.unwrap().pending, 0);
}

async fn stats_and_retention_follow_the_clock(store: impl Store, clock: Arc<ManualClock>) {
    let owner = UserId::new_random();
    let (a, b) = (nginx(owner, "a"), nginx(owner, "b"));
    store.create_instance(&a, &event(&a, EventAction::Created)).await.unwrap();
    clock.advance(chrono::Duration::seconds(10));
    store.create_instance(&b, &event(&b, EventAction::Created)).await.unwrap();

    let stats = store.stats().await.unwrap();
    assert_eq!(stats.pending, 2);
    assert_eq!(stats.oldest_pending_age(clock.now()), Duration::from_secs(10));

    let first = store.claim("relay", 1, LEASE).await.unwrap();
    assert_eq!(first[0].event.instance_id, a.id);
    store.mark_sent("relay", &[first[0].seq]).await.unwrap();
    store.release("relay").await.unwrap();

    clock.advance(chrono::Duration::hours(24));
    assert_eq!(
        store.purge_sent(clock.now() - chrono::Duration::hours(48)).await.unwrap(),
        0,
        "within retention"
    );
    assert_eq!(store.purge_sent(clock.now()).await.unwrap(), 1);
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.pending, 1, "unsent entries are never purged");
    assert_eq!(store.claim("other", 10, LEASE).await.unwrap()[0].event.instance_id, b.id);
}

async fn a_parked_entry_is_skipped_until_retried_or_dropped(
    store: impl Store,
    _clock: Arc<ManualClock>,
) {
    let owner = UserId::new_random();
    let web = nginx(owner, "web");
    store.create_instance(&web, &event(&web, EventAction::Created)).await.unwrap();
    for to in [InstanceStatus::Running, InstanceStatus::Stopped] {
        store.update_status(change(&web, None, to)).await.unwrap();
    }
    let claimed = store.claim("relay", 10, LEASE).await.unwrap();
    let poison = claimed[0].seq;
    assert_eq!(store.record_failure(poison, "too large").await.unwrap(), 1);
    assert_eq!(store.record_failure(poison, "too large, again").await.unwrap(), 2);
    store.park(poison, "too large, for good").await.unwrap();
    store.release("relay").await.unwrap();

    // The entries behind it, of the same instance, are claimed in order without it.
    let next: Vec<u64> =
        store.claim("relay", 10, LEASE).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(next, [claimed[1].seq, claimed[2].seq]);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.pending, stats.parked), (2, 1));
    assert_eq!(
        store.record_failure(poison, "x").await.unwrap(),
        0,
        "a parked entry is not counted"
    );
    let parked = store.parked(10).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(
        (parked[0].entry.seq, parked[0].attempts, parked[0].error.as_str()),
        (poison, 2, "too large, for good")
    );
    assert_eq!(parked[0].entry.event.id, claimed[0].event.id);
    store.mark_sent("relay", &next).await.unwrap();

    // Retried: back in line with its attempts reset.
    assert!(store.retry_parked(poison).await.unwrap());
    assert!(!store.retry_parked(poison).await.unwrap(), "no longer parked");
    let again = store.claim("relay", 10, LEASE).await.unwrap();
    assert_eq!(again.iter().map(|e| e.seq).collect::<Vec<_>>(), [poison]);
    assert_eq!(store.record_failure(poison, "still too large").await.unwrap(), 1);
    store.park(poison, "still too large").await.unwrap();
    store.release("relay").await.unwrap();

    // Dropped: gone for good.
    assert!(!store.drop_parked(claimed[1].seq).await.unwrap(), "a sent entry is not parked");
    assert!(store.drop_parked(poison).await.unwrap());
    assert!(store.parked(10).await.unwrap().is_empty());
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.pending, stats.parked), (0, 0));
    assert!(store.claim("relay", 10, LEASE).await.unwrap().is_empty());
}
