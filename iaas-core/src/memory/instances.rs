use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::error::{Error, Result};
use crate::event::InfrastructureEvent;
use crate::id::{InstanceId, UserId};
use crate::instance::Instance;
use crate::repository::{InstanceRepository, StatusChange};
use crate::status::{InstanceStatus, Transition};

#[derive(Debug, Default)]
struct State {
    instances: HashMap<InstanceId, Instance>,
    outbox: Vec<InfrastructureEvent>,
}

/// [`InstanceRepository`] in memory, with its outbox as a list of events in write order.
#[derive(Debug, Default)]
pub struct MemoryInstanceRepository {
    state: Mutex<State>,
}

impl MemoryInstanceRepository {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
    }

    /// The events written so far, in commit order.
    pub fn outbox(&self) -> Vec<InfrastructureEvent> {
        lock(&self.state).outbox.clone()
    }

    /// Removes and returns the events written so far (what a relay would publish).
    pub fn drain_outbox(&self) -> Vec<InfrastructureEvent> {
        std::mem::take(&mut lock(&self.state).outbox)
    }
}

#[async_trait]
impl InstanceRepository for MemoryInstanceRepository {
    async fn create(&self, instance: &Instance, event: &InfrastructureEvent) -> Result<()> {
        let mut state = lock(&self.state);
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
        state.outbox.push(event.clone());
        Ok(())
    }

    async fn get(&self, id: InstanceId) -> Result<Option<Instance>> {
        Ok(lock(&self.state).instances.get(&id).cloned())
    }

    async fn list_by_owner(&self, owner: UserId) -> Result<Vec<Instance>> {
        let mut list: Vec<_> =
            lock(&self.state).instances.values().filter(|i| i.owner == owner).cloned().collect();
        list.sort_by_key(|i| (i.created_at, i.id));
        Ok(list)
    }

    async fn list_active(&self) -> Result<Vec<Instance>> {
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
            return Err(Error::conflict(
                "instance",
                change.id,
                format!("version is {}, expected {expected}", instance.version),
            ));
        }
        match instance.status.transition_to(change.to)? {
            Transition::Unchanged(_) => Ok(instance.clone()),
            Transition::Changed { to, .. } => {
                instance.status = to;
                instance.version += 1;
                instance.updated_at = change.at;
                let updated = instance.clone();
                state.outbox.push(change.event);
                Ok(updated)
            }
        }
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
        repo.create(&web, &created).await.unwrap();
        assert_eq!(repo.get(web.id).await.unwrap(), Some(web));
        assert_eq!(repo.outbox(), vec![created]);
    }

    #[tokio::test]
    async fn names_are_unique_per_owner_only() {
        let repo = MemoryInstanceRepository::new();
        let owner = UserId::new_random();
        let first = nginx(owner, "web");
        repo.create(&first, &event_for(&first, EventAction::Created)).await.unwrap();
        let same_owner = nginx(owner, "web");
        let err = repo
            .create(&same_owner, &event_for(&same_owner, EventAction::Created))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }));
        assert_eq!(repo.outbox().len(), 1, "a refused write leaves no event");
        let other_owner = nginx(UserId::new_random(), "web");
        repo.create(&other_owner, &event_for(&other_owner, EventAction::Created)).await.unwrap();
    }

    #[tokio::test]
    async fn a_stale_version_is_a_conflict_and_writes_nothing() {
        let repo = MemoryInstanceRepository::new();
        let web = nginx(UserId::new_random(), "web");
        repo.create(&web, &event_for(&web, EventAction::Created)).await.unwrap();
        let running =
            repo.update_status(change(&web, Some(0), InstanceStatus::Running)).await.unwrap();
        assert_eq!(running.version, 1);
        let err =
            repo.update_status(change(&web, Some(0), InstanceStatus::Stopped)).await.unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err}");
        assert_eq!(repo.get(web.id).await.unwrap().unwrap().status, InstanceStatus::Running);
        assert_eq!(repo.outbox().len(), 2);
    }

    #[tokio::test]
    async fn illegal_transitions_are_typed_errors() {
        let repo = MemoryInstanceRepository::new();
        let web = nginx(UserId::new_random(), "web");
        repo.create(&web, &event_for(&web, EventAction::Created)).await.unwrap();
        repo.update_status(change(&web, None, InstanceStatus::Deleted)).await.unwrap();
        let err =
            repo.update_status(change(&web, None, InstanceStatus::Running)).await.unwrap_err();
        assert!(matches!(err, Error::InvalidTransition(_)), "{err}");
    }

    #[tokio::test]
    async fn an_unchanged_status_writes_no_event() {
        let repo = MemoryInstanceRepository::new();
        let web = nginx(UserId::new_random(), "web");
        repo.create(&web, &event_for(&web, EventAction::Created)).await.unwrap();
        repo.update_status(change(&web, None, InstanceStatus::Running)).await.unwrap();
        let again = repo.update_status(change(&web, None, InstanceStatus::Running)).await.unwrap();
        assert_eq!(again.version, 1);
        assert_eq!(repo.drain_outbox().len(), 2);
        assert!(repo.outbox().is_empty());
    }

    #[tokio::test]
    async fn deleted_instances_are_not_active() {
        let repo = MemoryInstanceRepository::new();
        let owner = UserId::new_random();
        let (a, b) = (nginx(owner, "a"), nginx(owner, "b"));
        for i in [&a, &b] {
            repo.create(i, &event_for(i, EventAction::Created)).await.unwrap();
        }
        repo.update_status(change(&a, None, InstanceStatus::Deleted)).await.unwrap();
        let active: Vec<_> = repo.list_active().await.unwrap().into_iter().map(|i| i.id).collect();
        assert_eq!(active, vec![b.id]);
        assert_eq!(repo.list_by_owner(owner).await.unwrap().len(), 2);
        assert!(repo.list_by_owner(UserId::new_random()).await.unwrap().is_empty());
    }
}
