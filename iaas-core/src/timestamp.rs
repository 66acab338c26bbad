//! Timestamps on the wire: RFC 3339 text for people, integer microseconds for machines.
//!
//! Serde formats say whether they are meant to be read by people. JSON is, so API responses and
//! events keep their RFC 3339 strings; binary formats (the cache's postcard codec) are not, and
//! get an `i64` of microseconds since the Unix epoch, which encodes and decodes several times
//! faster than parsing text. Use with `#[serde(with = "crate::timestamp")]`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serializer};

pub(crate) fn serialize<S: Serializer>(
    at: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        serde::Serialize::serialize(at, serializer)
    } else {
        serializer.serialize_i64(at.timestamp_micros())
    }
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<DateTime<Utc>, D::Error> {
    if deserializer.is_human_readable() {
        DateTime::<Utc>::deserialize(deserializer)
    } else {
        let micros = i64::deserialize(deserializer)?;
        DateTime::from_timestamp_micros(micros).ok_or_else(|| {
            serde::de::Error::custom(format!("timestamp {micros} µs is out of range"))
        })
    }
}
