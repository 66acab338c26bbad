//! The behaviour every event bus of iaas-rs must show, in the spirit of Watermill's universal
//! pub/sub tests (ThreeDotsLabs/watermill `pubsub/tests/test_pubsub.go`): written once over a
//! small [`BusUnderTest`] abstraction and instantiated for Kafka (`conformance_kafka.rs`, the
//! real broker) and the in-process bus (`conformance_in_process.rs`) with [`conformance_suite!`].
//!
//! Each case gets a fresh bus (for Kafka: a fresh topic) and fresh group names. A case that
//! has no meaning for a bus (its [`Capabilities`] say so) prints why and checks what does apply;
//! it never passes silently.

#![allow(dead_code, reason = "each instantiation exercises the capabilities its bus has")]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use iaas_core::memory::RecordingHandler;
use iaas_core::{
    EventAction, EventHandler, EventId, HandlerError, InfrastructureEvent, InstanceId,
    InstanceKind, UserId,
};
use iaas_testkit::isolation::unique_name;
use iaas_testkit::wait::eventually;

/// How long a case waits for deliveries before it fails.
pub(crate) const DELIVERY_DEADLINE: Duration = Duration::from_secs(60);

/// Whether a bus can take part in a check, and if not, why.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Support {
    /// It can.
    Yes,
    /// It cannot, for this reason (printed by the case).
    No(&'static str),
}

/// What a bus can be asked to show.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Capabilities {
    /// Bytes that are not an event can be put on the bus (the undecodable dead-letter case).
    pub raw_payloads: Support,
    /// A dead letter says where it came from (topic/partition/offset).
    pub dead_letter_origin: Support,
}

/// A dead letter as the case sees it.
#[derive(Debug, Clone)]
pub(crate) struct Letter {
    /// The event, when the payload was one.
    pub event_id: Option<EventId>,
    /// Why it was given up on.
    pub error: String,
    /// Where it came from, when the bus records it.
    pub origin: Option<String>,
    /// The bytes as they were on the bus, when the bus carries bytes.
    pub payload: Option<Vec<u8>>,
}

/// One running member of a consumer group.
pub(crate) trait RunningMember: Send + Sync {
    /// Asks the member to stop at once (no new event reaches it); the future resolves when the
    /// event it was handling is done and acknowledged.
    fn stop(self: Box<Self>) -> BoxFuture<()>;
}

/// A bus as the suite drives it.
#[async_trait]
pub(crate) trait BusUnderTest: Send + Sync {
    /// `kafka` or `in-process`, for messages.
    fn name(&self) -> &'static str;

    /// What the bus can show.
    fn capabilities(&self) -> Capabilities;

    /// Publishes `events` in order, as the outbox relay would (which retries what the bus
    /// refuses for a while).
    async fn publish(&self, events: &[InfrastructureEvent]) -> Result<(), String>;

    /// Puts raw bytes on the bus under `key` (only when `raw_payloads` is supported).
    async fn publish_raw(&self, key: &str, payload: &[u8]) -> Result<(), String>;

    /// Starts one member per handler in `group` and returns once the group's work is split
    /// between all of them (for Kafka: every partition assigned, each member holding some).
    async fn start_group(
        &self,
        group: &str,
        handlers: Vec<Arc<dyn EventHandler>>,
    ) -> Vec<Box<dyn RunningMember>>;

    /// The first `count` dead letters of `group`, waiting for them up to the delivery deadline.
    async fn dead_letters(&self, group: &str, count: usize) -> Vec<Letter>;
}

/// A boxed, sendable future (the `futures` crate is not a dependency).
pub(crate) type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Generates one `#[tokio::test]` per case for the bus made by `$make(case_name).await`.
macro_rules! conformance_suite {
    ($make:path) => {
        conformance_suite!(@cases $make;
            round_trip, order_per_key, a_group_splits_the_work, redelivery_after_a_transient_error,
            no_redelivery_after_success_and_restart, dead_letter_for_a_permanent_error,
            dead_letter_for_an_undecodable_message, shutdown_finishes_the_event_in_flight,
            concurrent_publishers, many_groups_each_get_every_event,
            a_permanent_failure_in_a_batch_dead_letters_only_that_event,
            a_transient_failure_in_a_batch_retries_from_that_event,
            a_lone_event_is_not_held_back_for_a_batch);
    };
    (@cases $make:path; $($case:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let bus = $make(stringify!($case)).await;
                crate::conformance::$case(bus).await;
            }
        )+
    };
}
pub(crate) use conformance_suite;

