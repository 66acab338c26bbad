//! From Docker engine events to instance statuses.
//!
//! The engine reports what happened to a container (`start`, `kill`, `die`, `stop`,
//! `destroy`, `oom`, ...). Only some of these change what the platform says about an
//! instance:
//!
//! | engine event                    | status   |
//! |---------------------------------|----------|
//! | `start`                         | running  |
//! | `stop`, `pause`                 | stopped  |
//! | `die` with exit code 0          | stopped  |
//! | `die` with another exit code    | failed   |
//! | `oom`                           | failed   |
//! | `destroy`                       | deleted  |
//!
//! The `destroy` of a highly available cluster's endpoint is the exception: what the cluster's
//! other containers are then decides (`failed`, `stopped` or `deleted`, see
//! [`status_without_primary`](iaas_core::runtime::status_without_primary)), read when the
//! event arrives (`crate::watch`).
//!
//! Everything else (`create`, `attach`, `exec_*`, `health_status`, ...) changes nothing.
//!
//! `kill` is deliberately not mapped (the target design listed it with `stop`): it only
//! reports that a signal was sent, and `docker kill -s HUP` asks nginx to reload, not to stop.
//! The `die` that follows a fatal signal reports the outcome. The order the engine uses for
//! `docker stop` is `kill`, `die`, `stop`, so a container stopped while its process ignored
//! SIGTERM (exit 137) is briefly `failed`, then `stopped`; a `docker kill` ends `failed`,
//! because nothing asked it to stop.
//!
//! An inspected container state (what the reconciler and the cluster info read) has no such
//! history, so [`status_for_state`] reads an exit by the stop signals (137, 143, not OOM) as
//! `stopped`, the outcome of a stop; the reconciler leaves a `failed` instance in that state
//! as it is, so what the watcher saw of a bare `docker kill` stands.
//!
//! # Instances of several nodes
//!
//! A PostgreSQL cluster is a primary and its streaming replicas, but an instance has one
//! status. The rule: **the primary decides**. An engine event about the primary maps through
//! the table above; an event about a replica never changes the instance's status, so a replica
//! that stops, dies or is removed leaves a running cluster `running` (clients of the primary
//! are served; reads on that replica are not). The core life cycle has no `degraded` status
//! (see `InstanceStatus` and ARCHITECTURE.md), and adding one would ripple through the store,
//! the events and every consumer for a state clients can already read: the cluster info lists
//! each node with `running: false` for a replica that is down, and the replication view no
//! longer shows it streaming.
//!
//! The watcher ([`status_for_event`] + [`role_decides_status`]), the reconciler and the
//! cluster info ([`status_for_state`] on the primary's container) apply the same rule
//! ([`role_decides_status`] is the runtime port's, in `iaas_core::runtime`), so a
//! reconciliation pass never "repairs" what the watcher decided. A container without a role
//! label counts as a primary (every single-node instance is one).

use std::collections::HashMap;

use bollard::models::ContainerState;
use iaas_core::InstanceStatus;
use iaas_core::runtime::exited_by_stop_signal;
#[cfg(doc)]
use iaas_core::runtime::role_decides_status;

/// The status a container's inspected state stands for: running; paused, cleanly exited or
/// ended by the signals of a stop (exit 137 or 143 without the OOM killer) = stopped;
/// OOM-killed or exited with another code = failed.
///
/// This agrees with what [`status_for_event`] ends at after a stop (`kill`, `die` with 137 or
/// 143, `stop`: stopped), which is the common case: the platform's own stop, or an operator's
/// `docker stop`. The state alone cannot tell that from a bare `docker kill`, which the event
/// path sees end `failed` (no `stop` event follows its `die`); the reconciler therefore leaves a
/// `failed` instance whose primary exited by such a signal as it is, rather than "repair" what
/// the watcher saw happen.
pub fn status_for_state(state: &ContainerState) -> InstanceStatus {
    if state.paused.unwrap_or(false) {
        InstanceStatus::Stopped
    } else if state.running.unwrap_or(false) {
        InstanceStatus::Running
    } else if state.oom_killed.unwrap_or(false) {
        InstanceStatus::Failed
    } else {
        match state.exit_code.unwrap_or(0) {
            0 => InstanceStatus::Stopped,
            code if exited_by_stop_signal(code) => InstanceStatus::Stopped,
            _ => InstanceStatus::Failed,
        }
    }
}

