//! The error type shared by the ports.
//!
//! Adapters translate their backend's failures into these variants so callers can decide what
//! to do without knowing the backend: `NotFound` becomes 404, `Forbidden`, `PortNotAllowed`
//! and `QuotaExceeded` 403, `Conflict` 409, `Invalid` 400/422, `Unavailable` 503 (retry later).

use crate::event::DecodeError;
use crate::status::InvalidTransition;

/// The boxed source of an [`Error::Unavailable`] or [`Error::Internal`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a port.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No such entity (or it is not visible to the caller).
    #[error("{entity} {id} not found")]
    NotFound {
        /// What was looked up (`"instance"`, `"user"`).
        entity: &'static str,
        /// Its id or name.
        id: String,
    },
    /// The write collides with existing state: a duplicate name, or a concurrent writer changed
    /// the entity since it was read (optimistic concurrency).
    #[error("conflict on {entity} {id}: {reason}")]
    Conflict {
        /// What was written.
        entity: &'static str,
        /// Its id or name.
        id: String,
        /// Why it conflicts.
        reason: String,
    },
    /// Input that fails validation.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field at fault, dotted for nested fields (`spec.database`).
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A status change the life cycle forbids.
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// A feature the current configuration cannot provide.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What was asked for.
        what: String,
    },
    /// A host port the platform's [`HostPortPolicy`](crate::HostPortPolicy) does not let a
    /// tenant publish on.
    #[error("host port {port} is not allowed: {reason}")]
    PortNotAllowed {
        /// The port asked for.
        port: u16,
        /// Why, and which ports are allowed.
        reason: String,
    },
    /// The request would take its owner past a quota.
    #[error(transparent)]
    QuotaExceeded(#[from] crate::quota::QuotaExceeded),
    /// The caller may not act on this entity.
    #[error("forbidden: {reason}")]
    Forbidden {
        /// Why.
        reason: String,
    },
    /// An event could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A backend (database, broker, cache) did not answer or refused; retrying later may work.
    #[error("{backend} unavailable while {operation}")]
    Unavailable {
        /// Which backend (`"postgres"`, `"kafka"`, `"redis"`).
        backend: &'static str,
        /// What was being done.
        operation: String,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// A bug or a backend answer that makes no sense; not worth retrying.
    #[error("internal error while {operation}")]
    Internal {
        /// What was being done.
        operation: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid { field, reason: reason.into() }
    }

    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(entity: &'static str, id: impl ToString) -> Self {
        Error::NotFound { entity, id: id.to_string() }
    }

    /// Shorthand for [`Error::Conflict`].
    pub fn conflict(entity: &'static str, id: impl ToString, reason: impl Into<String>) -> Self {
        Error::Conflict { entity, id: id.to_string(), reason: reason.into() }
    }

    /// Shorthand for [`Error::Unavailable`].
    pub fn unavailable(
        backend: &'static str,
        operation: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Unavailable { backend, operation: operation.into(), source: source.into() }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

/// An error and its causes, `: `-separated: what a log line needs, since an error's `Display`
/// names only its own level (the cause stays in [`std::error::Error::source`]).
///
/// ```
/// let error = iaas_core::Error::unavailable("kafka", "publishing", "broker down");
/// assert_eq!(iaas_core::error_chain(&error), "kafka unavailable while publishing: broker down");
/// ```
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
