//! The life cycle of an instance.
//!
//! Status changes come from two directions: the user (start, stop, restart, delete through the
//! API) and the Docker engine (a container died, was killed, was removed behind the platform's
//! back). Both go through [`InstanceStatus::transition_to`], so the rules live in one table.
//!
//! What the user asks for is recorded at once as a *transitional* status (`stopping`,
//! `starting`, `restarting`, `deleting`): the request is answered without waiting for the
//! engine, and whoever sees the engine finish (the action itself or the watcher) records the
//! outcome. So the engine's events during an action are read as that action's outcome (a stop
//! that ends in SIGKILL is `stopped`, not `failed`), and only what nobody asked for is a failure.
//!
//! ```text
//!                       user                         engine or action outcome
//! Provisioning ──────────────────────────────────► Running | Stopped | Failed
//! Running | Failed ──── stop ─────► Stopping ────► Stopped (| Failed: the action failed)
//! Stopped | Failed ──── start ────► Starting ────► Running | Stopped | Failed
//! Running | Stopped | Failed ─ restart ─► Restarting ─► Running | Stopped | Failed
//! anything but Deleted ─ delete ──► Deleting ────► Deleted (terminal)
//! Running ◄──────► Stopped ◄──────► Failed          (the engine, behind the platform's back)
//! ```
//!
//! An action the engine refuses (a start whose host port was taken meanwhile) goes back to the
//! status it started from, with the refusal in its event.
//!
//! A transition to the status an instance already has is accepted and reported as
//! [`Transition::Unchanged`]: the Docker watcher, the reconciler and an action's own task
//! observe the same outcome more than once (a `stop` followed by a `die`), and re-applying it
//! must be harmless.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an instance is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    /// Accepted; containers are being created.
    Provisioning,
    /// Every container of the instance is up.
    Running,
    /// Stopped by the user or by the engine with a clean exit.
    Stopped,
    /// Exited with an error, was killed by the OOM killer, or provisioning failed.
    Failed,
    /// Removed. Terminal: a deleted instance never comes back.
    Deleted,
    /// The user asked for a stop; the engine is stopping it.
    Stopping,
    /// The user asked for a start; the engine is starting it.
    Starting,
    /// The user asked for a restart; the engine is restarting it.
    Restarting,
    /// The user asked for a delete; its containers are being removed.
    Deleting,
}

impl InstanceStatus {
    /// Every status, in declaration order.
    pub const ALL: [InstanceStatus; 9] = [
        InstanceStatus::Provisioning,
        InstanceStatus::Running,
        InstanceStatus::Stopped,
        InstanceStatus::Failed,
        InstanceStatus::Deleted,
        InstanceStatus::Stopping,
        InstanceStatus::Starting,
        InstanceStatus::Restarting,
        InstanceStatus::Deleting,
    ];

    /// The lowercase name used in JSON, SQL and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Provisioning => "provisioning",
            InstanceStatus::Running => "running",
            InstanceStatus::Stopped => "stopped",
            InstanceStatus::Failed => "failed",
            InstanceStatus::Deleted => "deleted",
            InstanceStatus::Stopping => "stopping",
            InstanceStatus::Starting => "starting",
            InstanceStatus::Restarting => "restarting",
            InstanceStatus::Deleting => "deleting",
        }
    }

    /// Whether no further transition can leave this status.
    pub const fn is_terminal(self) -> bool {
        matches!(self, InstanceStatus::Deleted)
    }

    /// Whether an action the user asked for is under way (`stopping`, `starting`, `restarting`,
    /// `deleting`); its outcome is the next status.
    pub const fn is_transitional(self) -> bool {
        matches!(
            self,
            InstanceStatus::Stopping
                | InstanceStatus::Starting
                | InstanceStatus::Restarting
                | InstanceStatus::Deleting
        )
    }

    /// Whether moving from `self` to `to` changes the status legally (same-status moves are
    /// not changes; see [`InstanceStatus::transition_to`]).
    pub const fn can_change_to(self, to: InstanceStatus) -> bool {
        use InstanceStatus::{
            Deleted, Deleting, Failed, Provisioning, Restarting, Running, Starting, Stopped,
            Stopping,
        };
        matches!(
            (self, to),
            // Engine observations and action outcomes.
            (Provisioning | Starting | Restarting, Running | Stopped | Failed)
                | (Running, Stopped | Failed)
                | (Stopped, Running | Failed)
                | (Failed, Running | Stopped)
                | (Stopping, Stopped | Failed)
                // An action the engine refused leaves the status it found.
                | (Stopping, Running)
                // What the user asks for.
                | (Running | Failed, Stopping)
                | (Stopped | Failed, Starting)
                | (Running | Stopped | Failed, Restarting)
                | (Provisioning | Running | Stopped | Failed | Stopping | Starting | Restarting, Deleting)
                // Removed: by a delete, or behind the platform's back.
                | (
                    Provisioning | Running | Stopped | Failed | Stopping | Starting | Restarting
                        | Deleting,
                    Deleted
                )
        )
    }

    /// Applies a transition, or says why it is illegal.
    pub fn transition_to(self, to: InstanceStatus) -> Result<Transition, InvalidTransition> {
        if self == to {
            Ok(Transition::Unchanged(self))
        } else if self.can_change_to(to) {
            Ok(Transition::Changed { from: self, to })
        } else {
            Err(InvalidTransition { from: self, to })
        }
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InstanceStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InstanceStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(crate::id::truncate_for_error(s)))
    }
}

