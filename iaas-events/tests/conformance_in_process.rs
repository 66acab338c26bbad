//! The conformance suite on the in-process bus, configured as the platform runs it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod conformance;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use conformance::{
    BoxFuture, BusUnderTest, Capabilities, DELIVERY_DEADLINE, Letter, RunningMember, Support,
    conformance_suite,
};
use iaas_core::{EventHandler, EventPublisher, InfrastructureEvent};
use iaas_events::{InProcessBus, Subscription};
use iaas_testkit::wait::eventually;

struct InProcess {
    bus: InProcessBus,
}

async fn in_process_bus(_case: &str) -> Arc<dyn BusUnderTest> {
    Arc::new(InProcess { bus: InProcessBus::new() })
}

struct Member(Subscription);

impl RunningMember for Member {
    fn stop(self: Box<Self>) -> BoxFuture<()> {
        // `leave` takes the member out at once; the future waits for its event in flight.
        Box::pin(self.0.leave())
    }
}

#[async_trait]
impl BusUnderTest for InProcess {
    fn name(&self) -> &'static str {
        "in-process"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            raw_payloads: Support::No(
                "the in-process bus carries typed events, never bytes: nothing can be undecodable",
            ),
            dead_letter_origin: Support::No(
                "the in-process bus has no topic, partition or offset; a dead letter names its group",
            ),
        }
    }

    /// As the outbox relay does: the events go as one batch, and those the bus refuses (a
    /// group with no running member, a handler still failing after the bus's own retries)
    /// are offered again, from the first one not published, until they are taken.
    async fn publish(&self, events: &[InfrastructureEvent]) -> Result<(), String> {
        let published = AtomicUsize::new(0);
        eventually(DELIVERY_DEADLINE, || async {
            let from = published.load(Ordering::SeqCst);
            let outcome = self.bus.publish_batch(&events[from..]).await;
            published.fetch_add(outcome.published, Ordering::SeqCst);
            outcome.error.map_or(Ok(()), |error| Err(error.to_string()))
        })
        .await
    }

    async fn publish_raw(&self, _key: &str, _payload: &[u8]) -> Result<(), String> {
        Err("the in-process bus takes no raw payloads".to_owned())
    }

    async fn start_group(
        &self,
        group: &str,
        handlers: Vec<Arc<dyn EventHandler>>,
    ) -> Vec<Box<dyn RunningMember>> {
        handlers
            .into_iter()
            .map(|handler| {
                Box::new(Member(self.bus.subscribe(group, handler))) as Box<dyn RunningMember>
            })
            .collect()
    }

    async fn dead_letters(&self, group: &str, count: usize) -> Vec<Letter> {
        eventually(DELIVERY_DEADLINE, || async {
            let letters: Vec<Letter> = self
                .bus
                .dead_letters()
                .into_iter()
                .filter(|letter| letter.group == group)
                .map(|letter| Letter {
                    event_id: Some(letter.event.id),
                    error: letter.error,
                    origin: None,
                    payload: None,
                })
                .collect();
            if letters.len() >= count { Ok(letters) } else { Err(letters.len()) }
        })
        .await
        .unwrap()
    }
}

conformance_suite!(in_process_bus);
