//! What a platform process leaves on its Kafka broker. Live status and an in-process cluster
//! cache read every event in every process; they read as standalone consumers, so starting and
//! stopping the platform again and again (a rolling restart, a crash loop) adds no consumer
//! group to the broker. Only the configured, shared monitoring group is there afterwards.
//!
//! The broker is a private tansu (`iaas_testkit::tansu`, own port and storage file), so the
//! groups before and after are this test's alone, whatever else runs on the shared broker. The
//! groups are read from the broker's own storage (its `consumer_group` table): tansu 0.6.0 on
//! SQLite cannot answer `ListGroups` once a group has members' state stored (a JSON column it
//! reads back as a string), so asking it over the protocol fails.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use iaas_core::{
    Clock, EventAction, EventPublisher, InfrastructureEvent, InstanceId, InstanceKind, SystemClock,
    UserId,
};
use iaas_events::kafka::KafkaPublisher;
use iaas_platform::Platform;
use iaas_testkit::isolation::{temp_dir, topic_name, unique_name};
use iaas_testkit::tansu::PrivateBroker;
use iaas_testkit::wait::eventually;
use sqlx::{Connection, SqliteConnection};
use tokio::sync::broadcast::error::RecvError;

/// Starts and stops of the platform.
const STARTS: usize = 10;
/// How long a start, a stop or an event's way to live status may take.
const STEP_DEADLINE: Duration = Duration::from_secs(60);

/// The consumer groups the broker keeps, read from its storage file.
async fn groups(broker: &PrivateBroker) -> BTreeSet<String> {
    let url = format!("sqlite://{}?mode=ro", broker.storage().display());
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    let names: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM consumer_group").fetch_all(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    names.into_iter().map(|(name,)| name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_starts_and_stops_leave_no_consumer_group_of_their_own() {
    let Some(bin) = PrivateBroker::binary() else {
        eprintln!(
            "SKIPPED: no tansu binary (~/.cargo/bin/tansu or on PATH); scripts/services.sh builds it"
        );
        return;
    };
    let dir = temp_dir("consumer-groups");
    std::fs::create_dir_all(&dir).unwrap();
    let broker = PrivateBroker::start(bin, &dir).await.unwrap();
    let monitoring_group = unique_name("monitoring");
    // No Redis: the cluster cache lives in the process, so it reads every event itself too.
    let mut settings = common::embedded(&dir.join("data"));
    settings.extend([
        (iaas_platform::KAFKA_BROKERS_VAR, broker.brokers()),
        (iaas_platform::KAFKA_TOPIC_VAR, topic_name("consumer-groups")),
        (iaas_platform::MONITORING_GROUP_VAR, monitoring_group.clone()),
    ]);
    let config = common::config(&settings);
    let publisher =
        KafkaPublisher::new(&iaas_platform::kafka_config(&config, &broker.brokers())).unwrap();
    let before = groups(&broker).await;
    let started = Instant::now();

    for start in 1..=STARTS {
        let platform = tokio::time::timeout(STEP_DEADLINE, Platform::start(&config))
            .await
            .expect("the platform starts within 60 s")
            .unwrap();
        // Each start's live-status reader must have run: an event published now reaches it.
        // It reads from the end of each partition once it has its partitions, so the event is
        // published again until one arrives.
        let live = tokio::sync::Mutex::new(platform.live.watch());
        let user = UserId::new_random();
        eventually(STEP_DEADLINE, || async {
            let event = InfrastructureEvent::new(
                InstanceId::new_random(),
                user,
                InstanceKind::Nginx,
                EventAction::Started,
                SystemClock.now(),
            );
            publisher.publish(&event).await.map_err(|e| e.to_string())?;
            let mut live = live.lock().await;
            let arrived = tokio::time::timeout(Duration::from_millis(500), async {
                loop {
                    match live.recv().await {
                        Ok(update) if update.is_for(user) => return Ok(()),
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(closed) => return Err(closed.to_string()),
                    }
                }
            })
            .await;
            arrived.map_err(|_| "not yet".to_owned())?
        })
        .await
        .unwrap_or_else(|err| panic!("start {start}: no live update: {err}"));
        tokio::time::timeout(STEP_DEADLINE, platform.shutdown())
            .await
            .expect("the platform stops within 60 s");
    }

    let after = groups(&broker).await;
    let new: BTreeSet<_> = after.difference(&before).cloned().collect();
    eprintln!(
        "starts={STARTS} groups_before={} groups_after={} new={new:?} elapsed_ms={}",
        before.len(),
        after.len(),
        started.elapsed().as_millis()
    );
    let expected: BTreeSet<_> = [monitoring_group].into_iter().collect();
    assert!(new.is_subset(&expected), "groups left behind: {new:?}");
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}
