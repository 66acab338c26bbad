//! The in-process bus: the embedded default when no Kafka is configured.
//!
//! It has no storage of its own and needs none: the durable part is the outbox. `publish`
//! delivers the event to every consumer group before it returns, so when the relay marks an
//! event sent, every group has handled it.
//!
//! Groups behave like Kafka consumer groups, without partitions:
//!
//! - each group gets every event; within a group, the members split the events by a hash of the
//!   instance id, so one instance's events always reach the same member, in order;
//! - a transient handler failure is retried in place with backoff ([`InProcessBus::with_retry`]);
//!   when the retries run out the publish fails as unavailable, the event stays in the outbox and
//!   comes again (groups that already handled it see a duplicate and drop it by id);
//! - a permanent failure dead-letters the event for that group and the others go on;
//! - [`Subscription::leave`] waits for the event its member is handling; a group whose members
//!   all left refuses events (unavailable) until one joins again, so the outbox keeps them
//!   rather than the group silently missing them. [`InProcessBus::remove_group`] drops a group
//!   for good.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use iaas_core::{Error, EventHandler, EventPublisher, HandlerError, InfrastructureEvent, Result};

use crate::backoff::Backoff;

/// Retries of a transient failure before a publish gives up, by default.
const DEFAULT_RETRIES: u32 = 3;
/// First delay of the default retry backoff.
const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(10);
/// Longest delay of the default retry backoff.
const DEFAULT_RETRY_MAX: Duration = Duration::from_millis(200);

/// An event a group gave up on.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The group.
    pub group: String,
    /// The event.
    pub event: InfrastructureEvent,
    /// Why the handler refused it.
    pub error: String,
}

/// One member of a group. `active` turns false (under the write lock, so after any handling in
/// progress finished) when the member leaves; a publish that picked it just before re-picks.
struct Member {
    id: u64,
    handler: Arc<dyn EventHandler>,
    active: tokio::sync::RwLock<bool>,
}

struct Group {
    name: String,
    members: Vec<Arc<Member>>,
}

type Groups = Arc<RwLock<Vec<Group>>>;

/// Delivers events to in-process handlers, grouped like Kafka consumer groups.
pub struct InProcessBus {
    groups: Groups,
    dead_letters: Mutex<Vec<DeadLetter>>,
    backoff: Backoff,
    retries: u32,
    next_member: AtomicU64,
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::with_retry(Backoff::new(DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX), DEFAULT_RETRIES)
    }
}

impl std::fmt::Debug for InProcessBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups: Vec<(String, usize)> = read(&self.groups)
            .iter()
            .map(|group| (group.name.clone(), group.members.len()))
            .collect();
        f.debug_struct("InProcessBus")
            .field("groups", &groups)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

/// A member's place in its group, from [`InProcessBus::subscribe`]. Dropping it keeps the
/// member subscribed; [`Subscription::leave`] takes it out.
pub struct Subscription {
    groups: Groups,
    group: String,
    member: Arc<Member>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("group", &self.group)
            .field("handler", &self.member.handler.name())
            .finish()
    }
}

impl Subscription {
    /// The group this member belongs to.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Leaves the group: from this call on no new event reaches this member; the returned
    /// future resolves once the event it is handling (if any) is done. The group keeps
    /// existing: with no member left it refuses events until one joins. Awaiting it from
    /// inside this member's own handler would wait for itself.
    pub fn leave(self) -> impl Future<Output = ()> + Send + 'static {
        {
            let mut groups = write(&self.groups);
            if let Some(group) = groups.iter_mut().find(|g| g.name == self.group) {
                group.members.retain(|m| m.id != self.member.id);
            }
        }
        async move {
            *self.member.active.write().await = false;
        }
    }
}

impl InProcessBus {
    /// A bus with no subscribers that retries a transient handler failure 3 times (10 ms
    /// doubling to 200 ms) before failing the publish.
    pub fn new() -> Self {
        Self::default()
    }

    /// A bus retrying a transient handler failure `retries` times with `backoff` before the
    /// publish fails (0: fail at once and leave the retry to the outbox relay).
    pub fn with_retry(backoff: Backoff, retries: u32) -> Self {
        Self {
            groups: Arc::default(),
            dead_letters: Mutex::default(),
            backoff,
            retries,
            next_member: AtomicU64::new(0),
        }
    }

    /// Adds `handler` as a member of consumer group `group`: the group gets every event
    /// published from now on, split between its members by instance.
    pub fn subscribe(
        &self,
        group: impl Into<String>,
        handler: Arc<dyn EventHandler>,
    ) -> Subscription {
        let group = group.into();
        let member = Arc::new(Member {
            id: self.next_member.fetch_add(1, Ordering::Relaxed),
            handler,
            active: tokio::sync::RwLock::new(true),
        });
        {
            let mut groups = write(&self.groups);
            match groups.iter_mut().find(|g| g.name == group) {
                Some(existing) => existing.members.push(member.clone()),
                None => groups.push(Group { name: group.clone(), members: vec![member.clone()] }),
            }
        }
        Subscription { groups: self.groups.clone(), group, member }
    }

    /// Drops `group` with its members: events published from now on skip it.
    pub fn remove_group(&self, group: &str) {
        write(&self.groups).retain(|g| g.name != group);
    }

