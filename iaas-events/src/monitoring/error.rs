//! Why a log index call failed, split the way the indexer and the HTTP layer need it:
//! retry later ([`IndexError::is_transient`]), the caller's fault (4xx), or a lost cause.

use iaas_core::{BoxError, EventId};

/// What went wrong in a [`LogIndex`](super::LogIndex) call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// A query parameter is unusable (HTTP 400).
    #[error("invalid {field}: {reason}")]
    InvalidQuery {
        /// The parameter (`"limit"`, `"cursor"`, `"bucket"`...).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The backend's configuration is unusable (a malformed URL).
    #[error("invalid {key}: {reason}")]
    InvalidConfig {
        /// The setting.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The backend is down, overloaded or timed out; retrying later may work.
    #[error("{backend} unavailable while {operation}")]
    Unavailable {
        /// `"sqlite"` or `"elasticsearch"`.
        backend: &'static str,
        /// What was being done.
        operation: String,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// The backend refused entries for good (a mapping conflict, a malformed document).
    #[error("{backend} rejected the log entry of event {event_id}: {reason}")]
    Rejected {
        /// `"sqlite"` or `"elasticsearch"`.
        backend: &'static str,
        /// The first rejected entry.
        event_id: EventId,
        /// The backend's reason.
        reason: String,
    },
    /// The backend answered something that makes no sense (a bug, a corrupt row, an
    /// unexpected response shape).
    #[error("{backend} gave an unusable answer while {operation}: {reason}")]
    Internal {
        /// `"sqlite"` or `"elasticsearch"`.
        backend: &'static str,
        /// What was being done.
        operation: String,
        /// What is wrong with the answer.
        reason: String,
    },
}

impl IndexError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, IndexError::Unavailable { .. })
    }

    /// The HTTP status this error maps to.
    pub fn http_status(&self) -> u16 {
        match self {
            IndexError::InvalidQuery { .. } => 400,
            IndexError::Unavailable { .. } => 503,
            IndexError::Rejected { .. } => 422,
            IndexError::Internal { .. } | IndexError::InvalidConfig { .. } => 500,
        }
    }

    /// A stable machine-readable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            IndexError::InvalidQuery { .. } => "invalid_query",
            IndexError::Unavailable { .. } => "index_unavailable",
            IndexError::Rejected { .. } => "entry_rejected",
            IndexError::Internal { .. } => "internal",
            IndexError::InvalidConfig { .. } => "invalid_config",
        }
    }
}
