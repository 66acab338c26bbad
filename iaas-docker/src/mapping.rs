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
//! Everything else (`create`, `attach`, `exec_*`, `health_status`, ...) changes nothing.
//!
//! `kill` is deliberately not mapped (the target design listed it with `stop`): it only
//! reports that a signal was sent, and `docker kill -s HUP` asks nginx to reload, not to stop.
//! The `die` that follows a fatal signal reports the outcome. The order the engine uses for
//! `docker stop` is `kill`, `die`, `stop`, so a container stopped while its process ignored
//! SIGTERM (exit 137) is briefly `failed`, then `stopped`; a `docker kill` ends `failed`,
//! because nothing asked it to stop.

use std::collections::HashMap;

use iaas_core::InstanceStatus;

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
