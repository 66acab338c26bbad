//! Login throttling: failed logins are counted per username and per client address in fixed
//! windows, in the [`SessionStore`] (so in Redis, shared by every instance). When either
//! counter reaches its limit, logins for that username or from that address are refused until
//! the window ends, before any password is checked.

use chrono::{DateTime, Duration, Utc};

use crate::error::{AuthError, Result};
use crate::session::SessionStore;

/// Limits on failed logins.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ThrottleConfig {
    /// Failures allowed per username in one window (default 5).
    pub max_failures_per_username: u64,
    /// Failures allowed per client address in one window (default 20: several users may share
    /// an address behind a NAT).
    pub max_failures_per_client: u64,
    /// Window length (default 15 minutes).
    pub window: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            max_failures_per_username: 5,
            max_failures_per_client: 20,
            window: Duration::minutes(15),
        }
    }
}

fn username_key(username: &str) -> String {
    format!("login:user:{username}")
}

fn client_key(client: &str) -> String {
    format!("login:client:{client}")
}

/// Refuses the login when either counter is at its limit.
pub(crate) async fn check(
    store: &dyn SessionStore,
    config: &ThrottleConfig,
    username: &str,
    client: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    for (subject, key, max) in [
        ("username", username_key(username), config.max_failures_per_username),
        ("client", client_key(client), config.max_failures_per_client),
    ] {
        let attempts = store.failures(&key, now).await?;
        if attempts.count >= max {
            let retry_after_secs = u64::try_from(attempts.retry_after.num_seconds()).unwrap_or(0);
            return Err(AuthError::Throttled {
                subject,
                retry_after_secs: retry_after_secs.max(1),
            });
        }
    }
    Ok(())
}

/// Counts one failed login for both the username and the client.
pub(crate) async fn record_failure(
    store: &dyn SessionStore,
    config: &ThrottleConfig,
    username: &str,
    client: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    store.record_failure(&username_key(username), config.window, now).await?;
    store.record_failure(&client_key(client), config.window, now).await?;
    Ok(())
}

/// Forgets the username's failures after a successful login (the client's stay: one address
/// guessing many accounts is still throttled).
pub(crate) async fn clear(store: &dyn SessionStore, username: &str) -> Result<()> {
    store.clear_failures(&username_key(username)).await
}
