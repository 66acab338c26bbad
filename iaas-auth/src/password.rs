//! Password policy and argon2id hashing.
//!
//! Defaults follow the OWASP Password Storage Cheat Sheet for argon2id: m = 19 MiB
//! (19,456 KiB), t = 2 iterations, p = 1 lane. Hashes are PHC strings that carry their own
//! parameters, so raising the cost later still verifies old hashes.
//!
//! Verification compares digests in constant time (the `password-hash` crate's `Output`), and a
//! login for an unknown user verifies against a dummy hash made with the same parameters, so the
//! response time does not tell which usernames exist.
//!
//! argon2's working memory comes from a [`Scratch`] the caller may keep: a thread that hashes
//! over and over with one scratch takes the memory once. Allocating it afresh for every hash
//! leaves the allocator holding several hashes' worth per thread (glibc kept eight, 150 MiB,
//! on one thread in our measurements), which is why the service's hashing threads each keep
//! one.

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

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
    /// Hashes that may run at once (each takes `memory_kib`); 0, the default, sizes it from
    /// the memory available at start (see [`HashingLimits::sized_for`](crate::HashingLimits)).
    pub max_concurrent_hashes: usize,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
            min_chars: 8,
            max_bytes: 1024,
            max_concurrent_hashes: 0,
        }
    }
}

impl PasswordConfig {
    /// The cheapest parameters argon2 accepts, for tests only: never use them in production.
    pub fn insecure_fast_for_tests() -> Self {
        Self { memory_kib: 8, iterations: 1, parallelism: 1, ..Self::default() }
    }
}

/// Reusable argon2 working memory (grown to the largest cost seen, never shrunk).
#[derive(Default)]
pub struct Scratch(Vec<Block>);

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scratch({} KiB)", self.0.len())
    }
}

impl Scratch {
    /// An empty scratch; the first hash sizes it.
    pub fn new() -> Self {
        Self::default()
    }

    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.0.len() < count {
            self.0.resize(count, Block::default());
        }
        &mut self.0[..count]
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

fn internal(operation: &'static str) -> impl FnOnce(argon2::password_hash::Error) -> AuthError {
    move |err| AuthError::internal(operation, err.to_string())
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
        hasher.dummy_hash = hasher.hash_unchecked(&hex::encode(random), &mut Scratch::new())?;
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
        self.hash_with(password, &mut Scratch::new())
    }

    /// [`PasswordHasher::hash`] in `scratch`'s memory.
    pub fn hash_with(&self, password: &str, scratch: &mut Scratch) -> Result<String> {
        if password.len() > self.config.max_bytes {
            return Err(AuthError::WeakPassword {
                reason: format!("must be at most {} bytes", self.config.max_bytes),
            });
        }
        self.hash_unchecked(password, scratch)
    }

    fn hash_unchecked(&self, password: &str, scratch: &mut Scratch) -> Result<String> {
        let mut salt = [0u8; 16];
        fill_random(&mut salt)?;
        let encoded =
            SaltString::encode_b64(&salt).map_err(internal("encoding a password salt"))?;
        let params = self.argon.params();
        let blocks = scratch.blocks(params.block_count());
        let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
            self.argon
                .hash_password_into_with_memory(password.as_bytes(), &salt, out, blocks)
                .map_err(Into::into)
        })
        .map_err(internal("hashing a password"))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(params).map_err(internal("hashing a password"))?,
            salt: Some(encoded.as_salt()),
            hash: Some(output),
        };
        Ok(phc.to_string())
    }

    /// Whether `password` matches the PHC string `phc` (constant-time comparison). An
    /// unparsable hash is an internal error, not a mismatch, so corrupt rows get noticed.
    pub fn verify(&self, password: &str, phc: &str) -> Result<bool> {
        self.verify_with(password, phc, &mut Scratch::new())
    }

    /// [`PasswordHasher::verify`] in `scratch`'s memory.
    pub fn verify_with(&self, password: &str, phc: &str, scratch: &mut Scratch) -> Result<bool> {
        if password.len() > self.config.max_bytes {
            // Still spend the time of one verification, so the length does not leak timing.
            self.verify_dummy_with(password, scratch);
            return Ok(false);
        }
        let parsing = "parsing a stored password hash";
        let parsed = PasswordHash::new(phc).map_err(internal(parsing))?;
        // The stored hash carries its own parameters: older, cheaper ones still verify.
        let algorithm = Algorithm::try_from(parsed.algorithm).map_err(internal(parsing))?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()
            .map_err(|err| AuthError::internal(parsing, err.to_string()))?
            .unwrap_or_default();
        let params = Params::try_from(&parsed).map_err(internal(parsing))?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Err(AuthError::internal(parsing, "no salt or no hash"));
        };
        let mut salt_bytes = [0u8; 64];
        let salt = salt.decode_b64(&mut salt_bytes).map_err(internal(parsing))?;
        let blocks = scratch.blocks(params.block_count());
        let argon = Argon2::new(algorithm, version, params);
        let computed = Output::init_with(expected.len(), |out| {
            argon
                .hash_password_into_with_memory(password.as_bytes(), salt, out, blocks)
                .map_err(Into::into)
        })
        .map_err(internal("verifying a password"))?;
        // `Output` compares in constant time.
        Ok(computed == expected)
    }

    /// Spends the time of one verification for a user that does not exist.
    pub fn verify_dummy(&self, password: &str) {
        self.verify_dummy_with(password, &mut Scratch::new());
    }

    /// [`PasswordHasher::verify_dummy`] in `scratch`'s memory.
    pub fn verify_dummy_with(&self, password: &str, scratch: &mut Scratch) {
        let truncated = &password[..password.floor_char_boundary(self.config.max_bytes)];
        // The outcome is meaningless by design: only the time spent matters.
        let _ = self.verify_with(truncated, &self.dummy_hash, scratch);
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
