use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::lock;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::event::InfrastructureEvent;
use crate::id::{InstanceId, UserId};
use crate::instance::Instance;
use crate::outbox::{Outbox, OutboxEntry, OutboxStats, ParkedEntry};
use crate::quota::{Quota, QuotaOverride, Usage};
use crate::repository::{InstanceRepository, QuotaRepository, SpecChange, StatusChange};
use crate::status::{InstanceStatus, Transition};

#[derive(Debug)]
struct StoredEntry {
    entry: OutboxEntry,
    sent_at: Option<DateTime<Utc>>,
    attempts: u32,
    error: Option<String>,
    parked_at: Option<DateTime<Utc>>,
}

impl StoredEntry {
    /// Waiting to be published: neither sent nor parked.
    fn is_waiting(&self) -> bool {
        self.sent_at.is_none() && self.parked_at.is_none()
    }
}

#[derive(Debug)]
struct Claim {
    relay: String,
    until: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub(super) struct State {
    instances: HashMap<InstanceId, Instance>,
    pub(super) jobs: super::jobs::Jobs,
    outbox: Vec<StoredEntry>,
    claims: HashMap<InstanceId, Claim>,
    next_seq: u64,
    quotas: HashMap<UserId, QuotaOverride>,
}

impl State {
    fn append(&mut self, event: InfrastructureEvent, now: DateTime<Utc>) {
        self.next_seq += 1;
        let entry = OutboxEntry { seq: self.next_seq, event, created_at: now };
        self.outbox.push(StoredEntry {
            entry,
            sent_at: None,
            attempts: 0,
            error: None,
            parked_at: None,
        });
    }
}

/// [`InstanceRepository`] and [`Outbox`] in memory: the outbox is a list in commit order.
#[derive(Debug)]
pub struct MemoryInstanceRepository {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    leases: super::MemoryLeases,
}

impl Default for MemoryInstanceRepository {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

impl MemoryInstanceRepository {
    /// An empty repository on the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty repository whose outbox leases follow `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Mutex::default(),
            leases: super::MemoryLeases::with_clock(clock.clone()),
            clock,
        }
    }

    /// The repository's state, for the job queue beside it.
    pub(super) fn state(&self) -> &Mutex<State> {
        &self.state
    }

    /// The time of the repository's clock.
    pub(super) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Stores `instance` and appends `event` under the caller's lock.
    fn insert(
        &self,
        state: &mut State,
        instance: &Instance,
        event: &InfrastructureEvent,
    ) -> Result<()> {
        let name_taken = state.instances.values().any(|i| {
            i.owner == instance.owner
                && i.name == instance.name
                && i.status != InstanceStatus::Deleted
        });
        if name_taken {
            return Err(Error::conflict(
                "instance",
                &instance.name,
                "the owner already has an instance of that name",
            ));
        }
        if state.instances.contains_key(&instance.id) {
            return Err(Error::conflict("instance", instance.id, "id already exists"));
        }
        state.instances.insert(instance.id, instance.clone());
        let now = self.clock.now();
        state.jobs.follow_change(instance.id, instance.status, instance.status, event, now);
        state.append(event.clone(), now);
        Ok(())
    }

    /// Every event written so far, sent or not, in commit order.
    pub fn outbox(&self) -> Vec<InfrastructureEvent> {
        lock(&self.state).outbox.iter().map(|stored| stored.entry.event.clone()).collect()
    }
}

#[async_trait]
impl InstanceRepository for MemoryInstanceRepository {
    async fn create_instance(
        &self,
        instance: &Instance,
        event: &InfrastructureEvent,
    ) -> Result<()> {
        self.insert(&mut lock(&self.state), instance, event)
    }

    async fn create_instance_within(
        &self,
        instance: &Instance,
        event: &InfrastructureEvent,
        quota: &Quota,
    ) -> Result<()> {
        let mut state = lock(&self.state);
        let usage = Usage::of(state.instances.values().filter(|i| i.owner == instance.owner));
        quota.admit(&usage, instance)?;
        self.insert(&mut state, instance, event)
    }

    async fn get_instance(&self, id: InstanceId) -> Result<Option<Instance>> {
        Ok(lock(&self.state).instances.get(&id).cloned())
    }

    async fn list_instances_by_owner(&self, owner: UserId) -> Result<Vec<Instance>> {
        let mut list: Vec<_> =
            lock(&self.state).instances.values().filter(|i| i.owner == owner).cloned().collect();
        list.sort_by_key(|i| (i.created_at, i.id));
        Ok(list)
    }

