//! The relay against in-memory collaborators: order, outages, shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::write_events;
use iaas_core::memory::{MemoryInstanceRepository, MemoryPublisher};
use iaas_core::{InfrastructureEvent, Outbox, SystemClock};
use iaas_events::{Backoff, OutboxRelay, RelayConfig, Round};
use iaas_testkit::wait::eventually;
use tokio_util::sync::CancellationToken;

fn per_instance(
    events: &[InfrastructureEvent],
) -> HashMap<iaas_core::InstanceId, Vec<iaas_core::EventId>> {
    let mut seen: HashMap<_, Vec<_>> = HashMap::new();
    for event in events {
        seen.entry(event.instance_id).or_default().push(event.id);
    }
    seen
}

fn fast_config(name: &str) -> RelayConfig {
    let mut config = RelayConfig::new(name);
    config.batch_size = 7;
    config.idle_interval = Duration::from_millis(10);
    config.backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
    config.stats_interval = Duration::from_millis(10);
    config
}

#[tokio::test]
async fn everything_written_is_published_once_in_per_instance_order() {
    let repo = Arc::new(MemoryInstanceRepository::new());
    let publisher = Arc::new(MemoryPublisher::new());
    let written = write_events(repo.as_ref(), 6, 5).await;
    let relay =
        OutboxRelay::new(repo.clone(), publisher.clone(), Arc::new(SystemClock), fast_config("r1"));

    let mut rounds = 0;
    loop {
        match relay.round().await {
            Round::Published(_) => rounds += 1,
            Round::Idle => break,
            Round::Failed { error, .. } => panic!("{error}"),
            Round::Parked { seq, .. } => panic!("entry {seq} parked"),
        }
    }
    assert_eq!(rounds, 36usize.div_ceil(7));
    assert_eq!(per_instance(&publisher.published()), written);
    assert_eq!(publisher.published().len(), 36, "no duplicates");
    assert_eq!(relay.stats().published, 36);
    assert_eq!(repo.stats().await.unwrap().pending, 0);
}

#[tokio::test]
async fn a_bus_outage_delays_events_and_loses_none() {
    let repo = Arc::new(MemoryInstanceRepository::new());
    let publisher = Arc::new(MemoryPublisher::new());
    let relay = Arc::new(OutboxRelay::new(
        repo.clone(),
        publisher.clone(),
        Arc::new(SystemClock),
        fast_config("r1"),
    ));
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let relay = relay.clone();
        let cancel = cancel.clone();
        async move { relay.run(cancel).await }
    });

    publisher.set_unavailable(true);
    let written = write_events(repo.as_ref(), 4, 3).await;
    relay.wake();
    eventually(Duration::from_secs(10), || async {
        let stats = relay.stats();
        if stats.publish_failures >= 3 && stats.pending == 16 { Ok(stats) } else { Err(stats) }
    })
    .await
    .unwrap();
    assert!(publisher.published().is_empty());

    publisher.set_unavailable(false);
    eventually(Duration::from_secs(10), || async {
        let stats = relay.stats();
        if stats.published == 16 && stats.pending == 0 { Ok(()) } else { Err(stats) }
    })
    .await
    .unwrap();
    assert_eq!(per_instance(&publisher.published()), written);
    assert_eq!(publisher.published().len(), 16);

    cancel.cancel();
    let report = tokio::time::timeout(Duration::from_secs(5), running).await.unwrap().unwrap();
    assert!(report.released_claims);
    assert_eq!(report.stats.published, 16);
}

#[tokio::test]
async fn a_stopped_relay_hands_its_claims_over_at_once() {
    let repo = Arc::new(MemoryInstanceRepository::new());
    let publisher = Arc::new(MemoryPublisher::new());
    write_events(repo.as_ref(), 1, 1).await;
    // r1 claims, then stops before publishing anything.
    let claimed = repo.claim("r1", 10, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let r1 =
        OutboxRelay::new(repo.clone(), publisher.clone(), Arc::new(SystemClock), fast_config("r1"));
    let cancel = CancellationToken::new();
    cancel.cancel();
    assert!(r1.run(cancel).await.released_claims);

    let r2 =
        OutboxRelay::new(repo.clone(), publisher.clone(), Arc::new(SystemClock), fast_config("r2"));
    assert!(matches!(r2.round().await, Round::Published(2)));
}
