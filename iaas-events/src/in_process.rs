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
//! - [`EventPublisher::publish_batch`] (what the outbox relay calls) hands each member its share
//!   of the batch through [`EventHandler::handle_batch`], in slices of at most the handler's
//!   [`EventHandler::max_batch`], under the batch contract of [`EventHandler`];
//! - a transient handler failure is retried in place with backoff ([`InProcessBus::with_retry`]),
//!   from the failed event on; when the retries run out the publish fails as unavailable and
//!   reports the events before the earliest failure as published: the rest stays in the outbox
//!   and comes again (groups that already handled some see duplicates and drop them by id);
//! - a permanent failure dead-letters the event for that group and the others go on;
//! - [`Subscription::leave`] waits for the slice its member is handling; a group whose members
//!   all left refuses events (unavailable) until one joins again, so the outbox keeps them
//!   rather than the group silently missing them. [`InProcessBus::remove_group`] drops a group
//!   for good.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use iaas_core::{
    BatchOutcome, Error, EventHandler, EventPublisher, HandlerError, InfrastructureEvent, Result,
};

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
    /// future resolves once the slice of events it is handling (if any) is done. The group keeps
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

    /// The members of `group` now, if it has any.
    fn members_of(&self, group: &str) -> Option<Vec<Arc<Member>>> {
        let groups = read(&self.groups);
        let members = &groups.iter().find(|g| g.name == group)?.members;
        (!members.is_empty()).then(|| members.clone())
    }

    /// Whether the member `id` is still in `group`.
    fn is_member(&self, group: &str, id: u64) -> bool {
        read(&self.groups)
            .iter()
            .find(|g| g.name == group)
            .is_some_and(|g| g.members.iter().any(|m| m.id == id))
    }

    /// Delivers `events` to `group`, each to the member in charge of its instance, retrying
    /// transient failures. Returns the earliest position whose event the group has not handled
    /// (or dead-lettered), with why; the group may have handled events after it.
    async fn deliver(&self, group: &str, events: &[InfrastructureEvent]) -> Option<(usize, Error)> {
        let mut pending: Vec<usize> = (0..events.len()).collect();
        let mut failed = None;
        while let Some(&first) = pending.first() {
            let Some(members) = self.members_of(group) else {
                let error = Error::unavailable(
                    "in-process bus",
                    format!(
                        "delivering event {} ({}) to group {group}, which has no running member",
                        events[first].id,
                        events[first].name()
                    ),
                    "every member left; the event must wait until one joins",
                );
                return Some(earliest(failed, (first, error)));
            };
            let mut shares: Vec<Vec<usize>> = vec![Vec::new(); members.len()];
            for position in pending {
                let mut hasher = DefaultHasher::new();
                events[position].instance_id.hash(&mut hasher);
                let slot = usize::try_from(hasher.finish() % members.len() as u64).unwrap_or(0);
                if let Some(share) = shares.get_mut(slot) {
                    share.push(position);
                }
            }
            // Events of a member that left meanwhile are handed to the members left.
            let mut again = Vec::new();
            for (member, share) in members.iter().zip(shares) {
                match self.deliver_to(group, member, events, &share).await {
                    Delivered::All => {}
                    Delivered::Left(rest) => again.extend(rest),
                    Delivered::Failed(position, error) => {
                        failed = Some(earliest(failed, (position, error)));
                    }
                }
            }
            again.sort_unstable();
            pending = again;
        }
        failed
    }

    /// Delivers the events at `share` (positions in `events`, in order) to `member`, in
    /// slices of at most its handler's batch size.
    async fn deliver_to(
        &self,
        group: &str,
        member: &Member,
        events: &[InfrastructureEvent],
        share: &[usize],
    ) -> Delivered {
        if share.is_empty() {
            return Delivered::All;
        }
        // Borrowed when the member has the whole batch (one member, the usual case).
        let owned: Vec<InfrastructureEvent>;
        let mine: &[InfrastructureEvent] = if share.len() == events.len() {
            events
        } else {
            owned = share.iter().filter_map(|&p| events.get(p).cloned()).collect();
            &owned
        };
        let limit = member.handler.max_batch().max(1);
        let (mut start, mut attempt) = (0, 0_u32);
        while start < mine.len() {
            // Held while the handler runs, so `leave` waits for this slice; taken per slice,
            // and the membership checked per slice (`leave` takes the member out of its group
            // before it waits for the lock), so a member that leaves is handed nothing more.
            let active = member.active.read().await;
            if !*active || !self.is_member(group, member.id) {
                return Delivered::Left(share[start..].to_vec());
            }
            let slice = &mine[start..start.saturating_add(limit).min(mine.len())];
            let results = member.handler.handle_batch(slice).await;
            let stop = HandlerError::first_to_retry(slice.len(), &results);
            let mut results = results.into_iter();
            for event in &slice[..stop.unwrap_or(slice.len())] {
                if let Some(Err(error)) = results.next() {
                    self.dead_letter(group, event, &error);
                }
            }
            let Some(failed) = stop else {
                start += slice.len();
                attempt = 0;
                continue;
            };
            drop(active);
            if failed > 0 {
                attempt = 0; // a new event heads the line: it gets its own retries
            }
            start += failed;
            let event = &mine[start];
            let source: iaas_core::BoxError = match results.next() {
                Some(Err(HandlerError::Transient(source))) => source,
                _ => "the handler gave no result".into(),
            };
            if attempt >= self.retries {
                let error = Error::unavailable(
                    "in-process bus",
                    format!(
                        "group {group} handling event {} ({}) after {attempt} retries",
                        event.id,
                        event.name()
                    ),
                    source,
                );
                return Delivered::Failed(share[start], error);
            }
            tracing::warn!(%group, event_id = %event.id, error = %iaas_core::error_chain(source.as_ref()), attempt, retried = mine.len() - start, "handler failed transiently; retrying from this event");
            tokio::time::sleep(self.backoff.delay(attempt)).await;
            attempt = attempt.saturating_add(1);
        }
        Delivered::All
    }

    fn dead_letter(&self, group: &str, event: &InfrastructureEvent, error: &HandlerError) {
        tracing::error!(%group, event_id = %event.id, %error, "dead-lettering an event");
        metrics::counter!("iaas_consumer_dead_lettered_total", "group" => group.to_owned())
            .increment(1);
        self.dead_letters.lock().unwrap_or_else(|p| p.into_inner()).push(DeadLetter {
            group: group.to_owned(),
            event: event.clone(),
            error: error.to_string(),
        });
    }
}

