//! What the monitoring API asks the index: a filtered page of entries, or counts over time.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use iaas_core::{EventAction, InstanceId, InstanceKind, UserId};

use super::cursor::Cursor;
use super::entry::LogEntry;
use super::error::IndexError;

/// A search for one user's log entries. Every filter left `None` matches everything.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogQuery {
    /// Whose entries: always applied, a user only ever sees their own.
    pub user: UserId,
    /// Only this instance's entries.
    pub instance: Option<InstanceId>,
    /// Only entries of this instance type.
    pub kind: Option<InstanceKind>,
    /// Only entries with this action.
    pub action: Option<EventAction>,
    /// Entries at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Entries strictly before this time.
    pub to: Option<DateTime<Utc>>,
    /// Free text over the message and the metadata: every word must occur.
    pub q: Option<String>,
    /// Page size, 1 to [`LogQuery::MAX_LIMIT`].
    pub limit: u32,
    /// Resume after this position (the previous page's [`LogPage::next_cursor`]).
    pub cursor: Option<Cursor>,
}

impl LogQuery {
    /// Page size when the caller does not say.
    pub const DEFAULT_LIMIT: u32 = 50;
    /// Largest page size; bigger pages would let one request scan the whole index.
    pub const MAX_LIMIT: u32 = 500;
    /// Longest free-text query, in bytes.
    pub const MAX_TEXT_LEN: usize = 256;

    /// All of `user`'s entries, newest first, [`LogQuery::DEFAULT_LIMIT`] per page.
    pub fn for_user(user: UserId) -> Self {
        Self {
            user,
            instance: None,
            kind: None,
            action: None,
            from: None,
            to: None,
            q: None,
            limit: Self::DEFAULT_LIMIT,
            cursor: None,
        }
    }

    /// Only `instance`'s entries.
    #[must_use]
    pub fn instance(mut self, instance: InstanceId) -> Self {
        self.instance = Some(instance);
        self
    }

    /// Only entries of instances of `kind`.
    #[must_use]
    pub fn kind(mut self, kind: InstanceKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Only entries with `action`.
    #[must_use]
    pub fn action(mut self, action: EventAction) -> Self {
        self.action = Some(action);
        self
    }

    /// Only entries in `[from, to)`.
    #[must_use]
    pub fn between(mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        self.from = Some(from);
        self.to = Some(to);
        self
    }

    /// Only entries whose message or metadata contains every word of `q`.
    #[must_use]
    pub fn text(mut self, q: impl Into<String>) -> Self {
        self.q = Some(q.into());
        self
    }

    /// Pages of `limit` entries.
    #[must_use]
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    /// Resumes after `cursor`.
    #[must_use]
    pub fn after(mut self, cursor: Option<Cursor>) -> Self {
        self.cursor = cursor;
        self
    }

    /// Checks the limit, the time range and the text, so backends can trust them.
    pub fn validate(&self) -> Result<(), IndexError> {
        if self.limit == 0 || self.limit > Self::MAX_LIMIT {
            return Err(IndexError::InvalidQuery {
                field: "limit",
                reason: format!("{} is not between 1 and {}", self.limit, Self::MAX_LIMIT),
            });
        }
        check_range(self.from, self.to)?;
        if let Some(q) = &self.q
            && q.len() > Self::MAX_TEXT_LEN
        {
            return Err(IndexError::InvalidQuery {
                field: "q",
                reason: format!("{} bytes is longer than {}", q.len(), Self::MAX_TEXT_LEN),
            });
        }
        Ok(())
    }

    /// The words of `q` (split on anything but letters and digits), empty when there is no text
    /// to match. Backends match each word, so no query syntax reaches them from the user.
    pub fn words(&self) -> Vec<String> {
        self.q
            .as_deref()
            .unwrap_or("")
            .split(|c: char| !c.is_alphanumeric())
            .filter(|word| !word.is_empty())
            .map(str::to_lowercase)
            .collect()
    }
}

fn check_range(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Result<(), IndexError> {
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        return Err(IndexError::InvalidQuery {
            field: "from",
            reason: format!("{from} is after to ({to})"),
        });
    }
    Ok(())
}

/// One page of search results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPage {
    /// The entries, newest first.
    pub entries: Vec<LogEntry>,
    /// Where the next page starts; `None` when this page is the last.
    pub next_cursor: Option<Cursor>,
}

