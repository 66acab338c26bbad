//! The event envelope that travels from provisioning to every consumer.
//!
//! An [`InfrastructureEvent`] says that something happened to an instance: `postgres.created`,
//! `nginx.stopped`. It is written to the outbox in the same transaction as the change it
//! describes, published to the bus keyed by instance id (so one instance's events stay in order)
//! and consumed at least once: [`EventId`] lets every consumer drop a redelivered duplicate.
//!
//! # Wire format
//!
//! JSON, one object per event, with a `version` field ([`EVENT_FORMAT_VERSION`]). Decoding
//! ignores fields it does not know, so producers can add fields without breaking old consumers,
//! and rejects a `version` it does not understand. Every decoding failure is a
//! [`DecodeError`] that names the offending field; untrusted bytes never cause a panic.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::id::{EventId, InstanceId, UserId, truncate_for_error};
use crate::instance::InstanceKind;
use crate::status::InstanceStatus;

/// The envelope version this crate writes and the only one it reads.
pub const EVENT_FORMAT_VERSION: u32 = 1;

/// Something that happened to an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InfrastructureEvent {
    /// Unique, time-ordered id; consumers deduplicate on it.
    pub id: EventId,
    /// The instance it concerns (also the bus partition key).
    pub instance_id: InstanceId,
    /// The instance's owner.
    pub user_id: UserId,
    /// The instance's kind.
    pub kind: InstanceKind,
    /// What happened.
    pub action: EventAction,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Details: container id and name, exit code, the status it led to...
    pub metadata: BTreeMap<String, String>,
    /// Envelope version ([`EVENT_FORMAT_VERSION`] for events built by this crate).
    pub version: u32,
}

impl InfrastructureEvent {
    /// A new event with a fresh [`EventId`], no metadata and the current format version.
    pub fn new(
        instance_id: InstanceId,
        user_id: UserId,
        kind: InstanceKind,
        action: EventAction,
        occurred_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id: EventId::new_v7(),
            instance_id,
            user_id,
            kind,
            action,
            occurred_at,
            metadata: BTreeMap::new(),
            version: EVENT_FORMAT_VERSION,
        }
    }

    /// Adds one metadata entry.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// `"{kind}.{action}"`, for example `postgres.started`: the name used in logs, bus headers
    /// and the monitoring index.
    pub fn name(&self) -> String {
        format!("{}.{}", self.kind, self.action)
    }

    /// Encodes the event as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing this struct cannot fail: every field is a string, number or string map.
        serde_json::to_vec(self).unwrap_or_else(|err| {
            unreachable!("InfrastructureEvent always serializes to JSON: {err}")
        })
    }

    /// Decodes an event from JSON, naming the field at fault when it cannot.
    ///
    /// Well-formed input takes a single typed pass; only input that fails it is parsed again,
    /// field by field, to say which field is at fault.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DecodeError> {
        match serde_json::from_slice::<Wire>(bytes) {
            Ok(wire) => wire.into_event(),
            Err(typed_err) => {
                let value: Value = serde_json::from_slice(bytes)
                    .map_err(|err| DecodeError::Syntax { reason: err.to_string() })?;
                match Self::from_json_value(value) {
                    Err(err) => Err(err),
                    // The lenient pass accepted what the typed pass refused (a repeated key):
                    // refuse it too, so both paths agree on what a valid event is.
                    Ok(_) => Err(DecodeError::Syntax { reason: typed_err.to_string() }),
                }
            }
        }
    }

    /// Decodes an event from an already parsed JSON value.
    pub fn from_json_value(value: Value) -> Result<Self, DecodeError> {
        let Value::Object(mut fields) = value else {
            return Err(DecodeError::NotAnObject);
        };
        // The version decides how to read everything else, so it is checked first.
        let version: u32 = take(&mut fields, "version")?;
        if version != EVENT_FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: version,
                supported: EVENT_FORMAT_VERSION,
            });
        }
        Ok(Self {
            id: take(&mut fields, "id")?,
            instance_id: take(&mut fields, "instance_id")?,
            user_id: take(&mut fields, "user_id")?,
            kind: take(&mut fields, "kind")?,
            action: take(&mut fields, "action")?,
            occurred_at: take(&mut fields, "occurred_at")?,
            metadata: match fields.remove("metadata") {
                None | Some(Value::Null) => BTreeMap::new(),
                Some(value) => field_from_value("metadata", value)?,
            },
            version,
        })
    }
}