    async fn list_active_instances(&self) -> Result<Vec<Instance>> {
        let mut list: Vec<_> = lock(&self.state)
            .instances
            .values()
            .filter(|i| i.status != InstanceStatus::Deleted)
            .cloned()
            .collect();
        list.sort_by_key(|i| (i.created_at, i.id));
        Ok(list)
    }

    async fn update_status(&self, change: StatusChange) -> Result<Instance> {
        let mut state = lock(&self.state);
        let instance = state
            .instances
            .get_mut(&change.id)
            .ok_or_else(|| Error::not_found("instance", change.id))?;
        if let Some(expected) = change.expected_version
            && instance.version != expected
        {
            return Err(stale(change.id, instance.version, expected));
        }
        match instance.status.transition_to(change.to)? {
            Transition::Unchanged(_) => Ok(instance.clone()),
            Transition::Changed { from, to } => {
                instance.status = to;
                instance.version += 1;
                instance.updated_at = change.at;
                let updated = instance.clone();
                let now = self.clock.now();
                state.jobs.follow_change(change.id, from, to, &change.event, now);
                state.append(change.event, now);
                Ok(updated)
            }
        }
    }

    async fn record_event(&self, event: &InfrastructureEvent) -> Result<()> {
        // One lock for the check and the append, like every other write here: the event lands
        // after everything committed before it, and a concurrent delete cannot slip between.
        let mut state = lock(&self.state);
        let instance = state
            .instances
            .get(&event.instance_id)
            .ok_or_else(|| Error::not_found("instance", event.instance_id))?;
        if instance.status == InstanceStatus::Deleted {
            return Err(deleted_conflict(event));
        }
        state.append(event.clone(), self.clock.now());
        Ok(())
    }

    async fn update_spec_within(&self, change: SpecChange, quota: &Quota) -> Result<Instance> {
        let mut state = lock(&self.state);
        let instance = state
            .instances
            .get(&change.id)
            .ok_or_else(|| Error::not_found("instance", change.id))?;
        if instance.version != change.expected_version {
            return Err(stale(change.id, instance.version, change.expected_version));
        }
        if instance.status == InstanceStatus::Deleted {
            return Err(deleted_conflict(&change.event));
        }
        let mut changed = instance.clone();
        changed.spec = change.spec;
        changed.version += 1;
        let others =
            state.instances.values().filter(|i| i.owner == changed.owner && i.id != changed.id);
        quota.admit_change(&Usage::of(others), instance, &changed)?;
        state.instances.insert(changed.id, changed.clone());
        state.append(change.event, self.clock.now());
        Ok(changed)
    }
}

/// The conflict of a change made on `expected` when the instance is at `actual`.
fn stale(id: InstanceId, actual: u64, expected: u64) -> Error {
    Error::conflict("instance", id, format!("version is {actual}, expected {expected}"))
}

/// Why an event about a deleted instance is refused.
fn deleted_conflict(event: &InfrastructureEvent) -> Error {
    Error::conflict(
        "instance",
        event.instance_id,
        format!("is deleted; no event after its `deleted` one (refused: {})", event.name()),
    )
}

#[async_trait]
impl QuotaRepository for MemoryInstanceRepository {
    async fn quota_override(&self, user: UserId) -> Result<Option<QuotaOverride>> {
        Ok(lock(&self.state).quotas.get(&user).copied())
    }

    async fn set_quota_override(
        &self,
        user: UserId,
        overrides: &QuotaOverride,
        _at: DateTime<Utc>,
    ) -> Result<()> {
        let mut state = lock(&self.state);
        if overrides.is_empty() {
            state.quotas.remove(&user);
        } else {
            state.quotas.insert(user, *overrides);
        }
        Ok(())
    }
}

#[async_trait]
impl Outbox for MemoryInstanceRepository {
    async fn claim(&self, relay: &str, limit: u32, lease: Duration) -> Result<Vec<OutboxEntry>> {
        let now = self.clock.now();
        let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let mut state = lock(&self.state);
        let State { outbox, claims, .. } = &mut *state;
        let mut claimed = Vec::new();
        for stored in outbox.iter().filter(|s| s.is_waiting()) {
            if claimed.len() >= limit as usize {
                break;
            }
            let instance = stored.entry.event.instance_id;
            let ours = match claims.get(&instance) {
                Some(claim) if claim.relay != relay && claim.until >= now => false,
                _ => {
                    claims.insert(instance, Claim { relay: relay.to_owned(), until });
                    true
                }
            };
            if ours {
                claimed.push(stored.entry.clone());
            }
        }
        Ok(claimed)
    }