fn event(instance: InstanceId, action: EventAction) -> InfrastructureEvent {
    InfrastructureEvent::new(
        instance,
        UserId::new_random(),
        InstanceKind::Postgres,
        action,
        Utc::now(),
    )
}

/// `per_instance` events for each of `instances` new instances, interleaved as a busy platform
/// would write them.
fn interleaved(instances: usize, per_instance: usize) -> Vec<InfrastructureEvent> {
    let ids: Vec<_> = (0..instances).map(|_| InstanceId::new_random()).collect();
    let actions = [EventAction::Created, EventAction::Started, EventAction::Stopped];
    let mut events = Vec::with_capacity(instances * per_instance);
    for step in 0..per_instance {
        for id in &ids {
            events.push(event(*id, actions[step % actions.len()].clone()));
        }
    }
    events
}

fn ids(events: &[InfrastructureEvent]) -> HashSet<EventId> {
    events.iter().map(|e| e.id).collect()
}

fn per_instance(events: &[InfrastructureEvent]) -> HashMap<InstanceId, Vec<EventId>> {
    let mut out: HashMap<_, Vec<_>> = HashMap::new();
    for e in events {
        out.entry(e.instance_id).or_default().push(e.id);
    }
    out
}

/// Waits until the recorders together hold `count` distinct events.
async fn until_handled(recorders: &[&RecordingHandler], count: usize) {
    eventually(DELIVERY_DEADLINE, || async {
        let seen: usize = recorders.iter().map(|r| r.events().len()).sum();
        if seen >= count { Ok(()) } else { Err(format!("{seen} of {count} handled")) }
    })
    .await
    .unwrap();
}

async fn stop_all(members: Vec<Box<dyn RunningMember>>) {
    for member in members {
        member.stop().await;
    }
}

async fn start_one(
    bus: &dyn BusUnderTest,
    group: &str,
    handler: Arc<dyn EventHandler>,
) -> Box<dyn RunningMember> {
    bus.start_group(group, vec![handler]).await.pop().expect("one member per handler")
}

/// An event arrives whole: every field, metadata included.
pub(crate) async fn round_trip(bus: Arc<dyn BusUnderTest>) {
    let recorder = Arc::new(RecordingHandler::new());
    let member = start_one(bus.as_ref(), &unique_name("g"), recorder.clone()).await;
    let sent = event(InstanceId::new_random(), EventAction::Created)
        .with_metadata("container_id", "3f2a")
        .with_metadata("note", "ünïcode and \"quotes\"");
    bus.publish(std::slice::from_ref(&sent)).await.unwrap();
    until_handled(&[&recorder], 1).await;
    member.stop().await;
    assert_eq!(recorder.events(), vec![sent], "{}", bus.name());
    assert_eq!(recorder.duplicates(), 0);
}

/// The events of one instance are handled in the order published.
pub(crate) async fn order_per_key(bus: Arc<dyn BusUnderTest>) {
    let recorder = Arc::new(RecordingHandler::new());
    let member = start_one(bus.as_ref(), &unique_name("g"), recorder.clone()).await;
    let events = interleaved(6, 20);
    bus.publish(&events).await.unwrap();
    until_handled(&[&recorder], events.len()).await;
    member.stop().await;
    assert_eq!(per_instance(&recorder.events()), per_instance(&events), "{}", bus.name());
}

/// Two members of one group share the events: together they handle each exactly once, both
/// take part, and one instance's events stay with one member.
pub(crate) async fn a_group_splits_the_work(bus: Arc<dyn BusUnderTest>) {
    let (a, b) = (Arc::new(RecordingHandler::new()), Arc::new(RecordingHandler::new()));
    let members = bus.start_group(&unique_name("g"), vec![a.clone(), b.clone()]).await;
    let events = interleaved(30, 2);
    bus.publish(&events).await.unwrap();
    until_handled(&[&a, &b], events.len()).await;
    stop_all(members).await;

    let (in_a, in_b) = (ids(&a.events()), ids(&b.events()));
    assert!(in_a.is_disjoint(&in_b), "{}: an event reached both members", bus.name());
    assert_eq!(&in_a | &in_b, ids(&events));
    assert!(
        !in_a.is_empty() && !in_b.is_empty(),
        "{}: {} + {}",
        bus.name(),
        in_a.len(),
        in_b.len()
    );
    assert_eq!(a.duplicates() + b.duplicates(), 0);
    let instances_a: HashSet<_> = a.events().iter().map(|e| e.instance_id).collect();
    assert!(b.events().iter().all(|e| !instances_a.contains(&e.instance_id)), "an instance split");
}

