//! User accounts as the repositories store them. Username and password rules belong to the
//! auth crate; here a user is only what must be persisted.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::UserId;

/// A stored account.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// Unique login name, already normalised by the auth crate.
    pub username: String,
    /// The password hash in PHC string format (`$argon2id$...`); never the password.
    pub password_hash: String,
    /// Scopes granted to the user's access tokens.
    pub scopes: Vec<String>,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// When the password last changed.
    pub password_changed_at: DateTime<Utc>,
}

impl fmt::Debug for User {
    /// The hash is left out so that logging a user never leaks it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("created_at", &self.created_at)
            .field("password_changed_at", &self.password_changed_at)
            .finish()
    }
}

/// The scope of the platform's administrators: quota overrides and other operations on other
/// users' behalf. The first-run `admin` account holds it; registration never grants it.
pub const SCOPE_ADMIN: &str = "admin";

/// Who is making a request, as established by the auth layer (a validated access token).
///
/// Routers of every crate receive it from the request (the platform installs the auth layer that
/// puts it there) and check ownership and scopes with it, so no service calls the auth service
/// per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The user.
    pub user_id: UserId,
    /// Scopes granted by the token.
    pub scopes: Vec<String>,
    /// When the token stops being valid, if it says (a live connection ends then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The login (session family) the token was issued for, if it says: a live connection
    /// ends when that session does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<uuid::Uuid>,
}

impl Principal {
    /// A caller with `scopes` and nothing else known (no expiry, no session).
    pub fn new(user_id: UserId, scopes: Vec<String>) -> Self {
        Self { user_id, scopes, expires_at: None, session: None }
    }

    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Whether a login is still live: what a long-lived connection (a live-status WebSocket) asks
/// now and then, so it ends when its session is logged out or revoked (a logout-all, a
/// password change) rather than when the connection happens to drop.
#[async_trait::async_trait]
pub trait SessionLiveness: Send + Sync {
    /// Whether `user`'s login `session` may still act.
    async fn is_live(&self, user: UserId, session: uuid::Uuid) -> crate::Result<bool>;

    /// Logins' endings from now on, told as they happen, when this source can tell them
    /// (`None`, the default: it can only be asked). A listener still asks now and then: news
    /// is not kept for anyone, so what a listener could not take is lost to it.
    fn login_news(&self) -> Option<crate::LoginNewsFeed> {
        None
    }
}

/// The largest request body a server accepts, put in every request's extensions by the
/// server's outermost layer. Every JSON extractor of the crates' routers honours it, so one
/// setting decides the limit for all routes; without it each router keeps its own default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit(pub usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_password_hash() {
        let now = Utc::now();
        let user = User {
            id: UserId::new_random(),
            username: "ada".into(),
            password_hash: "$argon2id$v=19$secret".into(),
            scopes: vec!["instances:write".into()],
            created_at: now,
            password_changed_at: now,
        };
        let debug = format!("{user:?}");
        assert!(debug.contains("ada"));
        assert!(!debug.contains("argon2id"));
    }
}