    async fn mark_sent(&self, relay: &str, seqs: &[u64]) -> Result<()> {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        let State { outbox, claims, .. } = &mut *state;
        for stored in outbox.iter_mut().filter(|s| seqs.contains(&s.entry.seq)) {
            stored.sent_at.get_or_insert(now);
        }
        claims.retain(|instance, claim| {
            claim.relay != relay
                || outbox.iter().any(|s| s.is_waiting() && s.entry.event.instance_id == *instance)
        });
        Ok(())
    }

    async fn release(&self, relay: &str) -> Result<()> {
        lock(&self.state).claims.retain(|_, claim| claim.relay != relay);
        Ok(())
    }

    async fn stats(&self) -> Result<OutboxStats> {
        let state = lock(&self.state);
        let mut pending = state.outbox.iter().filter(|s| s.is_waiting());
        let oldest_pending_at = pending.clone().map(|s| s.entry.created_at).min();
        let parked = state.outbox.iter().filter(|s| s.parked_at.is_some()).count() as u64;
        Ok(OutboxStats { pending: pending.by_ref().count() as u64, parked, oldest_pending_at })
    }

    async fn purge_sent(&self, sent_before: DateTime<Utc>) -> Result<u64> {
        let mut state = lock(&self.state);
        let before = state.outbox.len();
        state.outbox.retain(|s| s.sent_at.is_none_or(|at| at >= sent_before));
        Ok((before - state.outbox.len()) as u64)
    }

    async fn record_failure(&self, seq: u64, error: &str) -> Result<u32> {
        let mut state = lock(&self.state);
        let Some(stored) = state.outbox.iter_mut().find(|s| s.entry.seq == seq && s.is_waiting())
        else {
            return Ok(0);
        };
        stored.attempts = stored.attempts.saturating_add(1);
        stored.error = Some(error.to_owned());
        Ok(stored.attempts)
    }

    async fn park(&self, seq: u64, error: &str) -> Result<()> {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        if let Some(stored) = state.outbox.iter_mut().find(|s| s.entry.seq == seq && s.is_waiting())
        {
            stored.parked_at = Some(now);
            stored.error = Some(error.to_owned());
        }
        Ok(())
    }

    async fn parked(&self, limit: u32) -> Result<Vec<ParkedEntry>> {
        let state = lock(&self.state);
        Ok(state
            .outbox
            .iter()
            .filter_map(|s| {
                Some(ParkedEntry {
                    entry: s.entry.clone(),
                    attempts: s.attempts,
                    error: s.error.clone().unwrap_or_default(),
                    parked_at: s.parked_at?,
                })
            })
            .take(limit as usize)
            .collect())
    }

    async fn retry_parked(&self, seq: u64) -> Result<bool> {
        let mut state = lock(&self.state);
        let Some(stored) =
            state.outbox.iter_mut().find(|s| s.entry.seq == seq && s.parked_at.is_some())
        else {
            return Ok(false);
        };
        stored.parked_at = None;
        stored.attempts = 0;
        Ok(true)
    }

    async fn drop_parked(&self, seq: u64) -> Result<bool> {
        let mut state = lock(&self.state);
        let before = state.outbox.len();
        state.outbox.retain(|s| !(s.entry.seq == seq && s.parked_at.is_some()));
        Ok(state.outbox.len() < before)
    }
}

/// The repository's leases, as a store's are beside its instances.
#[async_trait]
impl crate::leases::Leases for MemoryInstanceRepository {
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<u64>> {
        self.leases.acquire_lease(name, holder, ttl).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.leases.release_lease(name, holder).await
    }

