//! The first-run admin account.
//!
//! A fresh platform has no account, and registration is open, so the operator needs one known
//! account to start with. On a start that finds no user named `admin`, one is registered through
//! the auth service (the normal argon2id hashing and policy) with a random password, which the
//! binary prints once, to stdout, never through `tracing`: logs are shipped and kept, stdout
//! of a first interactive run is read by the person who started it. Later starts find the
//! account and print nothing; the password cannot be shown again (change it with
//! `PUT /v1/auth/password`).
//!
//! Registration gives every account the same default scopes; the `admin` account this code
//! creates also gets [`SCOPE_ADMIN`] (quota overrides, for one). An existing account named
//! `admin` is never granted it: it may predate the scope, or someone may have registered the
//! name on a platform whose first start did not run here (registration is open). The start then
//! logs how an operator grants it by hand. No account can get the scope through the API.

use std::fmt;

use iaas_auth::{AuthError, AuthService};
use iaas_core::{SCOPE_ADMIN, UserRepository};

/// The username of the first-run account.
pub const ADMIN_USERNAME: &str = "admin";
/// Characters in the generated password: 24 of 62 symbols is about 143 bits.
pub const ADMIN_PASSWORD_LEN: usize = 24;
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The account created on this start, with its password (shown once).
#[derive(Clone, PartialEq, Eq)]
pub struct FirstAdmin {
    /// The username (`admin`).
    pub username: String,
    /// The generated password.
    pub password: String,
}

impl fmt::Debug for FirstAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirstAdmin").field("username", &self.username).finish_non_exhaustive()
    }
}

impl FirstAdmin {
    /// What to print once: the credentials and the login request for a platform on `base_url`
    /// (`http://127.0.0.1:8080`).
    pub fn instructions(&self, base_url: &str) -> String {
        format!(
            "\
First start: created the account {user:?}. Its password is shown only this once:

    username: {user}
    password: {password}

Log in with:

    curl -s -H 'content-type: application/json' \\
      -d '{{\"username\":\"{user}\",\"password\":\"{password}\"}}' \\
      {base_url}/v1/auth/login

Change the password with PUT /v1/auth/password.
",
            user = self.username,
            password = self.password,
        )
    }
}

