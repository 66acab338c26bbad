//! The auth key file: the Ed25519 seed that signs access tokens and the secret that derives
//! refresh-token successors, created once and kept, so tokens and sessions survive restarts and
//! every process of one platform agrees on them; and the token signing keys made from it.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use iaas_auth::{AuthConfig, KeySet, SigningKey, TokenIssuer};
use iaas_core::SystemClock;

use crate::config::Config;
use crate::error::{KeyFileError, StartError};

/// The key material.
pub(crate) struct AuthKeys {
    pub(crate) signing_seed: [u8; 32],
    pub(crate) refresh_secret: [u8; 32],
}

/// Bytes in the auth key file: a 32-byte Ed25519 seed, then a 32-byte refresh secret.
const AUTH_KEY_FILE_LEN: usize = 64;

/// Reads the auth key file, creating it (mode 0600) on the first start.
pub(crate) fn load_or_create(path: &Path) -> Result<AuthKeys, KeyFileError> {
    let lost = "every token and session becomes invalid";
    let bytes = read_or_create(path, AUTH_KEY_FILE_LEN, lost)?;
    let (seed, secret) = bytes.split_at(32);
    let mut keys = AuthKeys { signing_seed: [0; 32], refresh_secret: [0; 32] };
    keys.signing_seed.copy_from_slice(seed);
    keys.refresh_secret.copy_from_slice(secret);
    Ok(keys)
}

/// The `len` random bytes of the key file at `path`, written (mode 0600, synced) on the first
/// start; a file of another length is [`KeyFileError::Corrupt`], naming what a new one would
/// make unreadable (`lost`).
pub(crate) fn read_or_create(
    path: &Path,
    len: usize,
    lost: &'static str,
) -> Result<Vec<u8>, KeyFileError> {
    let shown = path.display().to_string();
    let io = |source| KeyFileError::Io { path: shown.clone(), source };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let mut fresh = vec![0u8; len];
            getrandom::getrandom(&mut fresh).map_err(|e| KeyFileError::Random(e.to_string()))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).map_err(io)?;
            file.write_all(&fresh).map_err(io)?;
            file.sync_all().map_err(io)?;
            tracing::info!(path = %shown, "created a new key file");
            fresh
        }
        Err(err) => return Err(io(err)),
    };
    if bytes.len() != len {
        return Err(KeyFileError::Corrupt { path: shown, len: bytes.len(), expected: len, lost });
    }
    Ok(bytes)
}

/// The `kid` of the platform's token signing key.
const SIGNING_KEY_ID: &str = "platform-1";

/// The token signing keys from the auth key file (created on the first start) and the refresh
/// secret, as the auth service and every token-checking service need them.
pub(crate) fn signing_keys(config: &Config) -> Result<(KeySet, [u8; 32]), StartError> {
    let keys = load_or_create(&config.auth_key_path())?;
    let signing = SigningKey::ed25519_from_seed(SIGNING_KEY_ID, &keys.signing_seed)
        .map_err(StartError::Auth)?;
    Ok((KeySet::new(signing), keys.refresh_secret))
}

/// A signer and verifier of the platform's access tokens, from the auth key file (what the
/// auth service holds; services that only verify use `verify_keys`).
pub fn token_issuer(config: &Config) -> Result<TokenIssuer, StartError> {
    let (keys, _) = signing_keys(config)?;
    Ok(TokenIssuer::new(keys, AuthConfig::default().tokens, Arc::new(SystemClock)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_created_once_and_then_reused() {
        let dir = std::env::temp_dir().join(format!("iaas-keys-{}", iaas_core::EventId::new_v7()));
        let path = dir.join("auth.key");
        let first = load_or_create(&path).unwrap();
        let second = load_or_create(&path).unwrap();
        assert_eq!(first.signing_seed, second.signing_seed);
        assert_eq!(first.refresh_secret, second.refresh_secret);
        assert_ne!(first.signing_seed, first.refresh_secret);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(load_or_create(&path), Err(KeyFileError::Corrupt { len: 5, .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
