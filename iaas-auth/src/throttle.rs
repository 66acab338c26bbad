//! Throttling of password checks and registrations, counted in the [`SessionStore`] (so in
//! Redis, shared by every instance).
//!
//! **Password checks** (login and password change) are counted per *username and client
//! address together*. A few failures are free; after them every failure delays the next check
//! of that pair, the delay doubling up to a ceiling. Keying by the pair means an attacker who
//! guesses `admin`'s password from one address slows down only that address's attempts: the
//! real `admin` logging in from elsewhere is never locked out. One address guessing many
//! usernames is caught by a second counter per address alone, with a hard limit per window.
//! While a pair or an address is held back, the check is refused before any password is
//! looked at.
//!
//! **Registrations** are counted per client address in their own window.
//!
//! The client address is what the server saw, or what a trusted proxy forwarded (see
//! [`crate::http`]).

use chrono::{DateTime, Duration, Utc};

use crate::error::{AuthError, Result};
use crate::session::SessionStore;

/// Limits on failed password checks and registrations.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ThrottleConfig {
    /// Failed checks one address may make against one username before delays start
    /// (default 5).
    pub free_failures: u64,
    /// The delay after the first failure past the free ones (default 1 second); each further
    /// failure doubles it.
    pub first_delay: Duration,
    /// The longest delay (default 15 minutes).
    pub max_delay: Duration,
    /// Failed checks allowed per client address, over all usernames, in one window
    /// (default 20: several users may share an address behind a NAT).
    pub max_failures_per_client: u64,
    /// How long failures are remembered (default 15 minutes).
    pub window: Duration,
    /// Registrations allowed per client address in one registration window (default 20).
    pub max_registrations_per_client: u64,
    /// The registration window (default 1 hour).
    pub registration_window: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            free_failures: 5,
            first_delay: Duration::seconds(1),
            max_delay: Duration::minutes(15),
            max_failures_per_client: 20,
            window: Duration::minutes(15),
            max_registrations_per_client: 20,
            registration_window: Duration::hours(1),
        }
    }
}

impl ThrottleConfig {
    /// The delay after `failures` failures of one pair: none while they are free, then
    /// `first_delay` doubling per failure up to `max_delay`.
    pub fn delay_after(&self, failures: u64) -> Duration {
        let Some(past) = failures.checked_sub(self.free_failures) else {
            return Duration::zero();
        };
        let factor = 2i32.saturating_pow(u32::try_from(past.min(30)).unwrap_or(30));
        let delay = self.first_delay.checked_mul(factor).unwrap_or(self.max_delay);
        delay.min(self.max_delay)
    }
}

fn pair_key(username: &str, client: &str) -> String {
    format!("login:pair:{username}:{client}")
}

fn hold_key(username: &str, client: &str) -> String {
    format!("login:hold:{username}:{client}")
}

fn client_key(client: &str) -> String {
    format!("login:client:{client}")
}

fn registration_key(client: &str) -> String {
    format!("register:client:{client}")
}

fn throttled(subject: &'static str, retry_after: Duration) -> AuthError {
    let secs =
        u64::try_from(retry_after.num_milliseconds().saturating_add(999) / 1000).unwrap_or(0);
    AuthError::Throttled { subject, retry_after_secs: secs.max(1) }
}

/// Refuses a password check while the pair is held back or the address is over its limit.
pub(crate) async fn check(
    store: &dyn SessionStore,
    config: &ThrottleConfig,
    username: &str,
    client: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let hold = store.failures(&hold_key(username, client), now).await?;
    if hold.count > 0 && hold.retry_after > Duration::zero() {
        return Err(throttled("username and client", hold.retry_after));
    }
    let attempts = store.failures(&client_key(client), now).await?;
    if attempts.count >= config.max_failures_per_client {
        return Err(throttled("client", attempts.retry_after));
    }
    Ok(())
}

/// Counts one failed password check for the pair and the address, and holds the pair back
/// for its delay.
pub(crate) async fn record_failure(
    store: &dyn SessionStore,
    config: &ThrottleConfig,
    username: &str,
    client: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let pair = store.record_failure(&pair_key(username, client), config.window, now).await?;
    let delay = config.delay_after(pair.count);
    if delay > Duration::zero() {
        // A counter that lives exactly `delay`: while it exists the pair is held back.
        store.clear_failures(&hold_key(username, client)).await?;
        store.record_failure(&hold_key(username, client), delay, now).await?;
    }
    store.record_failure(&client_key(client), config.window, now).await?;
    Ok(())
}

/// Forgets the pair's failures after a successful check (the address's stay: one address
/// guessing many accounts is still throttled).
pub(crate) async fn clear(store: &dyn SessionStore, username: &str, client: &str) -> Result<()> {
    store.clear_failures(&pair_key(username, client)).await?;
    store.clear_failures(&hold_key(username, client)).await
}

/// Counts a registration from `client`; refused past the limit of the window.
pub(crate) async fn count_registration(
    store: &dyn SessionStore,
    config: &ThrottleConfig,
    client: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let attempts =
        store.record_failure(&registration_key(client), config.registration_window, now).await?;
    if attempts.count > config.max_registrations_per_client {
        return Err(throttled("registrations from this client", attempts.retry_after));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_start_after_the_free_failures_and_double_up_to_the_ceiling() {
        let config = ThrottleConfig::default();
        let secs = |n| config.delay_after(n).num_seconds();
        assert_eq!((secs(0), secs(4)), (0, 0));
        assert_eq!((secs(5), secs(6), secs(7), secs(14)), (1, 2, 4, 512));
        assert_eq!((secs(15), secs(40), secs(u64::MAX)), (900, 900, 900));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let AuthError::Throttled { retry_after_secs, .. } =
            throttled("client", Duration::milliseconds(1_200))
        else {
            panic!("not throttled")
        };
        assert_eq!(retry_after_secs, 2);
    }
}