/// Why the first-run account could not be checked or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// Looking the account up failed.
    #[error("cannot look up the {ADMIN_USERNAME:?} account")]
    Lookup(#[source] iaas_core::Error),
    /// No randomness for the password.
    #[error("no randomness for the {ADMIN_USERNAME:?} password: {0}")]
    Random(String),
    /// Registering the account failed.
    #[error("cannot register the {ADMIN_USERNAME:?} account")]
    Register(#[source] AuthError),
    /// Granting the account the admin scope failed.
    #[error("cannot grant the {ADMIN_USERNAME:?} account the {SCOPE_ADMIN:?} scope")]
    Grant(#[source] iaas_core::Error),
}

/// Creates the `admin` account unless it exists. `Some` with the password when this call
/// created it; `None` when it already existed (also when another process created it at the
/// same moment).
pub async fn ensure_admin(
    auth: &AuthService,
    users: &dyn UserRepository,
) -> Result<Option<FirstAdmin>, AdminError> {
    if let Some(existing) =
        users.find_user_by_username(ADMIN_USERNAME).await.map_err(AdminError::Lookup)?
    {
        if !existing.scopes.iter().any(|scope| scope == SCOPE_ADMIN) {
            tracing::warn!(
                user_id = %existing.id,
                "the {ADMIN_USERNAME:?} account lacks the {SCOPE_ADMIN:?} scope and is not given it automatically (it was not created by this platform's first start); if it is yours, grant it in the store: UPDATE users SET scopes = '[\"instances:read\",\"instances:write\",\"events:read\",\"admin\"]' WHERE username = 'admin'"
            );
        }
        return Ok(None);
    }
    let password = random_password()?;
    match auth.register(ADMIN_USERNAME, &password).await {
        Ok(user) => {
            let mut scopes = user.scopes;
            scopes.push(SCOPE_ADMIN.to_owned());
            users.set_scopes(user.id, &scopes).await.map_err(AdminError::Grant)?;
            Ok(Some(FirstAdmin { username: user.username, password }))
        }
        // Two processes of one platform starting together: the other one printed it.
        Err(AuthError::UsernameTaken { .. }) => Ok(None),
        Err(err) => Err(AdminError::Register(err)),
    }
}

/// `ADMIN_PASSWORD_LEN` characters drawn uniformly from `ALPHABET` (bytes at or above the
/// largest multiple of the alphabet size are rejected, so no character is favoured).
fn random_password() -> Result<String, AdminError> {
    let limit = u8::try_from(256 - 256 % ALPHABET.len()).unwrap_or(u8::MAX);
    let mut password = String::with_capacity(ADMIN_PASSWORD_LEN);
    let mut bytes = [0u8; 64];
    while password.len() < ADMIN_PASSWORD_LEN {
        getrandom::getrandom(&mut bytes).map_err(|e| AdminError::Random(e.to_string()))?;
        for &byte in bytes.iter().filter(|&&b| b < limit) {
            if password.len() == ADMIN_PASSWORD_LEN {
                break;
            }
            password.push(char::from(ALPHABET[usize::from(byte) % ALPHABET.len()]));
        }
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use iaas_auth::{AuthConfig, KeySet, MemorySessionStore, SigningKey};
    use iaas_core::SystemClock;
    use iaas_core::memory::MemoryUserRepository;

    use super::*;

    fn auth(users: Arc<MemoryUserRepository>) -> AuthService {
        AuthService::new(
            users,
            Arc::new(MemorySessionStore::new()),
            KeySet::new(SigningKey::generate_ed25519("test").unwrap()),
            b"a secret of at least thirty-two bytes!!",
            Arc::new(SystemClock),
            AuthConfig::default(),
        )
        .unwrap()
    }

    #[test]
    fn passwords_are_long_alphanumeric_and_distinct() {
        let a = random_password().unwrap();
        let b = random_password().unwrap();
        assert_eq!(a.len(), ADMIN_PASSWORD_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn the_account_is_created_once_and_logs_in_with_the_printed_password() {
        let users = Arc::new(MemoryUserRepository::new());
        let auth = auth(users.clone());
        let first = ensure_admin(&auth, users.as_ref()).await.unwrap().expect("created");
        assert_eq!(first.username, ADMIN_USERNAME);
        assert!(!format!("{first:?}").contains(&first.password), "Debug hides the password");
        let text = first.instructions("http://127.0.0.1:1");
        assert!(
            text.contains(&first.password) && text.contains("http://127.0.0.1:1/v1/auth/login")
        );
        auth.login(ADMIN_USERNAME, &first.password, "127.0.0.1").await.unwrap();
        let stored = users.find_user_by_username(ADMIN_USERNAME).await.unwrap().unwrap();
        assert!(stored.password_hash.starts_with("$argon2id$"), "hashed the normal way");
        assert!(stored.scopes.iter().any(|s| s == SCOPE_ADMIN), "{:?}", stored.scopes);
        let ada = auth.register("ada", "correct horse battery staple").await.unwrap();
        assert!(!ada.scopes.iter().any(|s| s == SCOPE_ADMIN), "registration never grants it");

        assert_eq!(ensure_admin(&auth, users.as_ref()).await.unwrap(), None);
    }

    /// Someone registered `admin` before the platform's first start ran here: the account is
    /// left as it is, without the admin scope.
    #[tokio::test]
    async fn an_admin_account_it_did_not_create_is_not_granted_the_scope() {
        let users = Arc::new(MemoryUserRepository::new());
        let auth = auth(users.clone());
        auth.register(ADMIN_USERNAME, "correct horse battery staple").await.unwrap();
        assert_eq!(ensure_admin(&auth, users.as_ref()).await.unwrap(), None);
        let squatter = users.find_user_by_username(ADMIN_USERNAME).await.unwrap().unwrap();
        assert!(!squatter.scopes.iter().any(|s| s == SCOPE_ADMIN), "{:?}", squatter.scopes);
    }
}