/// Every field optional, so the typed pass decides "missing" itself and checks `version` before
/// the others, exactly like the field-by-field pass.
#[derive(Deserialize)]
struct Wire {
    id: Option<EventId>,
    instance_id: Option<InstanceId>,
    user_id: Option<UserId>,
    kind: Option<InstanceKind>,
    action: Option<EventAction>,
    occurred_at: Option<DateTime<Utc>>,
    metadata: Option<BTreeMap<String, String>>,
    version: Option<u32>,
}

impl Wire {
    fn into_event(self) -> Result<InfrastructureEvent, DecodeError> {
        fn required<T>(value: Option<T>, field: &'static str) -> Result<T, DecodeError> {
            value.ok_or(DecodeError::MissingField { field })
        }
        let version = required(self.version, "version")?;
        if version != EVENT_FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: version,
                supported: EVENT_FORMAT_VERSION,
            });
        }
        Ok(InfrastructureEvent {
            id: required(self.id, "id")?,
            instance_id: required(self.instance_id, "instance_id")?,
            user_id: required(self.user_id, "user_id")?,
            kind: required(self.kind, "kind")?,
            action: required(self.action, "action")?,
            occurred_at: required(self.occurred_at, "occurred_at")?,
            metadata: self.metadata.unwrap_or_default(),
            version,
        })
    }
}

fn take<T: DeserializeOwned>(
    fields: &mut Map<String, Value>,
    field: &'static str,
) -> Result<T, DecodeError> {
    match fields.remove(field) {
        None => Err(DecodeError::MissingField { field }),
        Some(value) => field_from_value(field, value),
    }
}

fn field_from_value<T: DeserializeOwned>(
    field: &'static str,
    value: Value,
) -> Result<T, DecodeError> {
    serde_json::from_value(value)
        .map_err(|err| DecodeError::InvalidField { field, reason: err.to_string() })
}

/// Why bytes could not be decoded into an [`InfrastructureEvent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not JSON.
    #[error("event is not valid JSON: {reason}")]
    Syntax {
        /// The parser's explanation, with line and column.
        reason: String,
    },
    /// The JSON is not an object.
    #[error("event is not a JSON object")]
    NotAnObject,
    /// A required field is absent.
    #[error("event field `{field}` is missing")]
    MissingField {
        /// The field's name.
        field: &'static str,
    },
    /// A field has the wrong type or an unacceptable value.
    #[error("event field `{field}` is invalid: {reason}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The envelope version is not one this build understands.
    #[error("event format version {found} is not supported (supported: {supported})")]
    UnsupportedVersion {
        /// The version in the event.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
}

impl DecodeError {
    /// The field at fault, when one is.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            DecodeError::MissingField { field } | DecodeError::InvalidField { field, .. } => {
                Some(field)
            }
            DecodeError::UnsupportedVersion { .. } => Some("version"),
            DecodeError::Syntax { .. } | DecodeError::NotAnObject => None,
        }
    }
}

/// What happened to an instance.
///
/// The known actions have variants; any other lowercase name decodes to [`EventAction::Other`]
/// so a consumer built before a new action was introduced still reads the event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventAction {
    /// The instance was accepted and its containers are being created.
    Created,
    /// It started (or came back after a stop or failure).
    Started,
    /// It stopped.
    Stopped,
    /// The user restarted it.
    Restarted,
    /// It failed (non-zero exit, OOM kill, provisioning error).
    Failed,
    /// It was deleted.
    Deleted,
    /// A node (replica) was added to a cluster.
    NodeAdded,
    /// A node was removed from a cluster.
    NodeRemoved,
    /// Its configuration changed.
    ConfigChanged,
    /// A replica was promoted to primary because the primary was lost.
    Failover,
    /// The primary handed over to a replica, as asked (no data lost).
    Switchover,
    /// A base backup was taken into the cluster's backup repository.
    BackedUp,
    /// The user asked for a stop; `stopped` follows.
    Stopping,
    /// The user asked for a start; `started` follows.
    Starting,
    /// The user asked for a restart; `restarted` follows.
    Restarting,
    /// The user asked for a delete; `deleted` follows.
    Deleting,
    /// An action this build does not know: lowercase ASCII letters, digits and `_`.
    Other(String),
}