/// The status an engine event implies for the container's instance, if any.
pub fn status_for_event(
    action: &str,
    attributes: &HashMap<String, String>,
) -> Option<InstanceStatus> {
    // Actions can carry a suffix (`exec_start: sh`, `health_status: healthy`).
    let action = action.split(':').next().unwrap_or_default().trim();
    match action {
        "start" | "restart" | "unpause" => Some(InstanceStatus::Running),
        "stop" | "pause" => Some(InstanceStatus::Stopped),
        "die" => match attributes.get("exitCode").map(|code| code.trim()) {
            Some("0") => Some(InstanceStatus::Stopped),
            _ => Some(InstanceStatus::Failed),
        },
        "oom" => Some(InstanceStatus::Failed),
        "destroy" => Some(InstanceStatus::Deleted),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn the_table_of_the_module_docs() {
        let none = HashMap::new();
        assert_eq!(status_for_event("start", &none), Some(InstanceStatus::Running));
        assert_eq!(status_for_event("stop", &none), Some(InstanceStatus::Stopped));
        assert_eq!(
            status_for_event("kill", &attrs(&[("signal", "1")])),
            None,
            "a signal is not an outcome"
        );
        assert_eq!(
            status_for_event("die", &attrs(&[("exitCode", "0")])),
            Some(InstanceStatus::Stopped)
        );
        assert_eq!(
            status_for_event("die", &attrs(&[("exitCode", "137")])),
            Some(InstanceStatus::Failed)
        );
        assert_eq!(
            status_for_event("die", &none),
            Some(InstanceStatus::Failed),
            "no exit code is not a clean exit"
        );
        assert_eq!(status_for_event("oom", &none), Some(InstanceStatus::Failed));
        assert_eq!(status_for_event("destroy", &none), Some(InstanceStatus::Deleted));
    }

    #[test]
    fn events_that_change_nothing_map_to_none() {
        for action in
            ["create", "attach", "exec_start: sh -c true", "health_status: healthy", "rename", ""]
        {
            assert_eq!(status_for_event(action, &HashMap::new()), None, "{action}");
        }
    }

    #[test]
    fn container_states_agree_with_the_events_that_led_there() {
        let state = |running, paused, oom, code| ContainerState {
            running: Some(running),
            paused: Some(paused),
            oom_killed: Some(oom),
            exit_code: Some(code),
            ..Default::default()
        };
        assert_eq!(status_for_state(&state(true, false, false, 0)), InstanceStatus::Running);
        assert_eq!(status_for_state(&state(true, true, false, 0)), InstanceStatus::Stopped);
        assert_eq!(status_for_state(&state(false, false, false, 0)), InstanceStatus::Stopped);
        // What `docker stop` leaves: SIGTERM honoured (143) or SIGKILL after the timeout (137).
        assert_eq!(status_for_state(&state(false, false, false, 137)), InstanceStatus::Stopped);
        assert_eq!(status_for_state(&state(false, false, false, 143)), InstanceStatus::Stopped);
        assert_eq!(status_for_state(&state(false, false, false, 1)), InstanceStatus::Failed);
        assert_eq!(status_for_state(&state(false, false, false, 139)), InstanceStatus::Failed);
        assert_eq!(status_for_state(&state(false, false, true, 137)), InstanceStatus::Failed);
        assert_eq!(status_for_state(&state(false, false, true, 0)), InstanceStatus::Failed);
        assert_eq!(status_for_state(&ContainerState::default()), InstanceStatus::Stopped);
    }

    proptest! {
        /// Any action and attributes from the engine (or a hostile one) map without panicking,
        /// and only the known actions map to a status.
        #[test]
        fn arbitrary_events_never_panic(
            action in ".{0,40}",
            attributes in prop::collection::hash_map(".{0,12}", ".{0,12}", 0..5),
        ) {
            let status = status_for_event(&action, &attributes);
            let head = action.split(':').next().unwrap_or_default().trim().to_owned();
            let known = ["start", "restart", "unpause", "stop", "pause", "die", "oom", "destroy"];
            prop_assert_eq!(status.is_some(), known.contains(&head.as_str()));
        }
    }
}