/// How delivering a member's share ended.
enum Delivered {
    /// Every event handled or dead-lettered.
    All,
    /// The member left; these positions were not handed to it.
    Left(Vec<usize>),
    /// Retries ran out at this position.
    Failed(usize, Error),
}

/// The failure at the earlier position.
fn earliest(current: Option<(usize, Error)>, new: (usize, Error)) -> (usize, Error) {
    match current {
        Some(current) if current.0 <= new.0 => current,
        _ => new,
    }
}

#[async_trait]
impl EventPublisher for InProcessBus {
    async fn publish(&self, event: &InfrastructureEvent) -> Result<()> {
        match self.publish_batch(std::slice::from_ref(event)).await.error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Delivers the batch to every group; `published` is the prefix every group has handled.
    async fn publish_batch(&self, events: &[InfrastructureEvent]) -> BatchOutcome {
        // Handlers are called without holding the groups lock, so one may subscribe another.
        let names: Vec<String> = read(&self.groups).iter().map(|g| g.name.clone()).collect();
        let mut failed = None;
        for group in names {
            if let Some(failure) = self.deliver(&group, events).await {
                failed = Some(earliest(failed, failure));
            }
        }
        match failed {
            None => BatchOutcome { published: events.len(), error: None },
            Some((published, error)) => BatchOutcome { published, error: Some(error) },
        }
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