    async fn lease_holder(&self, name: &str) -> Result<Option<crate::leases::LeaseHolder>> {
        self.leases.lease_holder(name).await
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::event::EventAction;
    use crate::instance::{InstanceName, InstanceSpec, NginxSpec, Resources};

    fn nginx(owner: UserId, name: &str) -> Instance {
        Instance::new(
            owner,
            InstanceName::new(name).unwrap(),
            InstanceSpec::Nginx(NginxSpec::default()),
            Resources::default(),
            Utc::now(),
        )
        .unwrap()
    }

    fn event_for(instance: &Instance, action: EventAction) -> InfrastructureEvent {
        InfrastructureEvent::new(instance.id, instance.owner, instance.kind(), action, Utc::now())
    }

    fn change(instance: &Instance, expected: Option<u64>, to: InstanceStatus) -> StatusChange {
        StatusChange {
            id: instance.id,
            expected_version: expected,
            to,
            event: event_for(instance, EventAction::for_status(to)),
            at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn create_writes_the_instance_and_its_event() {
        let repo = MemoryInstanceRepository::new();
        let web = nginx(UserId::new_random(), "web");
        let created = event_for(&web, EventAction::Created);
        repo.create_instance(&web, &created).await.unwrap();
        assert_eq!(repo.get_instance(web.id).await.unwrap(), Some(web));
        assert_eq!(repo.outbox(), vec![created]);
    }

    #[tokio::test]
    async fn names_are_unique_per_owner_only() {
        let repo = MemoryInstanceRepository::new();
        let owner = UserId::new_random();
        let first = nginx(owner, "web");
        repo.create_instance(&first, &event_for(&first, EventAction::Created)).await.unwrap();
        let same_owner = nginx(owner, "web");
        let err = repo
            .create_instance(&same_owner, &event_for(&same_owner, EventAction::Created))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }));
        assert_eq!(repo.outbox().len(), 1, "a refused write leaves no event");
        let other_owner = nginx(UserId::new_random(), "web");
        repo.create_instance(&other_owner, &event_for(&other_owner, EventAction::Created))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_stale_version_is_a_conflict_and_writes_nothing() {
        let repo = MemoryInstanceRepository::new();
        let web = nginx(UserId::new_random(), "web");
        repo.create_instance(&web, &event_for(&web, EventAction::Created)).await.unwrap();
        let running =
            repo.update_status(change(&web, Some(0), InstanceStatus::Running)).await.unwrap();
        assert_eq!(running.version, 1);
        let err =
            repo.update_status(change(&web, Some(0), InstanceStatus::Stopped)).await.unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err}");
        assert_eq!(
            repo.get_instance(web.id).await.unwrap().unwrap().status,
            InstanceStatus::Running
        );
        assert_eq!(repo.outbox().len(), 2);
    }

    #[tokio::test]
    async fn illegal_transitions_are_typed_errors() {
        let repo = MemoryInstanceRepository::new();
        let web = nginx(UserId::new_random(), "web");
        repo.create_instance(&web, &event_for(&web, EventAction::Created)).await.unwrap();
        repo.update_status(change(&web, None, InstanceStatus::Deleted)).await.unwrap();
        let err =
            repo.update_status(change(&web, None, InstanceStatus::Running)).await.unwrap_err();
        assert!(matches!(err, Error::InvalidTransition(_)), "{err}");
    }

    #[tokio::test]
    async fn an_unchanged_status_writes_no_event() {
        let repo = MemoryInstanceRepository::new();
        let web = nginx(UserId::new_random(), "web");
        repo.create_instance(&web, &event_for(&web, EventAction::Created)).await.unwrap();
        repo.update_status(change(&web, None, InstanceStatus::Running)).await.unwrap();
        let again = repo.update_status(change(&web, None, InstanceStatus::Running)).await.unwrap();
        assert_eq!(again.version, 1);
        assert_eq!(repo.outbox().len(), 2);
    }

