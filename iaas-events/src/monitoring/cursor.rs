//! The position a page of search results ends at.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use iaas_core::EventId;

use super::error::IndexError;

/// Where the next page starts: the `(timestamp, event id)` of the last entry returned.
///
/// Clients treat it as opaque text (its `Display` text, read back with [`str::parse`]); its form
/// (`{microseconds since epoch}_{event id}`) may change. Backends resume strictly after it in
/// the `(timestamp, event id)` descending order, so no entry is returned twice or skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The last entry's timestamp.
    pub timestamp: DateTime<Utc>,
    /// The last entry's event id (breaks timestamp ties).
    pub event_id: EventId,
}

impl Cursor {
    /// Longest text accepted, so a hostile cursor is refused before any parsing work.
    const MAX_LEN: usize = 80;

    /// The timestamp as whole microseconds since the epoch, the precision both backends keep.
    pub fn timestamp_micros(&self) -> i64 {
        self.timestamp.timestamp_micros()
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.timestamp_micros(), self.event_id)
    }
}

impl FromStr for Cursor {
    type Err = IndexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| IndexError::InvalidQuery {
            field: "cursor",
            reason: format!("{reason} (use the cursor of the previous page as given)"),
        };
        if s.len() > Self::MAX_LEN {
            return Err(invalid("too long"));
        }
        let (micros, id) = s.split_once('_').ok_or_else(|| invalid("malformed"))?;
        let micros: i64 = micros.parse().map_err(|_| invalid("malformed timestamp"))?;
        let timestamp = DateTime::from_timestamp_micros(micros)
            .ok_or_else(|| invalid("timestamp out of range"))?;
        let event_id = id.parse().map_err(|_| invalid("malformed event id"))?;
        Ok(Self { timestamp, event_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_through_its_text() {
        let cursor = Cursor {
            timestamp: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap_or_default(),
            event_id: EventId::new_v7(),
        };
        assert_eq!(cursor.to_string().parse::<Cursor>().ok(), Some(cursor));
    }

    #[test]
    fn garbage_cursor_is_an_invalid_query_not_a_panic() {
        for bad in
            ["", "abc", "12_notanid", "x_0190a0a0-0000-7000-8000-000000000000", &"9".repeat(200)]
        {
            match bad.parse::<Cursor>() {
                Err(IndexError::InvalidQuery { field: "cursor", .. }) => {}
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }
}
