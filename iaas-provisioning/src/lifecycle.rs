//! Who caused a status change, and what is recorded for it: the one rule the watcher, the
//! reconciler and the API's actions share ([`outcome`]).
//!
//! A stop, start, restart or delete asked for through the API is recorded at once as a
//! transitional status (`stopping`, `starting`, `restarting`, `deleting`), before the engine is
//! asked; whatever the engine then shows is read as that action's outcome. Only what nobody
//! asked for (a crash, an OOM kill, a `docker kill` behind the platform's back) is `failed`.
//!
//! | the instance is              | the engine shows                       | recorded                                 |
//! |------------------------------|----------------------------------------|------------------------------------------|
//! | `running`, `stopped`, `failed` | another state                        | that state: `started`, `stopped`, `failed` |
//! | `stopping`                   | the primary exited, whatever its code  | `stopped` (exit 137 adds `escalated=SIGKILL`) |
//! | `starting`                   | running                                | `started`                                |
//! | `starting`                   | exited, after the start returned       | `stopped` / `failed` by its exit         |
//! | `restarting`                 | running                                | `restarted`                              |
//! | `restarting`                 | exited, while the restart runs         | nothing: the restart's own stop          |
//! | `restarting`                 | exited, after the restart returned     | `stopped` / `failed` by its exit         |
//! | `deleting`                   | anything but the containers gone       | nothing: the removal is under way        |
//! | `stopping`, `starting`, `restarting`, begun longer ago than any action takes | any state | that state, `abandoned=true`: the process carrying it out died |
//! | anything but `deleted`       | no containers left                     | `deleted` (but see below)                |
//!
//! Two observations are left to others: while an instance is `provisioning`, only the start of
//! its last node counts, or the provisioning job finding it running once it is done (a failed
//! provisioning rolls back and records `failed` with the reason itself); and a `failed` instance a reconciliation finds without containers is what that
//! rollback leaves, so it stays failed (a removal seen on the event stream still makes it
//! `deleted`; for a highly available cluster, once none of its members and store is left).
//!
//! The watcher applies the engine's events ([`Seen::EngineEvent`]); the action's own task
//! applies what it inspects once the engine call returned ([`Seen::ActionDone`]), which covers
//! an action that changed nothing on the engine (stopping a container that had already
//! exited emits no event); the reconciler ([`Seen::Reconciliation`]) leaves an action under way
//! to those two. Whoever comes first records the outcome; the others find the status already
//! there and write nothing.

use iaas_core::{
    Clock, Error, EventAction, InfrastructureEvent, Instance, InstanceRepository, InstanceStatus,
    PrimaryState, StatusChange,
};

/// Exit status of a main process ended by SIGKILL (128 + 9): a stop that had to escalate after
/// the stop timeout (the engine also reports it for a `docker kill`, which is no stop).
const KILLED_BY_SIGKILL: i64 = 137;

/// Who saw an instance's containers in the state they report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Seen {
    /// The engine's event stream, while any action may still be running.
    EngineEvent,
    /// The task of an action the user asked for, after the engine call returned.
    ActionDone,
    /// A reconciliation pass, which cannot tell whether an action is still running.
    Reconciliation,
    /// A reconciliation pass, about an action that began longer ago than any action takes
    /// (`WatcherConfig::action_deadline`): the process carrying it out died, or never heard
    /// back from the engine. Its outcome is whatever the engine shows.
    Abandoned,
}