/// The outcome of a legal [`InstanceStatus::transition_to`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The instance already had this status; nothing to write, no event to emit.
    Unchanged(InstanceStatus),
    /// The status changes.
    Changed {
        /// The status before.
        from: InstanceStatus,
        /// The status after.
        to: InstanceStatus,
    },
}

impl Transition {
    /// The status after the transition.
    pub const fn status(self) -> InstanceStatus {
        match self {
            Transition::Unchanged(status) | Transition::Changed { to: status, .. } => status,
        }
    }
}

/// A status change the life cycle does not allow (for example `deleted -> running`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal status transition {from} -> {to}")]
pub struct InvalidTransition {
    /// The current status.
    pub from: InstanceStatus,
    /// The requested status.
    pub to: InstanceStatus,
}

/// A string that names no [`InstanceStatus`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown instance status {0:?}")]
pub struct UnknownStatus(pub String);

#[cfg(test)]
mod tests {
    use super::InstanceStatus::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn deleted_is_terminal() {
        for to in InstanceStatus::ALL {
            if to != Deleted {
                assert_eq!(Deleted.transition_to(to), Err(InvalidTransition { from: Deleted, to }));
            }
        }
    }

    #[test]
    fn nothing_returns_to_provisioning() {
        for from in InstanceStatus::ALL {
            assert!(!from.can_change_to(Provisioning), "{from} -> provisioning");
        }
    }

    #[test]
    fn a_stopped_instance_can_be_started_again() {
        assert_eq!(
            Stopped.transition_to(Running),
            Ok(Transition::Changed { from: Stopped, to: Running })
        );
    }

    #[test]
    fn repeating_the_current_status_is_unchanged() {
        for status in InstanceStatus::ALL {
            assert_eq!(status.transition_to(status), Ok(Transition::Unchanged(status)));
        }
    }

    #[test]
    fn status_names_round_trip() {
        for status in InstanceStatus::ALL {
            assert_eq!(status.as_str().parse(), Ok(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
        }
        assert!("RUNNING".parse::<InstanceStatus>().is_err());
    }

    fn any_status() -> impl Strategy<Value = InstanceStatus> {
        prop::sample::select(InstanceStatus::ALL.to_vec())
    }

    proptest! {
        /// Whatever sequence of requests arrives, applying only the legal ones keeps the
        /// instance in a reachable state, and once deleted it stays deleted.
        #[test]
        fn random_walks_respect_the_life_cycle(steps in prop::collection::vec(any_status(), 0..64)) {
            let mut current = Provisioning;
            let mut deleted = false;
            for requested in steps {
                match current.transition_to(requested) {
                    Ok(transition) => {
                        prop_assert!(!deleted || requested == Deleted);
                        prop_assert!(requested != Provisioning || current == Provisioning);
                        current = transition.status();
                    }
                    Err(err) => {
                        prop_assert_eq!(err.from, current);
                        prop_assert_eq!(err.to, requested);
                        prop_assert!(!current.can_change_to(requested));
                    }
                }
                deleted |= current == Deleted;
            }
        }

        /// `transition_to` and `can_change_to` are the same table.
        #[test]
        fn transition_agrees_with_the_table(from in any_status(), to in any_status()) {
            let result = from.transition_to(to);
            if from == to {
                prop_assert_eq!(result, Ok(Transition::Unchanged(from)));
            } else if from.can_change_to(to) {
                prop_assert_eq!(result, Ok(Transition::Changed { from, to }));
            } else {
                prop_assert_eq!(result, Err(InvalidTransition { from, to }));
            }
        }
    }
}