impl EventAction {
    const KNOWN: [(EventAction, &'static str); 16] = [
        (EventAction::Created, "created"),
        (EventAction::Started, "started"),
        (EventAction::Stopped, "stopped"),
        (EventAction::Restarted, "restarted"),
        (EventAction::Failed, "failed"),
        (EventAction::Deleted, "deleted"),
        (EventAction::NodeAdded, "node_added"),
        (EventAction::NodeRemoved, "node_removed"),
        (EventAction::ConfigChanged, "config_changed"),
        (EventAction::Failover, "failover"),
        (EventAction::Switchover, "switchover"),
        (EventAction::BackedUp, "backed_up"),
        (EventAction::Stopping, "stopping"),
        (EventAction::Starting, "starting"),
        (EventAction::Restarting, "restarting"),
        (EventAction::Deleting, "deleting"),
    ];

    /// Longest action name accepted.
    pub const MAX_LEN: usize = 64;

    /// The name used in event names and JSON.
    pub fn as_str(&self) -> &str {
        match self {
            EventAction::Other(name) => name,
            known => {
                Self::KNOWN.iter().find(|(action, _)| action == known).map_or("", |(_, name)| name)
            }
        }
    }

    /// The action that reports an instance reaching `status`.
    pub const fn for_status(status: InstanceStatus) -> EventAction {
        match status {
            InstanceStatus::Provisioning => EventAction::Created,
            InstanceStatus::Running => EventAction::Started,
            InstanceStatus::Stopped => EventAction::Stopped,
            InstanceStatus::Failed => EventAction::Failed,
            InstanceStatus::Deleted => EventAction::Deleted,
            InstanceStatus::Stopping => EventAction::Stopping,
            InstanceStatus::Starting => EventAction::Starting,
            InstanceStatus::Restarting => EventAction::Restarting,
            InstanceStatus::Deleting => EventAction::Deleting,
        }
    }
}

impl fmt::Display for EventAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action name that is empty, too long or not lowercase `[a-z0-9_]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event action {0:?}: expected 1-64 characters of a-z, 0-9 and '_'")]
pub struct InvalidAction(pub String);

impl FromStr for EventAction {
    type Err = InvalidAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((action, _)) = Self::KNOWN.iter().find(|(_, name)| *name == s) {
            return Ok(action.clone());
        }
        let well_formed = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if well_formed {
            Ok(EventAction::Other(s.to_owned()))
        } else {
            Err(InvalidAction(truncate_for_error(s)))
        }
    }
}

impl Serialize for EventAction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventAction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn sample() -> InfrastructureEvent {
        InfrastructureEvent::new(
            InstanceId::new_random(),
            UserId::new_random(),
            InstanceKind::Postgres,
            EventAction::Started,
            DateTime::from_timestamp(1_700_000_000, 123_000_000).unwrap(),
        )
        .with_metadata("container_id", "abc123")
    }

    #[test]
    fn name_is_kind_dot_action() {
        assert_eq!(sample().name(), "postgres.started");
        let mut event = sample();
        event.kind = InstanceKind::Nginx;
        event.action = EventAction::NodeAdded;
        assert_eq!(event.name(), "nginx.node_added");
    }

    #[test]
    fn json_carries_the_version() {
        let value: Value = serde_json::from_slice(&sample().to_json()).unwrap();
        assert_eq!(value["version"], json!(EVENT_FORMAT_VERSION));
        assert_eq!(value["kind"], "postgres");
        assert_eq!(value["action"], "started");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut value: Value = serde_json::from_slice(&sample().to_json()).unwrap();
        value["added_later"] = json!({"nested": [1, 2, 3]});
        let decoded = InfrastructureEvent::from_json(value.to_string().as_bytes()).unwrap();
        assert_eq!(decoded, sample_with_id_of(&decoded));
    }

    fn sample_with_id_of(other: &InfrastructureEvent) -> InfrastructureEvent {
        InfrastructureEvent {
            id: other.id,
            instance_id: other.instance_id,
            user_id: other.user_id,
            ..sample()
        }
    }

    #[test]
    fn unknown_actions_survive_a_round_trip() {
        let mut event = sample();
        event.action = EventAction::Other("snapshot_taken".into());
        let decoded = InfrastructureEvent::from_json(&event.to_json()).unwrap();
        assert_eq!(decoded.action, EventAction::Other("snapshot_taken".into()));
        assert_eq!(decoded.name(), "postgres.snapshot_taken");
    }

    fn decode_with(edit: impl FnOnce(&mut Map<String, Value>)) -> DecodeError {
        let Value::Object(mut fields) = serde_json::from_slice(&sample().to_json()).unwrap() else {
            unreachable!("an event encodes to an object");
        };
        edit(&mut fields);
        InfrastructureEvent::from_json(Value::Object(fields).to_string().as_bytes()).unwrap_err()
    }

    #[test]
    fn every_missing_field_is_named() {
        for field in ["id", "instance_id", "user_id", "kind", "action", "occurred_at", "version"] {
            let err = decode_with(|f| {
                f.remove(field);
            });
            assert_eq!(err, DecodeError::MissingField { field }, "{field}");
        }
    }

    #[test]
    fn missing_metadata_means_empty() {
        let mut event = sample();
        event.metadata.clear();
        let Value::Object(mut fields) = serde_json::from_slice(&event.to_json()).unwrap() else {
            unreachable!("an event encodes to an object");
        };
        fields.remove("metadata");
        let decoded =
            InfrastructureEvent::from_json(Value::Object(fields).to_string().as_bytes()).unwrap();
        assert!(decoded.metadata.is_empty());
    }

    #[test]
    fn wrong_types_name_the_field() {
        let cases: [(&str, Value); 7] = [
            ("id", json!(42)),
            ("instance_id", json!("not-a-uuid")),
            ("kind", json!("mainframe")),
            ("action", json!("Started!")),
            ("occurred_at", json!("yesterday")),
            ("metadata", json!({"exit_code": 1})),
            ("version", json!("1")),
        ];
        for (field, value) in cases {
            let err = decode_with(|f| {
                f.insert(field.to_owned(), value.clone());
            });
            assert!(
                matches!(err, DecodeError::InvalidField { field: got, .. } if got == field),
                "{field}={value}: {err:?}"
            );
            assert!(err.to_string().contains(field));
        }
    }

    #[test]
    fn an_unsupported_version_is_refused_before_anything_else() {
        let err = decode_with(|f| {
            f.insert("version".into(), json!(2));
            f.remove("id");
        });
        assert_eq!(err, DecodeError::UnsupportedVersion { found: 2, supported: 1 });
        assert_eq!(err.field(), Some("version"));
    }

    #[test]
    fn non_objects_and_garbage_are_typed_errors() {
        assert_eq!(InfrastructureEvent::from_json(b"[1,2]").unwrap_err(), DecodeError::NotAnObject);
        assert!(matches!(
            InfrastructureEvent::from_json(b"\xff\xfe{").unwrap_err(),
            DecodeError::Syntax { .. }
        ));
        assert!(matches!(
            InfrastructureEvent::from_json(b"").unwrap_err(),
            DecodeError::Syntax { .. }
        ));
    }

    #[test]
    fn a_repeated_field_is_refused() {
        let json = String::from_utf8(sample().to_json()).unwrap();
        let repeated = json.replacen('{', "{\"kind\":\"nginx\",", 1);
        let err = InfrastructureEvent::from_json(repeated.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("duplicate field"), "{err}");
    }

    #[test]
    fn an_unsupported_version_with_a_changed_layout_is_still_a_version_error() {
        let err = decode_with(|f| {
            f.insert("version".into(), json!(2));
            f.insert("kind".into(), json!({"name": "postgres"}));
        });
        assert_eq!(err, DecodeError::UnsupportedVersion { found: 2, supported: 1 });
    }

    #[test]
    fn status_actions_match_the_life_cycle() {
        assert_eq!(EventAction::for_status(InstanceStatus::Running), EventAction::Started);
        assert_eq!(EventAction::for_status(InstanceStatus::Deleted), EventAction::Deleted);
    }

    fn any_action() -> impl Strategy<Value = EventAction> {
        prop_oneof![
            prop::sample::select(
                EventAction::KNOWN.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>()
            ),
            "[a-z0-9_]{1,64}".prop_map(|s| s.parse::<EventAction>().unwrap()),
        ]
    }

    fn any_event() -> impl Strategy<Value = InfrastructureEvent> {
        (
            any::<u128>(),
            any::<u128>(),
            any::<u128>(),
            prop::sample::select(InstanceKind::ALL.to_vec()),
            any_action(),
            0i64..4_102_444_800,
            0u32..1_000_000_000,
            prop::collection::btree_map(".{0,16}", ".{0,32}", 0..6),
        )
            .prop_map(|(id, instance, user, kind, action, secs, nanos, metadata)| {
                InfrastructureEvent {
                    id: EventId::from_uuid(uuid::Uuid::from_u128(id)),
                    instance_id: InstanceId::from_uuid(uuid::Uuid::from_u128(instance)),
                    user_id: UserId::from_uuid(uuid::Uuid::from_u128(user)),
                    kind,
                    action,
                    occurred_at: DateTime::from_timestamp(secs, nanos).unwrap(),
                    metadata,
                    version: EVENT_FORMAT_VERSION,
                }
            })
    }

    proptest! {
        #[test]
        fn every_event_round_trips(event in any_event()) {
            let decoded = InfrastructureEvent::from_json(&event.to_json()).unwrap();
            prop_assert_eq!(decoded, event);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = InfrastructureEvent::from_json(&bytes);
        }

        #[test]
        fn known_action_names_parse_to_their_variant(action in any_action()) {
            prop_assert_eq!(action.as_str().parse::<EventAction>().unwrap(), action);
        }
    }
}
