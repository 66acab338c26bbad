//! Password policy and argon2id hashing.
//!
//! Defaults follow the OWASP Password Storage Cheat Sheet for argon2id: m = 19 MiB
//! (19,456 KiB), t = 2 iterations, p = 1 lane. Hashes are PHC strings that carry their own
//! parameters, so raising the cost later still verifies old hashes.
//!
//! Verification compares digests in constant time (the `password-hash` crate's `Output`), and a
//! login for an unknown user verifies against a dummy hash made with the same parameters, so the
//! response time does not tell which usernames exist.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::{AuthError, Result};

/// Hashing cost and password policy.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PasswordConfig {
    /// argon2id memory cost in KiB (default 19,456: OWASP).
    pub memory_kib: u32,
    /// argon2id iterations (default 2: OWASP).
    pub iterations: u32,
    /// argon2id lanes (default 1: OWASP).
    pub parallelism: u32,
    /// Shortest accepted password, in characters (default 8: NIST SP 800-63B).
    pub min_chars: usize,
    /// Longest accepted password, in bytes (default 1,024), so a huge password cannot
    /// be used to burn CPU.
    pub max_bytes: usize,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self { memory_kib: 19_456, iterations: 2, parallelism: 1, min_chars: 8, max_bytes: 1024 }
    }
}

impl PasswordConfig {
    /// The cheapest parameters argon2 accepts, for tests only: never use them in production.
    pub fn insecure_fast_for_tests() -> Self {
        Self { memory_kib: 8, iterations: 1, parallelism: 1, ..Self::default() }
    }
}

/// Hashes and verifies passwords with argon2id.
#[derive(Clone)]
pub struct PasswordHasher {
    argon: Argon2<'static>,
    config: PasswordConfig,
    dummy_hash: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").field("config", &self.config).finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A hasher with these parameters; [`AuthError::Config`] when argon2 refuses them.
    pub fn new(config: PasswordConfig) -> Result<Self> {
        let params = Params::new(config.memory_kib, config.iterations, config.parallelism, None)
            .map_err(|err| AuthError::Config {
                reason: format!(
                    "argon2 parameters m={} t={} p={}: {err}",
                    config.memory_kib, config.iterations, config.parallelism
                ),
            })?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut hasher = Self { argon, config, dummy_hash: String::new() };
        let mut random = [0u8; 32];
        fill_random(&mut random)?;
        hasher.dummy_hash = hasher.hash_unchecked(&hex::encode(random))?;
        Ok(hasher)
    }

    /// The parameters in use.
    pub fn config(&self) -> &PasswordConfig {
        &self.config
    }

    /// Checks `password` against the policy; `username` is refused as a password.
    pub fn check_policy(&self, password: &str, username: &str) -> Result<()> {
        let weak = |reason: String| Err(AuthError::WeakPassword { reason });
        if password.len() > self.config.max_bytes {
            return weak(format!("must be at most {} bytes", self.config.max_bytes));
        }
        if password.chars().count() < self.config.min_chars {
            return weak(format!("must be at least {} characters", self.config.min_chars));
        }
        if password.eq_ignore_ascii_case(username) {
            return weak("must not be the username".to_owned());
        }
        let mut chars = password.chars();
        if let Some(first) = chars.next()
            && chars.all(|c| c == first)
        {
            return weak("must not repeat a single character".to_owned());
        }
        Ok(())
    }

    /// The PHC string of `password` with a fresh random salt (policy is not checked here).
    pub fn hash(&self, password: &str) -> Result<String> {
        if password.len() > self.config.max_bytes {
            return Err(AuthError::WeakPassword {
                reason: format!("must be at most {} bytes", self.config.max_bytes),
            });
        }
        self.hash_unchecked(password)
    }

    fn hash_unchecked(&self, password: &str) -> Result<String> {
        let mut salt = [0u8; 16];
        fill_random(&mut salt)?;
        let salt = SaltString::encode_b64(&salt)
            .map_err(|err| AuthError::internal("encoding a password salt", err.to_string()))?;
        self.argon
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|err| AuthError::internal("hashing a password", err.to_string()))
    }

    /// Whether `password` matches the PHC string `phc` (constant-time comparison). An
    /// unparsable hash is an internal error, not a mismatch, so corrupt rows get noticed.
    pub fn verify(&self, password: &str, phc: &str) -> Result<bool> {
        if password.len() > self.config.max_bytes {
            // Still spend the time of one verification, so the length does not leak timing.
            self.verify_dummy(password);
            return Ok(false);
        }
        let parsed = PasswordHash::new(phc).map_err(|err| {
            AuthError::internal("parsing a stored password hash", err.to_string())
        })?;
        match self.argon.verify_password(password.as_bytes(), &parsed) {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::Password) => Ok(false),
            Err(err) => Err(AuthError::internal("verifying a password", err.to_string())),
        }
    }

    /// Spends the time of one verification for a user that does not exist.
    pub fn verify_dummy(&self, password: &str) {
        let truncated = &password.as_bytes()[..password.len().min(self.config.max_bytes)];
        if let Ok(parsed) = PasswordHash::new(&self.dummy_hash) {
            // The outcome is meaningless by design: only the time spent matters.
            let _ = self.argon.verify_password(truncated, &parsed);
        }
    }
}

/// Fills `buf` from the operating system's random source.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::getrandom(buf)
        .map_err(|err| AuthError::internal("reading the OS random source", err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> PasswordHasher {
        PasswordHasher::new(PasswordConfig::insecure_fast_for_tests()).unwrap()
    }

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hasher();
        let phc = h.hash("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{phc}");
        assert!(h.verify("correct horse battery", &phc).unwrap());
        assert!(!h.verify("correct horse batterz", &phc).unwrap());
    }

    #[test]
    fn the_defaults_are_the_owasp_parameters() {
        let h = PasswordHasher::new(PasswordConfig::default()).unwrap();
        let phc = h.hash("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    }

    #[test]
    fn hashes_made_with_other_parameters_still_verify() {
        let old = hasher().hash("correct horse battery").unwrap();
        let stronger = PasswordHasher::new(PasswordConfig {
            memory_kib: 64,
            iterations: 2,
            ..PasswordConfig::insecure_fast_for_tests()
        })
        .unwrap();
        assert!(stronger.verify("correct horse battery", &old).unwrap());
    }

    #[test]
    fn the_policy_names_the_rule_broken() {
        let h = hasher();
        for (password, reason) in [
            ("short", "must be at least 8 characters"),
            ("aaaaaaaaaa", "must not repeat a single character"),
            ("Ada.Lovelace", "must not be the username"),
        ] {
            match h.check_policy(password, "ada.lovelace") {
                Err(AuthError::WeakPassword { reason: got }) => assert_eq!(got, reason),
                other => panic!("{password:?} gave {other:?}"),
            }
        }
        assert!(h.check_policy(&"x1".repeat(600), "ada").is_err());
        assert!(h.check_policy("correct horse", "ada").is_ok());
    }

    #[test]
    fn a_corrupt_stored_hash_is_an_error_not_a_mismatch() {
        let err = hasher().verify("whatever1", "not a phc string").unwrap_err();
        assert_eq!(err.code(), "internal");
    }

    #[test]
    fn impossible_parameters_are_a_config_error() {
        let err =
            PasswordHasher::new(PasswordConfig { memory_kib: 1, ..PasswordConfig::default() })
                .unwrap_err();
        assert!(matches!(err, AuthError::Config { .. }), "{err}");
    }
}