    /// Events dead-lettered so far.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The member of `group` in charge of `event`'s instance, if the group has any.
    fn member_for(&self, group: &str, event: &InfrastructureEvent) -> Option<Arc<Member>> {
        let groups = read(&self.groups);
        let members = &groups.iter().find(|g| g.name == group)?.members;
        if members.is_empty() {
            return None;
        }
        let mut hasher = DefaultHasher::new();
        event.instance_id.hash(&mut hasher);
        let slot = usize::try_from(hasher.finish() % members.len() as u64).unwrap_or(0);
        members.get(slot).cloned()
    }

    /// Delivers `event` to one member of `group`, retrying transient failures.
    async fn deliver(&self, group: &str, event: &InfrastructureEvent) -> Result<()> {
        loop {
            let Some(member) = self.member_for(group, event) else {
                return Err(Error::unavailable(
                    "in-process bus",
                    format!(
                        "delivering event {} ({}) to group {group}, which has no running member",
                        event.id,
                        event.name()
                    ),
                    "every member left; the event must wait until one joins",
                ));
            };
            // Held while the handler runs, so `leave` waits for it.
            let active = member.active.read().await;
            if !*active {
                continue; // It left between the pick and now: pick again.
            }
            let mut attempt: u32 = 0;
            loop {
                match member.handler.handle(event).await {
                    Ok(()) => return Ok(()),
                    Err(HandlerError::Transient(source)) if attempt >= self.retries => {
                        return Err(Error::unavailable(
                            "in-process bus",
                            format!(
                                "group {group} handling event {} ({}) after {attempt} retries",
                                event.id,
                                event.name()
                            ),
                            source,
                        ));
                    }
                    Err(HandlerError::Transient(error)) => {
                        tracing::warn!(%group, event_id = %event.id, %error, attempt, "handler failed transiently; retrying");
                        tokio::time::sleep(self.backoff.delay(attempt)).await;
                        attempt = attempt.saturating_add(1);
                    }
                    Err(error) => {
                        tracing::error!(%group, event_id = %event.id, %error, "dead-lettering an event");
                        metrics::counter!("iaas_consumer_dead_lettered_total", "group" => group.to_owned()).increment(1);
                        self.dead_letters.lock().unwrap_or_else(|p| p.into_inner()).push(
                            DeadLetter {
                                group: group.to_owned(),
                                event: event.clone(),
                                error: error.to_string(),
                            },
                        );
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[async_trait]
impl EventPublisher for InProcessBus {
    async fn publish(&self, event: &InfrastructureEvent) -> Result<()> {
        // Handlers are called without holding the groups lock, so one may subscribe another.
        let names: Vec<String> = read(&self.groups).iter().map(|g| g.name.clone()).collect();
        for group in names {
            self.deliver(&group, event).await?;
        }
        Ok(())
    }
}

fn read(groups: &RwLock<Vec<Group>>) -> std::sync::RwLockReadGuard<'_, Vec<Group>> {
    groups.read().unwrap_or_else(|p| p.into_inner())
}

fn write(groups: &RwLock<Vec<Group>>) -> std::sync::RwLockWriteGuard<'_, Vec<Group>> {
    groups.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use iaas_core::memory::RecordingHandler;
    use iaas_core::{EventAction, InstanceId, InstanceKind, UserId};

    use super::*;

    fn event(instance: InstanceId) -> InfrastructureEvent {
        InfrastructureEvent::new(
            instance,
            UserId::new_random(),
            InstanceKind::Docker,
            EventAction::Started,
            Utc::now(),
        )
    }

    #[tokio::test]
    async fn members_of_a_group_split_instances_and_share_nothing() {
        let bus = InProcessBus::new();
        let (a, b) = (Arc::new(RecordingHandler::new()), Arc::new(RecordingHandler::new()));
        let _a = bus.subscribe("g", a.clone());
        let _b = bus.subscribe("g", b.clone());
        let instances: Vec<_> = (0..16).map(|_| InstanceId::new_random()).collect();
        for round in 0..3 {
            for instance in &instances {
                bus.publish(&event(*instance)).await.unwrap_or_else(|e| panic!("{round}: {e}"));
            }
        }
        assert_eq!(a.events().len() + b.events().len(), 48);
        for instance in &instances {
            let in_a = a.events().iter().filter(|e| e.instance_id == *instance).count();
            let in_b = b.events().iter().filter(|e| e.instance_id == *instance).count();
            assert!(matches!((in_a, in_b), (3, 0) | (0, 3)), "{in_a} + {in_b}");
        }
    }

    #[tokio::test]
    async fn a_group_without_members_refuses_events_until_one_joins() {
        let bus = InProcessBus::new();
        let first = Arc::new(RecordingHandler::new());
        bus.subscribe("g", first.clone()).leave().await;
        let e = event(InstanceId::new_random());
        let err = bus.publish(&e).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("no running member"), "{err}");

        let second = Arc::new(RecordingHandler::new());
        let _second = bus.subscribe("g", second.clone());
        bus.publish(&e).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(second.events(), vec![e]);
        assert!(first.events().is_empty());

        bus.remove_group("g");
        bus.publish(&event(InstanceId::new_random())).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(second.events().len(), 1);
    }
}
