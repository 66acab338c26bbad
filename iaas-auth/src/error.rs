//! The crate's one error type.
//!
//! Every variant names what failed and, where it is safe to echo, with which input. Each maps to
//! exactly one HTTP status and a stable machine-readable code in `http.rs`
//! ([`AuthError::code`] is that code, so services that embed the crate without the router
//! report the same codes).

use iaas_core::BoxError;

/// Why a presented access token was refused. Each reason has its own stable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenRejection {
    /// Not three base64url parts with a JSON header and payload.
    Malformed,
    /// The header names `none` or an algorithm this verifier never accepts.
    AlgorithmNotAllowed,
    /// The header's algorithm differs from the one pinned for its key (`HS256` sent for an
    /// `EdDSA` key, or the reverse).
    AlgorithmMismatch,
    /// The header has no `kid`, or one naming no known key.
    UnknownKey,
    /// The signature does not match the header and payload.
    BadSignature,
    /// `exp` has passed.
    Expired,
    /// `nbf` (or `iat`) is in the future.
    NotYetValid,
    /// `aud` is not this service's audience.
    WrongAudience,
    /// `iss` is not the configured issuer.
    WrongIssuer,
    /// A required claim is missing or has the wrong type.
    MissingClaim,
}

impl TokenRejection {
    /// The stable error code of this rejection.
    pub fn code(self) -> &'static str {
        match self {
            TokenRejection::Malformed => "token_malformed",
            TokenRejection::AlgorithmNotAllowed => "token_algorithm_not_allowed",
            TokenRejection::AlgorithmMismatch => "token_algorithm_mismatch",
            TokenRejection::UnknownKey => "token_unknown_key",
            TokenRejection::BadSignature => "token_bad_signature",
            TokenRejection::Expired => "token_expired",
            TokenRejection::NotYetValid => "token_not_yet_valid",
            TokenRejection::WrongAudience => "token_wrong_audience",
            TokenRejection::WrongIssuer => "token_wrong_issuer",
            TokenRejection::MissingClaim => "token_missing_claim",
        }
    }
}

/// Why a presented refresh token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefreshRejection {
    /// No live session has this token (never issued, idle-expired, logged out or revoked).
    Unknown,
    /// The session's family reached its absolute lifetime.
    Expired,
    /// The token had already been rotated: its whole family has now been revoked.
    Reused,
    /// The user revoked every session (logout-all or password change) after this one started.
    Revoked,
}

impl RefreshRejection {
    /// The stable error code of this rejection.
    pub fn code(self) -> &'static str {
        match self {
            RefreshRejection::Unknown => "refresh_token_invalid",
            RefreshRejection::Expired => "refresh_token_expired",
            RefreshRejection::Reused => "refresh_token_reused",
            RefreshRejection::Revoked => "refresh_token_revoked",
        }
    }
}

/// What went wrong in the auth crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The username breaks the rules (length, characters).
    #[error("invalid username {input:?}: {reason}")]
    InvalidUsername {
        /// The rejected input, truncated to a length safe to log.
        input: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The new password breaks the password policy (the password itself is never echoed).
    #[error("password rejected: {reason}")]
    WeakPassword {
        /// Which rule it breaks.
        reason: String,
    },
    /// The username is already registered.
    #[error("username {username:?} is taken")]
    UsernameTaken {
        /// The normalised username.
        username: String,
    },
    /// Unknown user or wrong password: deliberately not told apart.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// Too many failed password checks or registrations: `subject` says which counter.
    #[error("too many attempts for {subject}; retry in {retry_after_secs} s")]
    Throttled {
        /// `"username and client"`, `"client"` or `"registrations from this client"`.
        subject: &'static str,
        /// Seconds until the next attempt is accepted.
        retry_after_secs: u64,
    },
    /// Every password-hashing slot is taken and the queue for them is full: the request was
    /// not started. Bounds the memory hashing takes (see
    /// [`PasswordConfig::max_concurrent_hashes`](crate::PasswordConfig)).
    #[error("too many password checks under way; retry in {retry_after_secs} s")]
    Busy {
        /// Seconds after which a retry is likely to be served.
        retry_after_secs: u64,
    },
    /// The caller has no session with this id (another user's is answered the same).
    #[error("no such session")]
    SessionNotFound,
    /// The request carried no bearer token.
    #[error("missing bearer token")]
    MissingToken,
    /// The access token was refused.
    #[error("access token rejected: {}", .0.code())]
    InvalidToken(TokenRejection),
    /// The refresh token was refused.
    #[error("refresh token rejected: {}", .0.code())]
    InvalidRefresh(RefreshRejection),
    /// The token is valid but lacks a scope the endpoint requires.
    #[error("missing scope {scope:?}")]
    MissingScope {
        /// The required scope.
        scope: String,
    },
    /// The configuration is unusable (bad key material, impossible parameters).
    #[error("invalid auth configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// A backend (Redis, the user repository) did not answer; retrying later may work.
    #[error("{backend} unavailable while {operation}")]
    Unavailable {
        /// Which backend.
        backend: &'static str,
        /// What was being done.
        operation: String,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// A bug or a nonsensical backend answer.
    #[error("internal error while {operation}")]
    Internal {
        /// What was being done.
        operation: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

impl AuthError {
    /// The stable machine-readable code of this error (the `code` of the JSON error body).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::InvalidUsername { .. } => "invalid_username",
            AuthError::WeakPassword { .. } => "weak_password",
            AuthError::UsernameTaken { .. } => "username_taken",
            AuthError::InvalidCredentials => "invalid_credentials",
            AuthError::Throttled { .. } => "too_many_attempts",
            AuthError::Busy { .. } => "busy",
            AuthError::SessionNotFound => "session_not_found",
            AuthError::MissingToken => "missing_token",
            AuthError::InvalidToken(rejection) => rejection.code(),
            AuthError::InvalidRefresh(rejection) => rejection.code(),
            AuthError::MissingScope { .. } => "insufficient_scope",
            AuthError::Unavailable { .. } => "unavailable",
            AuthError::Config { .. } | AuthError::Internal { .. } => "internal",
        }
    }

    /// Shorthand for [`AuthError::Unavailable`].
    pub fn unavailable(
        backend: &'static str,
        operation: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        AuthError::Unavailable { backend, operation: operation.into(), source: source.into() }
    }

    /// Shorthand for [`AuthError::Internal`].
    pub fn internal(operation: impl Into<String>, source: impl Into<BoxError>) -> Self {
        AuthError::Internal { operation: operation.into(), source: source.into() }
    }

    /// Translates a port error from `iaas-core` (the user repository).
    pub(crate) fn from_port(operation: &str, err: iaas_core::Error) -> Self {
        match err {
            iaas_core::Error::Unavailable { backend, operation: inner, source } => {
                AuthError::Unavailable {
                    backend,
                    operation: format!("{operation} ({inner})"),
                    source,
                }
            }
            iaas_core::Error::Conflict { id, .. } => AuthError::UsernameTaken { username: id },
            other => AuthError::internal(operation.to_owned(), other),
        }
    }
}

/// `Result` with [`AuthError`] as the default error.
pub type Result<T, E = AuthError> = std::result::Result<T, E>;

/// Longest slice of untrusted input copied into an error message.
const MAX_ECHOED_INPUT: usize = 64;

/// Copies at most [`MAX_ECHOED_INPUT`] characters of untrusted input into an error message.
pub(crate) fn truncate_for_error(s: &str) -> String {
    match s.char_indices().nth(MAX_ECHOED_INPUT) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}