    #[tokio::test]
    async fn deleted_instances_are_not_active() {
        let repo = MemoryInstanceRepository::new();
        let owner = UserId::new_random();
        let (a, b) = (nginx(owner, "a"), nginx(owner, "b"));
        for i in [&a, &b] {
            repo.create_instance(i, &event_for(i, EventAction::Created)).await.unwrap();
        }
        repo.update_status(change(&a, None, InstanceStatus::Deleted)).await.unwrap();
        let active: Vec<_> =
            repo.list_active_instances().await.unwrap().into_iter().map(|i| i.id).collect();
        assert_eq!(active, vec![b.id]);
        assert_eq!(repo.list_instances_by_owner(owner).await.unwrap().len(), 2);
        assert!(repo.list_instances_by_owner(UserId::new_random()).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_recorded_event_changes_nothing_but_the_outbox() {
        let repo = MemoryInstanceRepository::new();
        let web = nginx(UserId::new_random(), "web");
        repo.create_instance(&web, &event_for(&web, EventAction::Created)).await.unwrap();
        let running =
            repo.update_status(change(&web, Some(0), InstanceStatus::Running)).await.unwrap();
        let failover = event_for(&web, EventAction::Failover);
        repo.record_event(&failover).await.unwrap();
        assert_eq!(repo.get_instance(web.id).await.unwrap(), Some(running));
        assert_eq!(repo.outbox().last(), Some(&failover));
        // The version did not move: a writer that read it before still succeeds.
        repo.update_status(change(&web, Some(1), InstanceStatus::Stopped)).await.unwrap();

        let ghost = nginx(UserId::new_random(), "ghost");
        let err = repo.record_event(&event_for(&ghost, EventAction::Failover)).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        repo.update_status(change(&web, None, InstanceStatus::Deleted)).await.unwrap();
        let err = repo.record_event(&event_for(&web, EventAction::Failover)).await.unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err}");
        assert_eq!(repo.outbox().len(), 5, "created, started, failover, stopped, deleted");
    }

    fn created(instance: &Instance) -> InfrastructureEvent {
        event_for(instance, EventAction::Created)
    }

    #[tokio::test]
    async fn relays_split_instances_and_keep_their_order() {
        let clock = Arc::new(crate::clock::ManualClock::new(Utc::now()));
        let repo = MemoryInstanceRepository::with_clock(clock.clone());
        let owner = UserId::new_random();
        let (a, b) = (nginx(owner, "a"), nginx(owner, "b"));
        repo.create_instance(&a, &created(&a)).await.unwrap();
        repo.create_instance(&b, &created(&b)).await.unwrap();
        repo.update_status(change(&a, None, InstanceStatus::Running)).await.unwrap();

        let lease = Duration::from_secs(30);
        let first = repo.claim("r1", 2, lease).await.unwrap();
        assert_eq!(first.iter().map(|e| e.event.instance_id).collect::<Vec<_>>(), [a.id, b.id]);
        // r2 gets neither a's remaining entry (r1 holds a) nor b's.
        assert!(repo.claim("r2", 10, lease).await.unwrap().is_empty());
        // r1 renews and gets a's second entry, after its first.
        let second = repo.claim("r1", 10, lease).await.unwrap();
        assert_eq!(second.len(), 3);
        assert!(second.windows(2).all(|w| w[0].seq < w[1].seq));

        repo.mark_sent("r1", &second.iter().map(|e| e.seq).collect::<Vec<_>>()).await.unwrap();
        assert_eq!(repo.stats().await.unwrap().pending, 0);
    }

    #[tokio::test]
    async fn an_expired_claim_is_taken_over_and_resent() {
        let clock = Arc::new(crate::clock::ManualClock::new(Utc::now()));
        let repo = MemoryInstanceRepository::with_clock(clock.clone());
        let web = nginx(UserId::new_random(), "web");
        repo.create_instance(&web, &created(&web)).await.unwrap();
        let lease = Duration::from_secs(30);
        let crashed = repo.claim("r1", 10, lease).await.unwrap();
        assert!(repo.claim("r2", 10, lease).await.unwrap().is_empty());
        clock.advance(chrono::Duration::seconds(31));
        let taken_over = repo.claim("r2", 10, lease).await.unwrap();
        assert_eq!(taken_over, crashed, "the same entry, so consumers can drop the duplicate");
    }

    #[tokio::test]
    async fn only_sent_entries_older_than_the_cutoff_are_purged() {
        let clock = Arc::new(crate::clock::ManualClock::new(Utc::now()));
        let repo = MemoryInstanceRepository::with_clock(clock.clone());
        let owner = UserId::new_random();
        let (a, b) = (nginx(owner, "a"), nginx(owner, "b"));
        repo.create_instance(&a, &created(&a)).await.unwrap();
        repo.create_instance(&b, &created(&b)).await.unwrap();
        let claimed = repo.claim("r1", 1, Duration::from_secs(30)).await.unwrap();
        repo.mark_sent("r1", &[claimed[0].seq]).await.unwrap();
        clock.advance(chrono::Duration::hours(1));
        let stats = repo.stats().await.unwrap();
        assert_eq!(stats.pending, 1);
        assert_eq!(stats.oldest_pending_age(clock.now()), Duration::from_secs(3600));
        assert_eq!(repo.purge_sent(clock.now()).await.unwrap(), 1);
        assert_eq!(repo.outbox().len(), 1, "the unsent entry stays");
    }
}