/// Fails the first attempt at every event transiently, then records it.
#[derive(Default)]
struct FailsOnce {
    attempts: std::sync::Mutex<HashMap<EventId, u32>>,
    inner: RecordingHandler,
}

#[async_trait]
impl EventHandler for FailsOnce {
    fn name(&self) -> &str {
        "fails-once"
    }

    async fn handle(&self, event: &InfrastructureEvent) -> Result<(), HandlerError> {
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap();
            let n = attempts.entry(event.id).or_default();
            *n += 1;
            *n
        };
        if attempt == 1 {
            return Err(HandlerError::Transient("the index is down".into()));
        }
        self.inner.handle(event).await
    }
}

/// A transient handler error brings the same event again; nothing is skipped or reordered.
pub(crate) async fn redelivery_after_a_transient_error(bus: Arc<dyn BusUnderTest>) {
    let handler = Arc::new(FailsOnce::default());
    let member = start_one(bus.as_ref(), &unique_name("g"), handler.clone()).await;
    let events = interleaved(2, 4);
    bus.publish(&events).await.unwrap();
    until_handled(&[&handler.inner], events.len()).await;
    member.stop().await;
    let attempts = handler.attempts.lock().unwrap().clone();
    for e in &events {
        assert!(
            attempts.get(&e.id).copied().unwrap_or(0) >= 2,
            "{}: {} not retried",
            bus.name(),
            e.id
        );
    }
    assert_eq!(per_instance(&handler.inner.events()), per_instance(&events), "{}", bus.name());
}

/// What a group handled is not handed to it again after its members restart.
pub(crate) async fn no_redelivery_after_success_and_restart(bus: Arc<dyn BusUnderTest>) {
    let group = unique_name("g");
    let first = Arc::new(RecordingHandler::new());
    let member = start_one(bus.as_ref(), &group, first.clone()).await;
    let events = interleaved(5, 4);
    bus.publish(&events).await.unwrap();
    until_handled(&[&first], events.len()).await;
    member.stop().await;

    let again = Arc::new(RecordingHandler::new());
    let member = start_one(bus.as_ref(), &group, again.clone()).await;
    // One late event per instance: on a partitioned bus each one sits behind the earlier events
    // of its instance, so a redelivery of those would arrive before it.
    let late: Vec<_> = per_instance(&events)
        .keys()
        .map(|instance| event(*instance, EventAction::Deleted))
        .collect();
    bus.publish(&late).await.unwrap();
    until_handled(&[&again], late.len()).await;
    member.stop().await;
    assert_eq!(ids(&again.events()), ids(&late), "{}: old events came again", bus.name());
}

/// Refuses one event for good, records the others.
struct RefusesOne {
    poison: EventId,
    inner: RecordingHandler,
}

const REFUSAL: &str = "a spec no version of the indexer can read";

#[async_trait]
impl EventHandler for RefusesOne {
    fn name(&self) -> &str {
        "refuses-one"
    }

    async fn handle(&self, event: &InfrastructureEvent) -> Result<(), HandlerError> {
        if event.id == self.poison {
            return Err(HandlerError::Permanent(REFUSAL.into()));
        }
        self.inner.handle(event).await
    }
}

/// A permanent handler error dead-letters the event with the error (and its origin where the
/// bus has one), and the events behind it on the same key keep flowing.
pub(crate) async fn dead_letter_for_a_permanent_error(bus: Arc<dyn BusUnderTest>) {
    let instance = InstanceId::new_random();
    let events: Vec<_> = (0..5).map(|_| event(instance, EventAction::Started)).collect();
    let handler = Arc::new(RefusesOne { poison: events[1].id, inner: RecordingHandler::new() });
    let group = unique_name("g");
    let member = start_one(bus.as_ref(), &group, handler.clone()).await;
    bus.publish(&events).await.unwrap();
    until_handled(&[&handler.inner], events.len() - 1).await;
    let letters = bus.dead_letters(&group, 1).await;
    member.stop().await;

    let mut expected = events.clone();
    expected.remove(1);
    assert_eq!(handler.inner.events(), expected, "{}: the key kept flowing, in order", bus.name());
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_id, Some(events[1].id));
    assert!(letters[0].error.contains(REFUSAL), "{}: {:?}", bus.name(), letters[0].error);
    check_origin(bus.as_ref(), &letters[0]);
}

