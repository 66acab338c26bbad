//! The in-process bus behind the relay: every group gets every event, losslessly.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use common::write_events;
use iaas_core::memory::{MemoryInstanceRepository, RecordingHandler};
use iaas_core::{EventHandler, HandlerError, InfrastructureEvent, Outbox, SystemClock};
use iaas_events::{Backoff, InProcessBus, OutboxRelay, RelayConfig, Round};

struct Failing {
    transient_left: AtomicU32,
    permanent_for: Option<iaas_core::EventId>,
    inner: RecordingHandler,
}

#[async_trait]
impl EventHandler for Failing {
    fn name(&self) -> &str {
        "failing"
    }

    async fn handle(&self, event: &InfrastructureEvent) -> Result<(), HandlerError> {
        if Some(event.id) == self.permanent_for {
            return Err(HandlerError::Permanent("cannot index this".into()));
        }
        if self
            .transient_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(HandlerError::Transient("index down".into()));
        }
        self.inner.handle(event).await
    }
}

async fn drain(relay: &OutboxRelay) {
    for _ in 0..100 {
        match relay.round().await {
            Round::Idle => return,
            Round::Published(_) | Round::Failed { .. } | Round::Parked { .. } => {}
        }
    }
    panic!("the relay never went idle");
}

#[tokio::test]
async fn every_group_gets_every_event_despite_failures() {
    let repo = Arc::new(MemoryInstanceRepository::new());
    let written = write_events(repo.as_ref(), 3, 4).await;
    let poison = *written.values().next().unwrap().last().unwrap();

    // No retries inside the bus: the relay's retries are what this test is about.
    let bus = Arc::new(InProcessBus::with_retry(Backoff::default(), 0));
    let steady = Arc::new(RecordingHandler::new());
    let flaky = Arc::new(Failing {
        transient_left: AtomicU32::new(3),
        permanent_for: Some(poison),
        inner: RecordingHandler::new(),
    });
    bus.subscribe("monitoring", steady.clone());
    bus.subscribe("cache", flaky.clone());

    let relay = OutboxRelay::new(
        repo.clone(),
        bus.clone(),
        Arc::new(SystemClock),
        RelayConfig::new("embedded"),
    );
    drain(&relay).await;

    assert_eq!(repo.stats().await.unwrap().pending, 0);
    assert_eq!(steady.events().len(), 15, "every event once");
    assert!(steady.duplicates() > 0, "transient failures of the other group caused redeliveries");
    assert_eq!(flaky.inner.events().len(), 14, "all but the poison");
    let dead = bus.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].group.as_str(), dead[0].event.id), ("cache", poison));
    // Per-instance order for the group that saw everything.
    for (instance, ids) in written {
        let seen: Vec<_> = steady
            .events()
            .into_iter()
            .filter(|e| e.instance_id == instance)
            .map(|e| e.id)
            .collect();
        assert_eq!(seen, ids);
    }
}