impl LogPage {
    /// Builds a page from up to `limit + 1` entries fetched in order: the extra one only says
    /// that another page exists, and the cursor points at the last entry kept. Backends fetch
    /// one more than the limit and hand the result here.
    pub fn from_fetched(mut entries: Vec<LogEntry>, limit: u32) -> Self {
        let limit = limit as usize;
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_cursor = if more {
            entries.last().map(|last| Cursor { timestamp: last.timestamp, event_id: last.event_id })
        } else {
            None
        };
        Self { entries, next_cursor }
    }
}

/// Counts of one user's entries per time bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CountQuery {
    /// Whose entries: always applied.
    pub user: UserId,
    /// Start of the period (inclusive).
    pub from: DateTime<Utc>,
    /// End of the period (exclusive).
    pub to: DateTime<Utc>,
    /// Width of a bucket; buckets start at whole multiples of it since the Unix epoch (UTC).
    pub bucket: Duration,
}

impl CountQuery {
    /// Most buckets one query may produce.
    pub const MAX_BUCKETS: u64 = 10_000;

    /// Counts of `user`'s entries in `[from, to)` per `bucket`.
    pub fn new(user: UserId, from: DateTime<Utc>, to: DateTime<Utc>, bucket: Duration) -> Self {
        Self { user, from, to, bucket }
    }

    /// The bucket width in whole seconds, after checking the query.
    pub fn validate(&self) -> Result<u64, IndexError> {
        check_range(Some(self.from), Some(self.to))?;
        let seconds = self.bucket.as_secs();
        if seconds == 0 || self.bucket.subsec_nanos() != 0 {
            return Err(IndexError::InvalidQuery {
                field: "bucket",
                reason: format!("{:?} is not a whole number of seconds >= 1", self.bucket),
            });
        }
        let span = u64::try_from((self.to - self.from).num_seconds()).unwrap_or(0);
        if span / seconds > Self::MAX_BUCKETS {
            return Err(IndexError::InvalidQuery {
                field: "bucket",
                reason: format!(
                    "{seconds} s buckets over {span} s would be more than {}",
                    Self::MAX_BUCKETS
                ),
            });
        }
        Ok(seconds)
    }
}

/// What [`LogIndex::counts`](super::LogIndex::counts) found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Buckets holding at least one entry, oldest first.
    pub buckets: Vec<CountBucket>,
}

/// The entries of one time bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountBucket {
    /// Start of the bucket.
    pub start: DateTime<Utc>,
    /// All entries in it.
    pub total: u64,
    /// Entries per action (`started`, `failed`...).
    pub by_action: BTreeMap<String, u64>,
    /// Entries per instance type (`postgres`, `nginx`...).
    pub by_type: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_outside_1_to_500_is_refused() {
        let user = UserId::new_random();
        assert!(LogQuery::for_user(user).validate().is_ok());
        for limit in [0, LogQuery::MAX_LIMIT + 1] {
            let err = LogQuery::for_user(user).limit(limit).validate();
            assert!(matches!(err, Err(IndexError::InvalidQuery { field: "limit", .. })));
        }
    }

    #[test]
    fn reversed_range_and_huge_text_are_refused() {
        let user = UserId::new_random();
        let now = Utc::now();
        let reversed = LogQuery::for_user(user).between(now, now - chrono::Duration::hours(1));
        assert!(matches!(reversed.validate(), Err(IndexError::InvalidQuery { field: "from", .. })));
        let long = LogQuery::for_user(user).text("x".repeat(LogQuery::MAX_TEXT_LEN + 1));
        assert!(matches!(long.validate(), Err(IndexError::InvalidQuery { field: "q", .. })));
    }

    #[test]
    fn words_drop_query_syntax() {
        let query = LogQuery::for_user(UserId::new_random()).text("pg-1 \"OR\" NEAR(*)");
        assert_eq!(query.words(), ["pg", "1", "or", "near"]);
    }

    #[test]
    fn sub_second_zero_or_too_many_buckets_are_refused() {
        let user = UserId::new_random();
        let now = Utc::now();
        let day = now - chrono::Duration::days(1);
        assert_eq!(
            CountQuery::new(user, day, now, Duration::from_secs(3600)).validate().ok(),
            Some(3600)
        );
        for bucket in [Duration::ZERO, Duration::from_millis(1500), Duration::from_secs(1)] {
            let err = CountQuery::new(user, day, now, bucket).validate();
            assert!(
                matches!(err, Err(IndexError::InvalidQuery { field: "bucket", .. })),
                "{bucket:?}"
            );
        }
    }
}