fn check_origin(bus: &dyn BusUnderTest, letter: &Letter) {
    match bus.capabilities().dead_letter_origin {
        Support::Yes => {
            let origin = letter.origin.as_deref().unwrap_or_default();
            assert!(origin.matches('/').count() == 2, "{}: origin {origin:?}", bus.name());
        }
        Support::No(reason) => {
            eprintln!("{}: dead-letter origin not checked: {reason}", bus.name())
        }
    }
}

/// Bytes that are no event are dead-lettered as undecodable and the key keeps flowing.
pub(crate) async fn dead_letter_for_an_undecodable_message(bus: Arc<dyn BusUnderTest>) {
    if let Support::No(reason) = bus.capabilities().raw_payloads {
        eprintln!("{}: undecodable-message case does not apply: {reason}", bus.name());
        return;
    }
    let instance = InstanceId::new_random();
    let group = unique_name("g");
    let recorder = Arc::new(RecordingHandler::new());
    let member = start_one(bus.as_ref(), &group, recorder.clone()).await;
    bus.publish_raw(&instance.to_string(), b"{not json").await.unwrap();
    let good = event(instance, EventAction::Started);
    bus.publish(std::slice::from_ref(&good)).await.unwrap();
    until_handled(&[&recorder], 1).await;
    let letters = bus.dead_letters(&group, 1).await;
    member.stop().await;

    assert_eq!(recorder.events(), vec![good]);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_id, None);
    assert_eq!(letters[0].payload.as_deref(), Some(b"{not json".as_slice()), "kept as it was");
    assert!(letters[0].error.contains("undecodable"), "{}: {:?}", bus.name(), letters[0].error);
    check_origin(bus.as_ref(), &letters[0]);
}

/// Holds the first event it gets until released.
struct HoldsFirst {
    entered: tokio::sync::Notify,
    release: tokio::sync::Semaphore,
    held: AtomicBool,
    inner: RecordingHandler,
}

#[async_trait]
impl EventHandler for HoldsFirst {
    fn name(&self) -> &str {
        "holds-first"
    }

    async fn handle(&self, event: &InfrastructureEvent) -> Result<(), HandlerError> {
        if !self.held.swap(true, Ordering::SeqCst) {
            self.entered.notify_one();
            let permit =
                self.release.acquire().await.map_err(|e| HandlerError::Permanent(Box::new(e)))?;
            permit.forget();
        }
        self.inner.handle(event).await
    }
}

/// Stopping a member while it handles an event lets that event finish and be acknowledged: a
/// new member of the group gets everything else, and not that event again.
pub(crate) async fn shutdown_finishes_the_event_in_flight(bus: Arc<dyn BusUnderTest>) {
    let group = unique_name("g");
    let holder = Arc::new(HoldsFirst {
        entered: tokio::sync::Notify::new(),
        release: tokio::sync::Semaphore::new(0),
        held: AtomicBool::new(false),
        inner: RecordingHandler::new(),
    });
    let member = start_one(bus.as_ref(), &group, holder.clone()).await;
    let instance = InstanceId::new_random();
    let events: Vec<_> = (0..10).map(|_| event(instance, EventAction::Restarted)).collect();
    // In the background: an in-process publish returns only once the event is handled.
    let publishing = tokio::spawn({
        let (bus, events) = (bus.clone(), events.clone());
        async move { bus.publish(&events).await }
    });
    tokio::time::timeout(DELIVERY_DEADLINE, holder.entered.notified())
        .await
        .expect("the first event reached the handler");

    let stopping = tokio::spawn(member.stop());
    holder.release.add_permits(1);
    tokio::time::timeout(DELIVERY_DEADLINE, stopping).await.expect("stop returns").unwrap();
    let first_run = holder.inner.events();
    assert_eq!(
        first_run.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![events[0].id],
        "{}: the event in flight finished, and nothing was started after the stop",
        bus.name()
    );

    let successor = Arc::new(RecordingHandler::new());
    let member = start_one(bus.as_ref(), &group, successor.clone()).await;
    until_handled(&[&holder.inner, &successor], events.len()).await;
    tokio::time::timeout(DELIVERY_DEADLINE, publishing)
        .await
        .expect("publishing ends")
        .unwrap()
        .unwrap();
    member.stop().await;

    let (before, after) = (ids(&first_run), ids(&successor.events()));
    assert!(before.is_disjoint(&after), "{}: an acknowledged event came again", bus.name());
    assert_eq!(&before | &after, ids(&events), "{}: an event was lost", bus.name());
}

