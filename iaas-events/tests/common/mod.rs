//! Helpers shared by the test binaries.

#![allow(dead_code, unreachable_pub, reason = "each test binary uses part of this shared module")]

use std::collections::HashMap;

use chrono::Utc;
use iaas_core::{
    EventAction, InfrastructureEvent, Instance, InstanceName, InstanceRepository, InstanceSpec,
    InstanceStatus, NginxSpec, Resources, StatusChange, UserId,
};

/// Writes `instances` instances with `changes` status changes each; returns the event ids per
/// instance in commit order.
pub async fn write_events(
    repo: &dyn InstanceRepository,
    instances: usize,
    changes: usize,
) -> HashMap<iaas_core::InstanceId, Vec<iaas_core::EventId>> {
    write_events_for(repo, UserId::new_random(), instances, changes).await
}

/// [`write_events`] for instances owned by `owner`.
pub async fn write_events_for(
    repo: &dyn InstanceRepository,
    owner: UserId,
    instances: usize,
    changes: usize,
) -> HashMap<iaas_core::InstanceId, Vec<iaas_core::EventId>> {
    let mut written: HashMap<_, Vec<_>> = HashMap::new();
    for i in 0..instances {
        let instance = Instance::new(
            owner,
            InstanceName::new(format!("svc-{i}")).unwrap(),
            InstanceSpec::Nginx(NginxSpec::default()),
            Resources::default(),
            Utc::now(),
        )
        .unwrap();
        let created = InfrastructureEvent::new(
            instance.id,
            owner,
            instance.kind(),
            EventAction::Created,
            Utc::now(),
        );
        repo.create_instance(&instance, &created).await.unwrap();
        written.entry(instance.id).or_default().push(created.id);
        for step in 0..changes {
            let to = if step % 2 == 0 { InstanceStatus::Running } else { InstanceStatus::Stopped };
            let event = InfrastructureEvent::new(
                instance.id,
                owner,
                instance.kind(),
                EventAction::for_status(to),
                Utc::now(),
            );
            written.entry(instance.id).or_default().push(event.id);
            repo.update_status(StatusChange {
                id: instance.id,
                expected_version: None,
                to,
                event,
                at: Utc::now(),
            })
            .await
            .unwrap();
        }
    }
    written
}
