//! The log entry an event becomes.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use iaas_core::{EventAction, EventId, InfrastructureEvent, InstanceId, InstanceKind, UserId};
use serde::{Deserialize, Serialize};

/// How serious an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogLevel {
    /// The normal life of an instance, including stops and deletions the user asked for.
    Info,
    /// Something the user should look at although the instance kept serving (a failover).
    Warn,
    /// The instance failed.
    Error,
}

impl LogLevel {
    /// The level of an event with `action`.
    ///
    /// `failed` is an error; `failover` a warning (a replica took over, the primary is gone);
    /// everything else, `stopped` and `deleted` included, is info: a stop can be user-initiated
    /// and a failure that caused it arrives as its own `failed` event.
    pub fn for_action(action: &EventAction) -> Self {
        match action {
            EventAction::Failed => LogLevel::Error,
            EventAction::Failover => LogLevel::Warn,
            _ => LogLevel::Info,
        }
    }

    /// `"info"`, `"warn"` or `"error"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    /// Parses [`LogLevel::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        [LogLevel::Info, LogLevel::Warn, LogLevel::Error].into_iter().find(|l| l.as_str() == s)
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One indexed event, as the monitoring API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The event's id: the entry's identity in every index, so a redelivery never duplicates.
    pub event_id: EventId,
    /// The instance concerned.
    pub instance_id: InstanceId,
    /// Its owner, the only user who may see the entry.
    pub user_id: UserId,
    /// The instance's kind (the entry's "type").
    #[serde(rename = "type")]
    pub kind: InstanceKind,
    /// What happened.
    pub action: EventAction,
    /// `"{type} {action}"`, for example `postgres started`.
    pub message: String,
    /// See [`LogLevel::for_action`].
    pub level: LogLevel,
    /// The event's metadata.
    pub metadata: BTreeMap<String, String>,
    /// When the event happened, to the microsecond (the precision every index and the cursor
    /// keep, so an entry reads back exactly as it was built).
    pub timestamp: DateTime<Utc>,
}

impl LogEntry {
    /// The entry of `event`.
    pub fn from_event(event: &InfrastructureEvent) -> Self {
        Self {
            event_id: event.id,
            instance_id: event.instance_id,
            user_id: event.user_id,
            kind: event.kind,
            action: event.action.clone(),
            message: format!("{} {}", event.kind, event.action),
            level: LogLevel::for_action(&event.action),
            metadata: event.metadata.clone(),
            timestamp: event.occurred_at.trunc_subsecs(6),
        }
    }

    /// The metadata as free text (`key value key value`), which is what full-text search sees.
    pub fn metadata_text(&self) -> String {
        let mut text = String::new();
        for (key, value) in &self.metadata {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(key);
            text.push(' ');
            text.push_str(value);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: EventAction) -> InfrastructureEvent {
        InfrastructureEvent::new(
            InstanceId::new_random(),
            UserId::new_random(),
            InstanceKind::Postgres,
            action,
            Utc::now(),
        )
        .with_metadata("container", "pg-1")
    }

    #[test]
    fn entry_carries_the_event_ids_message_and_metadata() {
        let event = event(EventAction::Started);
        let entry = LogEntry::from_event(&event);
        assert_eq!(entry.event_id, event.id);
        assert_eq!(entry.instance_id, event.instance_id);
        assert_eq!(entry.user_id, event.user_id);
        assert_eq!(entry.message, "postgres started");
        assert_eq!(entry.level, LogLevel::Info);
        assert_eq!(entry.timestamp, event.occurred_at.trunc_subsecs(6));
        assert_eq!(entry.metadata_text(), "container pg-1");
    }

    #[test]
    fn failures_are_errors_failovers_warnings_and_stops_info() {
        assert_eq!(LogLevel::for_action(&EventAction::Failed), LogLevel::Error);
        assert_eq!(LogLevel::for_action(&EventAction::Failover), LogLevel::Warn);
        assert_eq!(LogLevel::for_action(&EventAction::Stopped), LogLevel::Info);
        assert_eq!(LogLevel::for_action(&EventAction::Deleted), LogLevel::Info);
        for level in [LogLevel::Info, LogLevel::Warn, LogLevel::Error] {
            assert_eq!(LogLevel::parse(level.as_str()), Some(level));
        }
    }
}