/// Many tasks publishing at once: every event arrives, each task's order per instance kept.
pub(crate) async fn concurrent_publishers(bus: Arc<dyn BusUnderTest>) {
    const TASKS: usize = 4;
    const PER_TASK: usize = 25;
    let recorder = Arc::new(RecordingHandler::new());
    let member = start_one(bus.as_ref(), &unique_name("g"), recorder.clone()).await;
    let batches: Vec<Vec<_>> = (0..TASKS).map(|_| interleaved(5, PER_TASK / 5)).collect();
    let tasks: Vec<_> = batches
        .iter()
        .cloned()
        .map(|batch| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for event in &batch {
                    bus.publish(std::slice::from_ref(event)).await?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    until_handled(&[&recorder], TASKS * PER_TASK).await;
    member.stop().await;
    let all: Vec<_> = batches.concat();
    assert_eq!(recorder.events().len(), all.len(), "{}", bus.name());
    assert_eq!(per_instance(&recorder.events()), per_instance(&all), "{}", bus.name());
}

/// Every group gets every event, whatever the others do.
pub(crate) async fn many_groups_each_get_every_event(bus: Arc<dyn BusUnderTest>) {
    let recorders: Vec<_> = (0..3).map(|_| Arc::new(RecordingHandler::new())).collect();
    let mut members = Vec::new();
    for recorder in &recorders {
        members.push(start_one(bus.as_ref(), &unique_name("g"), recorder.clone()).await);
    }
    let events = interleaved(4, 5);
    bus.publish(&events).await.unwrap();
    for recorder in &recorders {
        until_handled(&[recorder], events.len()).await;
    }
    stop_all(members).await;
    for recorder in &recorders {
        assert_eq!(ids(&recorder.events()), ids(&events), "{}", bus.name());
        assert_eq!(recorder.duplicates(), 0);
    }
}

/// A batch-capable handler that records what it is handed and fails one event once, the way
/// its `failure` says; every other event is recorded and answered `Ok`.
struct BatchScript {
    target: EventId,
    failure: fn() -> HandlerError,
    failed: AtomicBool,
    /// How many times each event was handed over.
    deliveries: std::sync::Mutex<HashMap<EventId, u32>>,
    /// The size of each batch handed over.
    batches: std::sync::Mutex<Vec<usize>>,
    inner: RecordingHandler,
}

impl BatchScript {
    fn new(target: EventId, failure: fn() -> HandlerError) -> Self {
        Self {
            target,
            failure,
            failed: AtomicBool::new(false),
            deliveries: std::sync::Mutex::default(),
            batches: std::sync::Mutex::default(),
            inner: RecordingHandler::new(),
        }
    }

    fn deliveries(&self, id: EventId) -> u32 {
        self.deliveries.lock().unwrap().get(&id).copied().unwrap_or(0)
    }
}

#[async_trait]
impl EventHandler for BatchScript {
    fn name(&self) -> &str {
        "batch-script"
    }

    async fn handle(&self, event: &InfrastructureEvent) -> Result<(), HandlerError> {
        self.handle_batch(std::slice::from_ref(event)).await.pop().unwrap()
    }

    async fn handle_batch(&self, events: &[InfrastructureEvent]) -> Vec<Result<(), HandlerError>> {
        let mut results = Vec::with_capacity(events.len());
        let mut line_stopped = false;
        for event in events {
            *self.deliveries.lock().unwrap().entry(event.id).or_default() += 1;
            if line_stopped {
                // A transient failure before this event: answer `Ok` without handling it. A
                // runner that keeps the contract hands it over again; one that acknowledged
                // this `Ok` would lose the event, and the case would see it missing.
                results.push(Ok(()));
            } else if event.id == self.target && !self.failed.swap(true, Ordering::SeqCst) {
                let failure = (self.failure)();
                line_stopped = failure.is_transient();
                results.push(Err(failure));
            } else {
                results.push(self.inner.handle(event).await);
            }
        }
        self.batches.lock().unwrap().push(events.len());
        results
    }

    fn max_batch(&self) -> usize {
        usize::MAX
    }
}

/// A permanent failure inside a batch dead-letters that event only: the events around it are
/// acknowledged once (never handed over again) and handled in order.
pub(crate) async fn a_permanent_failure_in_a_batch_dead_letters_only_that_event(
    bus: Arc<dyn BusUnderTest>,
) {
    let instance = InstanceId::new_random();
    let events: Vec<_> = (0..12).map(|_| event(instance, EventAction::Restarted)).collect();
    let poison = events[5].id;
    let handler = Arc::new(BatchScript::new(poison, || HandlerError::Permanent(REFUSAL.into())));
    let group = unique_name("g");
    let member = start_one(bus.as_ref(), &group, handler.clone()).await;
    bus.publish(&events).await.unwrap();
    until_handled(&[&handler.inner], events.len() - 1).await;
    let letters = bus.dead_letters(&group, 1).await;
    member.stop().await;

    let mut expected = events.clone();
    expected.remove(5);
    assert_eq!(handler.inner.events(), expected, "{}: the others, in order", bus.name());
    assert_eq!(letters.len(), 1, "{}", bus.name());
    assert_eq!(letters[0].event_id, Some(poison));
    assert!(letters[0].error.contains(REFUSAL), "{}: {:?}", bus.name(), letters[0].error);
    for e in &events {
        assert_eq!(handler.deliveries(e.id), 1, "{}: {} handed over again", bus.name(), e.id);
    }
    eprintln!("{}: batches {:?}", bus.name(), handler.batches.lock().unwrap());
}

/// A transient failure of event k inside a batch: k and everything after it are handed over
/// again (so `Ok` answers given after k are not taken for acknowledgements), nothing before k
/// is, and every event ends up handled once, in order.
pub(crate) async fn a_transient_failure_in_a_batch_retries_from_that_event(
    bus: Arc<dyn BusUnderTest>,
) {
    let instance = InstanceId::new_random();
    let events: Vec<_> = (0..12).map(|_| event(instance, EventAction::Restarted)).collect();
    let k = 5;
    let handler = Arc::new(BatchScript::new(events[k].id, || {
        HandlerError::Transient("the index is down".into())
    }));
    let member = start_one(bus.as_ref(), &unique_name("g"), handler.clone()).await;
    bus.publish(&events).await.unwrap();
    until_handled(&[&handler.inner], events.len()).await;
    member.stop().await;

    assert_eq!(handler.inner.events(), events, "{}: all handled, in order", bus.name());
    assert_eq!(handler.inner.duplicates(), 0, "{}", bus.name());
    for e in &events[..k] {
        assert_eq!(handler.deliveries(e.id), 1, "{}: an event before k came again", bus.name());
    }
    assert_eq!(handler.deliveries(events[k].id), 2, "{}: k retried once", bus.name());
    let batches = handler.batches.lock().unwrap().clone();
    eprintln!("{}: batches {batches:?}", bus.name());
    if batches.first().is_some_and(|&n| n > k + 1) {
        // k failed inside a batch with events after it: those were handed over again too.
        assert_eq!(handler.deliveries(events[k + 1].id), 2, "{}", bus.name());
    }
}

/// The runner never waits for a batch to fill: a lone event reaches a handler that takes
/// batches of any size, alone.
pub(crate) async fn a_lone_event_is_not_held_back_for_a_batch(bus: Arc<dyn BusUnderTest>) {
    let recorder = Arc::new(RecordingHandler::new());
    let member = start_one(bus.as_ref(), &unique_name("g"), recorder.clone()).await;
    let lone = event(InstanceId::new_random(), EventAction::Created);
    bus.publish(std::slice::from_ref(&lone)).await.unwrap();
    until_handled(&[&recorder], 1).await;
    assert_eq!(recorder.batch_sizes(), vec![1], "{}", bus.name());
    member.stop().await;
    assert_eq!(recorder.events(), vec![lone]);
}
