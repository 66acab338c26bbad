//! Errors of opening a store, and the translation of database errors into the ports' errors.

use iaas_core::Error;

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database URL names no supported backend (or one not compiled in).
    #[error("unsupported database URL {url:?}: expected {expected}")]
    UnsupportedUrl {
        /// The URL, without its password.
        url: String,
        /// The schemes this build accepts.
        expected: &'static str,
    },
    /// The database could not be reached or opened.
    #[error("cannot open the {backend} database at {url}")]
    Connect {
        /// `"sqlite"` or `"postgres"`.
        backend: &'static str,
        /// Where, without the password.
        url: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A schema migration failed; the store is not used.
    #[error("migrating the {backend} database failed")]
    Migrate {
        /// `"sqlite"` or `"postgres"`.
        backend: &'static str,
        /// The migrator's error (which migration, and why).
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// Translates a driver error into the ports' error: connection trouble, timeouts, lock
/// contention and serialization failures are `Unavailable` (retry later); a unique violation is
/// a `Conflict` on `entity`; anything else is `Internal`.
pub(crate) fn db_error(
    backend: &'static str,
    entity: &'static str,
    key: &str,
    operation: &str,
    err: sqlx::Error,
) -> Error {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            Error::conflict(entity, key, format!("already exists ({})", db.message()))
        }
        sqlx::Error::Database(db) if is_transient_code(db.code().as_deref()) => {
            Error::unavailable(backend, operation.to_owned(), err)
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => Error::unavailable(backend, operation.to_owned(), err),
        _ => Error::Internal { operation: operation.to_owned(), source: Box::new(err) },
    }
}

/// Database error codes that go away on retry.
fn is_transient_code(code: Option<&str>) -> bool {
    match code {
        // SQLite: SQLITE_BUSY, SQLITE_LOCKED (and their extended codes).
        Some(code) if code.parse::<u32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6)) => true,
        // PostgreSQL: serialization failure, deadlock, connection exceptions, shutdown.
        Some("40001" | "40P01" | "57P01" | "57P02" | "57P03") => true,
        Some(code) => code.starts_with("08"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes_are_recognised() {
        assert!(is_transient_code(Some("5")));
        assert!(is_transient_code(Some("517")), "SQLITE_BUSY_SNAPSHOT");
        assert!(is_transient_code(Some("40P01")));
        assert!(is_transient_code(Some("08006")));
        assert!(!is_transient_code(Some("23505")));
        assert!(!is_transient_code(None));
    }

    #[test]
    fn a_pool_timeout_is_unavailable() {
        let err = db_error("postgres", "user", "ada", "reading user", sqlx::Error::PoolTimedOut);
        assert!(err.is_transient(), "{err}");
    }
}
