//! Secrets sealed for keeping in the store: the credentials of an instance, which the platform
//! needs again when a provisioning resumes in another process.
//!
//! Sealed with ChaCha20-Poly1305 under a 32-byte key from the platform's configuration (every
//! process of one platform shares it, like the token signing key), a fresh random nonce per
//! seal, and the instance id as associated data: a sealed value copied onto another instance's
//! row does not open. The text kept is `v1.` and the URL-safe base64 of nonce and ciphertext,
//! so the store holds neither the secrets nor anything that tells them apart.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use iaas_core::{InstanceId, Secrets};

/// The version prefix of a sealed value.
const VERSION: &str = "v1.";
/// Bytes of a ChaCha20-Poly1305 nonce.
const NONCE_LEN: usize = 12;

/// Why secrets could not be sealed or opened. It never carries the secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// No randomness for a nonce.
    #[error("no randomness for sealing secrets: {0}")]
    Random(String),
    /// The secrets could not be encoded.
    #[error("encoding secrets for sealing: {0}")]
    Encoding(String),
    /// The value is not one this sealer made for this instance: another key, another instance,
    /// or altered.
    #[error(
        "the kept secrets of instance {instance} do not open with this key (another key, another instance, or altered)"
    )]
    Unreadable {
        /// The instance.
        instance: InstanceId,
    },
}

/// What sealed secrets are for, bound into the seal beside the instance id.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    /// Everything a provisioning needs, the tenant's password too (the instance id alone, as
    /// values sealed before purposes existed).
    Provisioning,
    /// The platform's own secrets, kept for the instance's life.
    Platform,
}

impl Purpose {
    fn associated_data(self, instance: InstanceId) -> Vec<u8> {
        let prefix: &[u8] = match self {
            Self::Provisioning => b"",
            Self::Platform => b"platform:",
        };
        [prefix, instance.as_uuid().as_bytes()].concat()
    }
}

/// Seals and opens the secrets of instances under one key.
#[derive(Clone)]
pub struct SecretSealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for SecretSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretSealer(..)")
    }
}

impl SecretSealer {
    /// A sealer under `key`.
    pub fn new(key: &[u8; 32]) -> Self {
        Self { cipher: ChaCha20Poly1305::new(&Key::from(*key)) }
    }

    /// `secrets` of `instance`, sealed.
    pub fn seal(&self, instance: InstanceId, secrets: &Secrets) -> Result<String, SealError> {
        self.seal_as(Purpose::Provisioning, instance, secrets)
    }

    /// The secrets of `instance` that `sealed` holds.
    pub fn open(&self, instance: InstanceId, sealed: &str) -> Result<Secrets, SealError> {
        self.open_as(Purpose::Provisioning, instance, sealed)
    }

    /// The platform's own `secrets` of `instance`, sealed apart: a value sealed with
    /// [`Self::seal`] (which may hold the tenant's password) does not open as these, nor the
    /// other way round.
    pub fn seal_platform(
        &self,
        instance: InstanceId,
        secrets: &Secrets,
    ) -> Result<String, SealError> {
        self.seal_as(Purpose::Platform, instance, secrets)
    }

    /// The platform's own secrets of `instance` that `sealed` holds (see
    /// [`Self::seal_platform`]).
    pub fn open_platform(&self, instance: InstanceId, sealed: &str) -> Result<Secrets, SealError> {
        self.open_as(Purpose::Platform, instance, sealed)
    }

    fn seal_as(
        &self,
        purpose: Purpose,
        instance: InstanceId,
        secrets: &Secrets,
    ) -> Result<String, SealError> {
        let plain: std::collections::BTreeMap<&str, &str> = secrets.iter().collect();
        let plain = serde_json::to_vec(&plain).map_err(|e| SealError::Encoding(e.to_string()))?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
        let aad = purpose.associated_data(instance);
        let payload = Payload { msg: &plain, aad: &aad };
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), payload)
            .map_err(|_| SealError::Unreadable { instance })?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(format!("{VERSION}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    fn open_as(
        &self,
        purpose: Purpose,
        instance: InstanceId,
        sealed: &str,
    ) -> Result<Secrets, SealError> {
        let unreadable = || SealError::Unreadable { instance };
        let bytes = sealed
            .strip_prefix(VERSION)
            .and_then(|text| URL_SAFE_NO_PAD.decode(text).ok())
            .filter(|bytes| bytes.len() > NONCE_LEN)
            .ok_or_else(unreadable)?;
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| unreadable())?;
        let aad = purpose.associated_data(instance);
        let payload = Payload { msg: ciphertext, aad: &aad };
        let plain = self.cipher.decrypt(&Nonce::from(nonce), payload).map_err(|_| unreadable())?;
        let map: std::collections::BTreeMap<String, String> =
            serde_json::from_slice(&plain).map_err(|_| unreadable())?;
        Ok(map.into_iter().fold(Secrets::new(), |secrets, (key, value)| secrets.with(key, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets::new().with("POSTGRES_USER", "app").with("POSTGRES_PASSWORD", "s3cr3t-pa55")
    }

    #[test]
    fn sealed_secrets_open_for_their_instance_under_their_key() {
        let sealer = SecretSealer::new(&[7; 32]);
        let instance = InstanceId::new_random();
        let sealed = sealer.seal(instance, &secrets()).unwrap();
        assert!(sealed.starts_with("v1."));
        assert!(!sealed.contains("s3cr3t"), "nothing of the secret shows");
        assert_eq!(sealer.open(instance, &sealed).unwrap(), secrets());
        assert_ne!(sealer.seal(instance, &secrets()).unwrap(), sealed, "a fresh nonce each time");
    }

    #[test]
    fn another_key_another_instance_or_a_changed_byte_do_not_open() {
        let sealer = SecretSealer::new(&[7; 32]);
        let instance = InstanceId::new_random();
        let sealed = sealer.seal(instance, &secrets()).unwrap();
        let unreadable = |result: Result<Secrets, SealError>| {
            matches!(result, Err(SealError::Unreadable { .. }))
        };
        assert!(unreadable(SecretSealer::new(&[8; 32]).open(instance, &sealed)));
        assert!(unreadable(sealer.open(InstanceId::new_random(), &sealed)));
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert!(unreadable(sealer.open(instance, &String::from_utf8(altered).unwrap())));
        assert!(unreadable(sealer.open(instance, "v1.")));
        assert!(unreadable(sealer.open(instance, "plain")));
        // Sealed for one purpose, it does not open for the other.
        assert!(unreadable(sealer.open_platform(instance, &sealed)));
        let platform = sealer.seal_platform(instance, &secrets()).unwrap();
        assert!(unreadable(sealer.open(instance, &platform)));
        assert_eq!(sealer.open_platform(instance, &platform).unwrap(), secrets());
        let error = sealer.open(InstanceId::new_random(), &sealed).unwrap_err().to_string();
        assert!(!error.contains("s3cr3t"), "{error}");
    }
}