/// What to record when an instance that is `current` is seen `observed` (the status its
/// primary's state stands for; `deleted` when no container is left): the status and the action
/// of its event, or nothing. See the module docs for the table.
pub fn outcome(
    current: InstanceStatus,
    observed: InstanceStatus,
    seen: Seen,
) -> Option<(InstanceStatus, EventAction)> {
    use InstanceStatus::{
        Deleted, Deleting, Failed, Provisioning, Restarting, Running, Starting, Stopped, Stopping,
    };
    if current == observed || current == Deleted {
        return None;
    }
    let recorded = match (current, observed, seen) {
        (Stopping | Starting | Restarting, Running | Stopped | Failed, Seen::Abandoned) => observed,
        // Provisioning reports its own outcome (a failure rolls back, removing what it made,
        // and records `failed` with the reason); only its last node starting means running.
        (Provisioning, Running, Seen::EngineEvent | Seen::ActionDone) => Running,
        (Provisioning, _, _) => return None,
        // What a failed provisioning leaves: failed, with its reason, until the user deletes
        // it (a removal seen happening still makes it deleted).
        (Failed, Deleted, Seen::Reconciliation) => return None,
        (_, Deleted, _) => Deleted,
        (Deleting, _, _) => return None,
        // A stopped container is the outcome of the stop, whatever its exit code says.
        (Stopping, Stopped | Failed, _) => Stopped,
        (Stopping, _, _) => return None,
        // Only the start's own event counts: a `stop` event can arrive after the start was
        // asked for, the tail of the stop before it. A start that did not take is what its
        // task finds once the engine answered.
        (Starting, Running, _) => Running,
        (Starting, Stopped | Failed, Seen::ActionDone) => observed,
        (Starting, _, _) => return None,
        (Restarting, Running, Seen::EngineEvent | Seen::ActionDone) => {
            return Some((Running, EventAction::Restarted));
        }
        (Restarting, Stopped | Failed, Seen::ActionDone) => observed,
        (Restarting, _, _) => return None,
        // Nobody on the platform asked: the engine's word stands.
        (Running | Stopped | Failed, Running | Stopped | Failed, _) => observed,
        _ => return None,
    };
    current.can_change_to(recorded).then(|| (recorded, EventAction::for_status(recorded)))
}
/// Records what [`outcome`] makes of `observed` for `instance` (as read just before): the new
/// status with its event, in one transaction. Returns whether a status changed; a change made
/// illegal meanwhile by another writer (the instance was deleted) is no change.
///
/// An action's own task ([`Seen::ActionDone`]) records only over the version its action began
/// with: once anything was recorded since (the watcher saw the outcome first, or the user
/// already asked for the next action), what it found is no longer news.
pub(crate) async fn record(
    repo: &dyn InstanceRepository,
    clock: &dyn Clock,
    instance: &Instance,
    observed: &PrimaryState,
    seen: Seen,
    docker_action: Option<&str>,
) -> Result<bool, Error> {
    let Some((status, action)) = outcome(instance.status, observed.status, seen) else {
        return Ok(false);
    };
    // Recorded at the time the engine was seen so: a later observation of an older state (an
    // event arriving late) can then be told apart (see the watcher).
    let now = observed.observed_at.unwrap_or_else(|| clock.now());
    let mut event =
        InfrastructureEvent::new(instance.id, instance.owner, instance.kind(), action, now)
            .with_metadata("status", status.as_str());
    if !observed.container_id.is_empty() {
        event = event
            .with_metadata("container_id", &observed.container_id)
            .with_metadata("container_name", &observed.name);
    }
    if let Some(action) = docker_action {
        event = event.with_metadata("docker_action", action);
    }
    if let Some(code) = observed.exit_code.filter(|_| observed.status != InstanceStatus::Running) {
        event = event.with_metadata("exit_code", code.to_string());
    }
    if instance.status == InstanceStatus::Stopping && observed.exit_code == Some(KILLED_BY_SIGKILL)
    {
        event = event.with_metadata("escalated", "SIGKILL");
    }
    if let (EventAction::Restarted | EventAction::Started, Some(at)) =
        (&event.action, &observed.started_at)
    {
        event = event.with_metadata("started_at", at);
    }
    if matches!(seen, Seen::Reconciliation | Seen::Abandoned) {
        event = event.with_metadata("reconciled", "true");
    }
    if seen == Seen::Abandoned {
        event = event.with_metadata("abandoned", instance.status.as_str());
    }
    let expected_version =
        matches!(seen, Seen::ActionDone | Seen::Abandoned).then_some(instance.version);
    let change = StatusChange { id: instance.id, expected_version, to: status, event, at: now };
    match repo.update_status(change).await {
        Ok(_) => {
            tracing::info!(instance_id = %instance.id, from = %instance.status, to = %status, ?seen, "instance status follows the engine");
            Ok(true)
        }
        Err(Error::InvalidTransition(_)) => Ok(false),
        Err(Error::Conflict { .. }) if expected_version.is_some() => Ok(false),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceStatus::*;

    const SEEN: [Seen; 3] = [Seen::EngineEvent, Seen::ActionDone, Seen::Reconciliation];

    #[test]
    fn an_abandoned_action_ends_where_the_engine_is() {
        for current in [Stopping, Starting, Restarting] {
            for observed in [Running, Stopped, Failed] {
                assert_eq!(
                    outcome(current, observed, Seen::Abandoned),
                    Some((observed, EventAction::for_status(observed))),
                    "{current} seen {observed}"
                );
            }
        }
        assert_eq!(outcome(Deleting, Running, Seen::Abandoned), None, "the reconciler removes it");
    }

    #[test]
    fn an_exit_while_stopping_is_the_stop_whatever_the_code() {
        for seen in SEEN {
            assert_eq!(outcome(Stopping, Failed, seen), Some((Stopped, EventAction::Stopped)));
            assert_eq!(outcome(Stopping, Stopped, seen), Some((Stopped, EventAction::Stopped)));
            assert_eq!(outcome(Stopping, Running, seen), None, "{seen:?}: still stopping");
        }
    }

    #[test]
    fn what_nobody_asked_for_is_recorded_as_the_engine_says() {
        for seen in SEEN {
            assert_eq!(outcome(Running, Failed, seen), Some((Failed, EventAction::Failed)));
            assert_eq!(outcome(Running, Stopped, seen), Some((Stopped, EventAction::Stopped)));
            assert_eq!(outcome(Stopped, Running, seen), Some((Running, EventAction::Started)));
            assert_eq!(outcome(Failed, Running, seen), Some((Running, EventAction::Started)));
        }
    }

    #[test]
    fn a_restart_ends_restarted_and_its_own_stop_is_not_an_outcome() {
        assert_eq!(outcome(Restarting, Failed, Seen::EngineEvent), None);
        assert_eq!(outcome(Restarting, Stopped, Seen::EngineEvent), None);
        assert_eq!(
            outcome(Restarting, Running, Seen::EngineEvent),
            Some((Running, EventAction::Restarted))
        );
        assert_eq!(
            outcome(Restarting, Running, Seen::ActionDone),
            Some((Running, EventAction::Restarted))
        );
        // Exited after the restart returned: the process's own doing.
        assert_eq!(
            outcome(Restarting, Failed, Seen::ActionDone),
            Some((Failed, EventAction::Failed))
        );
        assert_eq!(outcome(Restarting, Running, Seen::Reconciliation), None);
    }

    #[test]
    fn a_start_ends_started_or_by_the_exit_its_task_saw() {
        for seen in SEEN {
            assert_eq!(outcome(Starting, Running, seen), Some((Running, EventAction::Started)));
        }
        assert_eq!(
            outcome(Starting, Failed, Seen::ActionDone),
            Some((Failed, EventAction::Failed))
        );
        assert_eq!(outcome(Starting, Stopped, Seen::EngineEvent), None, "the last stop's tail");
        assert_eq!(outcome(Starting, Stopped, Seen::Reconciliation), None, "may be under way");
    }

    #[test]
    fn only_the_containers_going_ends_a_delete_and_it_ends_anything() {
        for seen in SEEN {
            for current in [Running, Stopped, Stopping, Starting, Restarting, Deleting] {
                assert_eq!(outcome(current, Deleted, seen), Some((Deleted, EventAction::Deleted)));
            }
            for observed in [Running, Stopped, Failed] {
                assert_eq!(outcome(Deleting, observed, seen), None);
            }
            assert_eq!(outcome(Deleted, Running, seen), None, "deleted is terminal");
        }
    }

    #[test]
    fn a_failed_instance_without_containers_is_deleted_only_when_the_removal_was_seen() {
        assert_eq!(outcome(Failed, Deleted, Seen::Reconciliation), None);
        assert_eq!(
            outcome(Failed, Deleted, Seen::EngineEvent),
            Some((Deleted, EventAction::Deleted))
        );
        assert_eq!(
            outcome(Failed, Deleted, Seen::ActionDone),
            Some((Deleted, EventAction::Deleted))
        );
    }

    #[test]
    fn provisioning_reports_itself_but_its_last_start() {
        assert_eq!(outcome(Provisioning, Deleted, Seen::EngineEvent), None, "a rollback's removal");
        assert_eq!(
            outcome(Provisioning, Running, Seen::EngineEvent),
            Some((Running, EventAction::Started))
        );
        assert_eq!(outcome(Provisioning, Failed, Seen::EngineEvent), None);
        assert_eq!(outcome(Provisioning, Running, Seen::Reconciliation), None);
        assert_eq!(
            outcome(Provisioning, Running, Seen::ActionDone),
            Some((Running, EventAction::Started)),
            "the provisioning job, once its containers run"
        );
    }

    #[test]
    fn every_outcome_is_a_legal_transition() {
        for current in InstanceStatus::ALL {
            for observed in [Running, Stopped, Failed, Deleted] {
                for seen in [SEEN.as_slice(), &[Seen::Abandoned]].concat() {
                    if let Some((to, _)) = outcome(current, observed, seen) {
                        assert!(current.can_change_to(to), "{current} -> {to}");
                    }
                }
            }
        }
    }
}
