//! Typed identifiers.
//!
//! Every id is a newtype over a [`Uuid`] so a user id can never be passed where an instance id is
//! expected. Event ids are UUIDv7: they sort by creation time, which keeps index and outbox
//! inserts append-mostly and lets a consumer tell an old event from a new one at a glance.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $label:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps an existing UUID.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($label, "({})"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| InvalidId {
                    kind: $label,
                    input: truncate_for_error(s),
                })
            }
        }
    };
}

uuid_id!(
    /// Identifies a user account.
    UserId,
    "UserId"
);
uuid_id!(
    /// Identifies a provisioned instance (a cluster of one or more containers).
    InstanceId,
    "InstanceId"
);
uuid_id!(
    /// Identifies one [`InfrastructureEvent`](crate::InfrastructureEvent); consumers use it to
    /// drop duplicates.
    EventId,
    "EventId"
);

impl UserId {
    /// A new random user id (UUIDv4).
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl InstanceId {
    /// A new random instance id (UUIDv4).
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl EventId {
    /// A new time-ordered event id (UUIDv7).
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }
}

/// A string that is not a UUID was given where an id was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {input:?} is not a UUID")]
pub struct InvalidId {
    /// Which id type was being parsed (`"InstanceId"`, ...).
    pub kind: &'static str,
    /// The rejected input, truncated to a length that is safe to log.
    pub input: String,
}

/// Longest slice of untrusted input that is copied into an error message.
pub(crate) const MAX_ECHOED_INPUT: usize = 64;

/// Copies at most [`MAX_ECHOED_INPUT`] characters of untrusted input into an error message.
pub(crate) fn truncate_for_error(s: &str) -> String {
    match s.char_indices().nth(MAX_ECHOED_INPUT) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_string_form() {
        let id = InstanceId::new_random();
        assert_eq!(id.to_string().parse::<InstanceId>(), Ok(id));
    }

    #[test]
    fn a_non_uuid_is_rejected_with_the_id_kind() {
        let err = "not-a-uuid".parse::<UserId>().unwrap_err();
        assert_eq!(err.kind, "UserId");
        assert_eq!(err.input, "not-a-uuid");
    }

    #[test]
    fn echoed_input_is_bounded() {
        let long = "x".repeat(10_000);
        let err = long.parse::<EventId>().unwrap_err();
        assert!(err.input.chars().count() <= MAX_ECHOED_INPUT + 1);
    }

    #[test]
    fn event_ids_are_time_ordered() {
        let first = EventId::new_v7();
        let second = EventId::new_v7();
        assert_eq!(first.as_uuid().get_version_num(), 7);
        assert!(first < second);
    }

    #[test]
    fn ids_serialize_as_plain_strings() {
        let id = UserId::new_random();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
    }
}
