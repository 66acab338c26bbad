//! The auth key file: the Ed25519 seed that signs access tokens and the secret that derives
//! refresh-token successors, created once and kept, so tokens and sessions survive restarts and
//! every process of one platform agrees on them.

use std::io::Write;
use std::path::Path;

/// Bytes in the file: a 32-byte Ed25519 seed, then a 32-byte refresh secret.
const KEY_FILE_LEN: usize = 64;

/// The key material.
pub(crate) struct AuthKeys {
    pub(crate) signing_seed: [u8; 32],
    pub(crate) refresh_secret: [u8; 32],
}

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing the file failed.
    #[error("auth key file {path}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but is not a key file.
    #[error(
        "auth key file {path} has {len} bytes, expected {KEY_FILE_LEN}; move it away to create a new one (every token and session becomes invalid)"
    )]
    Corrupt {
        /// The file.
        path: String,
        /// Its length.
        len: usize,
    },
    /// No randomness was available.
    #[error("no randomness for a new auth key: {0}")]
    Random(String),
}

/// Reads the key file, creating it (mode 0600) on the first start.
pub(crate) fn load_or_create(path: &Path) -> Result<AuthKeys, KeyFileError> {
    let shown = path.display().to_string();
    let io = |source| KeyFileError::Io { path: shown.clone(), source };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let mut fresh = [0u8; KEY_FILE_LEN];
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
            tracing::info!(path = %shown, "created a new auth key file");
            fresh.to_vec()
        }
        Err(err) => return Err(io(err)),
    };
    let (seed, secret) = bytes
        .split_at_checked(32)
        .filter(|(_, secret)| secret.len() == 32)
        .ok_or(KeyFileError::Corrupt { path: shown.clone(), len: bytes.len() })?;
    let mut keys = AuthKeys { signing_seed: [0; 32], refresh_secret: [0; 32] };
    keys.signing_seed.copy_from_slice(seed);
    keys.refresh_secret.copy_from_slice(secret);
    Ok(keys)
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
