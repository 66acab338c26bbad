//! Two platforms on one Kafka broker and one topic, each with its own monitoring consumer group
//! (`monitoring_group`, `IAAS_MONITORING_GROUP`): each one indexes every event. In one group
//! (the fixed `monitoring-consumer-group` of before) they would split the topic's partitions
//! and each would index only the events the other did not take.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use iaas_core::{
    Clock, EventAction, EventId, EventPublisher, InfrastructureEvent, InstanceId, InstanceKind,
    SystemClock, UserId,
};
use iaas_events::kafka::KafkaPublisher;
use iaas_events::monitoring::{LogIndex, LogQuery};
use iaas_platform::MonitoringService;
use iaas_testkit::isolation::{temp_dir, topic_name, unique_name};
use iaas_testkit::wait::eventually;

/// Events published; keyed by as many instances, so they land on every partition.
const EVENTS: usize = 30;
/// How long starting or stopping a service may take (joining or leaving a group, a commit).
const STEP_DEADLINE: Duration = Duration::from_secs(60);

/// Starts the monitoring service of `config`, bounded by [`STEP_DEADLINE`].
async fn start(config: &iaas_platform::Config) -> MonitoringService {
    tokio::time::timeout(STEP_DEADLINE, MonitoringService::start(config))
        .await
        .expect("the monitoring service starts within 60 s")
        .unwrap()
}

/// The event ids `user` has in `index`.
async fn indexed(index: &dyn LogIndex, user: UserId) -> HashSet<EventId> {
    let page = index.search(&LogQuery::for_user(user).limit(LogQuery::MAX_LIMIT)).await.unwrap();
    page.entries.iter().map(|entry| entry.event_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_platforms_on_one_broker_each_index_every_event_in_their_own_group() {
    let kafka = iaas_testkit::kafka().await.unwrap();
    let topic = topic_name("shared-broker");
    let platform = |name: &str| {
        let data_dir = temp_dir(name);
        let config = common::config(&[
            (iaas_platform::DATA_DIR_VAR, data_dir.display().to_string()),
            (iaas_platform::KAFKA_BROKERS_VAR, kafka.url().to_owned()),
            (iaas_platform::KAFKA_TOPIC_VAR, topic.clone()),
            (iaas_platform::MONITORING_GROUP_VAR, unique_name(name)),
        ]);
        (config, data_dir)
    };
    let (config_a, dir_a) = platform("platform-a");
    let (config_b, dir_b) = platform("platform-b");
    assert_ne!(config_a.monitoring_group, config_b.monitoring_group);
    let a = start(&config_a).await;
    let b = start(&config_b).await;

    let publisher =
        KafkaPublisher::new(&iaas_platform::kafka_config(&config_a, kafka.url())).unwrap();
    let user = UserId::new_random();
    let events: Vec<_> = (0..EVENTS)
        .map(|_| {
            InfrastructureEvent::new(
                InstanceId::new_random(),
                user,
                InstanceKind::Nginx,
                EventAction::Started,
                SystemClock.now(),
            )
        })
        .collect();
    let outcome = publisher.publish_batch(&events).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let expected: HashSet<_> = events.iter().map(|e| e.id).collect();

    eventually(Duration::from_secs(60), || async {
        let (in_a, in_b) =
            (indexed(a.index.as_ref(), user).await, indexed(b.index.as_ref(), user).await);
        if in_a.len() >= EVENTS && in_b.len() >= EVENTS {
            Ok(())
        } else {
            Err(format!("platform a indexed {}, platform b {} of {EVENTS}", in_a.len(), in_b.len()))
        }
    })
    .await
    .unwrap();
    assert_eq!(indexed(a.index.as_ref(), user).await, expected, "platform a: every event");
    assert_eq!(indexed(b.index.as_ref(), user).await, expected, "platform b: every event");

    for service in [a, b] {
        tokio::time::timeout(STEP_DEADLINE, service.shutdown())
            .await
            .expect("the monitoring consumer stops within 60 s");
    }
    std::fs::remove_dir_all(dir_a).unwrap();
    std::fs::remove_dir_all(dir_b).unwrap();
}
