//! The keys access tokens are signed and verified with.
//!
//! Keys live in a [`KeySet`] by `kid`. Each key has exactly one algorithm, and a token is
//! accepted only when its header names a known `kid` *and* that key's algorithm (see
//! `crate::token`): an `HS256` token can never be checked against an `EdDSA` public key used
//! as an HMAC secret (the classic algorithm-confusion attack).
//!
//! A [`SigningKey`] decodes its signing half once: `jsonwebtoken` 11 rebuilds an Ed25519
//! signing key from its PKCS#8 bytes on every `encode` (deriving the public key, a scalar
//! multiplication that costs about as much as the signature itself; see
//! `docs/benchmarks.md`), and every refresh signs a token. A token is the compact JWS
//! `base64url(header) . base64url(claims) . base64url(signature)` with the header serialized by
//! `jsonwebtoken`'s own [`Header`] once per key.
//!
//! Its verifying half ([`Verifier`]) is decoded once too: `jsonwebtoken::decode` decompresses
//! the Ed25519 public key (a square root in the field) on every token, about a tenth of a
//! verification.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ed25519_dalek::Signer as _;
use ed25519_dalek::Verifier as _;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, Header};
use sha2::Sha256;

use crate::error::{AuthError, Result};
use crate::password::fill_random;

/// Shortest accepted HS256 secret (RFC 7518 §3.2: at least the hash size).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// The signature algorithms a key may be pinned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// Ed25519 signatures (the default): other services need only the public key.
    EdDsa,
    /// HMAC-SHA256 with a shared secret: every verifier can also sign.
    Hs256,
}

impl KeyAlgorithm {
    pub(crate) fn jwt(self) -> Algorithm {
        match self {
            KeyAlgorithm::EdDsa => Algorithm::EdDSA,
            KeyAlgorithm::Hs256 => Algorithm::HS256,
        }
    }

    pub(crate) fn header_name(self) -> &'static str {
        match self {
            KeyAlgorithm::EdDsa => "EdDSA",
            KeyAlgorithm::Hs256 => "HS256",
        }
    }
}

/// `base64url(header JSON)` of every token `kid` signs: `jsonwebtoken`'s [`Header`] for the
/// algorithm with the `kid`.
fn encoded_header(kid: &str, algorithm: KeyAlgorithm) -> Result<String> {
    let mut header = Header::new(algorithm.jwt());
    header.kid = Some(kid.to_owned());
    let json = serde_json::to_vec(&header).map_err(|err| AuthError::Config {
        reason: format!("key {kid:?}: encoding its token header: {err}"),
    })?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

/// The signing half of a key, decoded once: what `TokenIssuer::sign_claims` uses.
#[derive(Clone)]
pub(crate) enum Signer {
    /// Zeroized on drop (`ed25519-dalek`'s `zeroize` feature).
    Ed25519(Box<ed25519_dalek::SigningKey>),
    /// The HMAC state keyed once; cloned per token.
    Hs256(Hmac<Sha256>),
}

impl Signer {
    /// The compact JWS of `claims_json` under `encoded_header` (its key's
    /// `encoded_header`).
    pub(crate) fn sign(&self, encoded_header: &str, claims_json: &[u8]) -> String {
        // header + claims in base64url, two dots, and at most 86 characters of signature.
        let capacity = encoded_header.len() + claims_json.len().div_ceil(3) * 4 + 88;
        let mut token = String::with_capacity(capacity);
        token.push_str(encoded_header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims_json, &mut token);
        match self {
            Self::Ed25519(key) => {
                let signature = key.sign(token.as_bytes()).to_bytes();
                token.push('.');
                URL_SAFE_NO_PAD.encode_string(signature, &mut token);
            }
            Self::Hs256(keyed) => {
                let mut mac = keyed.clone();
                mac.update(token.as_bytes());
                let tag = mac.finalize().into_bytes();
                token.push('.');
                URL_SAFE_NO_PAD.encode_string(tag, &mut token);
            }
        }
        token
    }
}

/// The verifying half of a key, decoded once: what `TokenIssuer::verify` checks a signature
/// with, after the header named this key and its algorithm.
#[derive(Clone)]
pub(crate) enum Verifier {
    /// The public key, decompressed once.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// The HMAC state keyed once; cloned per token.
    Hs256(Hmac<Sha256>),
}

impl Verifier {
    /// Whether `signature` (its raw bytes) signs `message` (`header.payload` as sent).
    ///
    /// Ed25519 is `ed25519-dalek`'s `verify`, the check `jsonwebtoken` makes; HMAC tags are
    /// compared in constant time, and a tag of the wrong length never matches.
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Verifier::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify(message, &signature).is_ok()),
            Verifier::Hs256(keyed) => {
                let mut mac = keyed.clone();
                mac.update(message);
                mac.verify_slice(signature).is_ok()
            }
        }
    }
}

/// One key, pinned to one algorithm.
#[derive(Clone)]
pub struct SigningKey {
    pub(crate) kid: String,
    pub(crate) algorithm: KeyAlgorithm,
    /// `None` for a verify-only key (an Ed25519 public key).
    pub(crate) signer: Option<Signer>,
    pub(crate) verifier: Verifier,
    /// `base64url(header JSON)` of the tokens this key signs, whoever holds its signing half:
    /// a token carrying exactly this header names this key without being parsed.
    pub(crate) encoded_header: String,
    /// base64url Ed25519 public key, for the JWKS.
    pub(crate) public_x: Option<String>,
}

impl std::fmt::Debug for SigningKey {
    /// Key material is left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// An Ed25519 key from its 32-byte seed (the private key).
    pub fn ed25519_from_seed(kid: impl Into<String>, seed: &[u8; 32]) -> Result<Self> {
        let kid = kid.into();
        let signing = ed25519_dalek::SigningKey::from_bytes(seed);
        let verifying = signing.verifying_key();
        let x = URL_SAFE_NO_PAD.encode(verifying.as_bytes());
        Ok(Self {
            encoded_header: encoded_header(&kid, KeyAlgorithm::EdDsa)?,
            public_x: Some(x),
            kid,
            algorithm: KeyAlgorithm::EdDsa,
            signer: Some(Signer::Ed25519(Box::new(signing))),
            verifier: Verifier::Ed25519(verifying),
        })
    }

    /// A verify-only Ed25519 key from its base64url public key (the `x` of a JWKS entry):
    /// what a service needs to check tokens without being able to sign them.
    pub fn ed25519_public(kid: impl Into<String>, x: &str) -> Result<Self> {
        let kid = kid.into();
        let bytes = URL_SAFE_NO_PAD.decode(x).map_err(|err| AuthError::Config {
            reason: format!("Ed25519 public key {kid:?} is not base64url: {err}"),
        })?;
        let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| AuthError::Config {
            reason: format!("Ed25519 public key {kid:?} has {} bytes, not 32", bytes.len()),
        })?;
        let verifying =
            ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| AuthError::Config {
                reason: format!("Ed25519 public key {kid:?} is not a point on the curve"),
            })?;
        // A point of small order (the identity, say) lets one fixed signature verify any
        // message: no signer holds such a key, so none is accepted.
        if verifying.is_weak() {
            return Err(AuthError::Config {
                reason: format!(
                    "Ed25519 public key {kid:?} is a weak key (a point of small order)"
                ),
            });
        }
        Ok(Self {
            encoded_header: encoded_header(&kid, KeyAlgorithm::EdDsa)?,
            verifier: Verifier::Ed25519(verifying),
            public_x: Some(x.to_owned()),
            kid,
            algorithm: KeyAlgorithm::EdDsa,
            signer: None,
        })
    }

    /// A new random Ed25519 key.
    pub fn generate_ed25519(kid: impl Into<String>) -> Result<Self> {
        let mut seed = [0u8; 32];
        fill_random(&mut seed)?;
        Self::ed25519_from_seed(kid, &seed)
    }

    /// An HS256 key; the secret must be at least [`MIN_HMAC_SECRET_BYTES`] long.
    pub fn hs256(kid: impl Into<String>, secret: &[u8]) -> Result<Self> {
        let kid = kid.into();
        if secret.len() < MIN_HMAC_SECRET_BYTES {
            return Err(AuthError::Config {
                reason: format!(
                    "HS256 key {kid:?}: secret has {} bytes, at least {MIN_HMAC_SECRET_BYTES} required",
                    secret.len()
                ),
            });
        }
        let keyed = Hmac::<Sha256>::new_from_slice(secret)
            .map_err(|err| AuthError::Config { reason: format!("HS256 key {kid:?}: {err}") })?;
        Ok(Self {
            encoded_header: encoded_header(&kid, KeyAlgorithm::Hs256)?,
            signer: Some(Signer::Hs256(keyed.clone())),
            verifier: Verifier::Hs256(keyed),
            kid,
            algorithm: KeyAlgorithm::Hs256,
            public_x: None,
        })
    }

    /// The key id carried in the token header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm this key is pinned to.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }
}

/// The keys tokens are signed and verified with: one current key and previous keys that only
/// verify until their retirement time.
#[derive(Debug, Clone)]
pub struct KeySet {
    pub(crate) current: SigningKey,
    pub(crate) previous: Vec<(SigningKey, DateTime<Utc>)>,
}

impl KeySet {
    /// A key set with one key.
    pub fn new(current: SigningKey) -> Self {
        Self { current, previous: Vec::new() }
    }

    /// The key new tokens are signed with.
    pub fn current(&self) -> &SigningKey {
        &self.current
    }

    /// Verify-only keys from a JWKS document (`{"keys": [...]}`, what the auth service
    /// publishes at `/.well-known/jwks.json`): every `OKP`/`Ed25519` key with a `kid` and an
    /// `x`. A service holding only these can check tokens and cannot sign one. Other kinds of
    /// key are skipped; a document with a private member (`d`) is refused, so a signing key
    /// cannot end up in a verifier's configuration by mistake; a document with no usable key
    /// is refused.
    pub fn from_jwks(document: &serde_json::Value) -> Result<Self> {
        let refuse = |reason: String| AuthError::Config { reason: format!("JWKS: {reason}") };
        let entries = document
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| refuse("no \"keys\" array".to_owned()))?;
        let mut keys = Vec::new();
        for entry in entries {
            let field = |name: &str| entry.get(name).and_then(serde_json::Value::as_str);
            if entry.get("d").is_some() {
                return Err(refuse(format!(
                    "key {:?} carries its private part (d); publish public keys only",
                    field("kid").unwrap_or("?")
                )));
            }
            if field("kty") != Some("OKP") || field("crv") != Some("Ed25519") {
                continue;
            }
            let (Some(kid), Some(x)) = (field("kid"), field("x")) else {
                return Err(refuse("an Ed25519 key without kid or x".to_owned()));
            };
            keys.push(SigningKey::ed25519_public(kid, x)?);
        }
        let mut keys = keys.into_iter();
        let current = keys.next().ok_or_else(|| refuse("no Ed25519 key".to_owned()))?;
        // Every key listed is accepted until a later document leaves it out.
        let previous = keys.map(|key| (key, DateTime::<Utc>::MAX_UTC)).collect();
        Ok(Self { current, previous })
    }

    /// The `kid`s of every key in the set, current first.
    pub fn kids(&self) -> Vec<&str> {
        std::iter::once(self.current.kid.as_str())
            .chain(self.previous.iter().map(|(key, _)| key.kid.as_str()))
            .collect()
    }

    /// The key named `kid` that is accepted at `now`, with its retirement time (`None` for
    /// the current key, which stays until the next rotation).
    pub(crate) fn find(
        &self,
        kid: &str,
        now: DateTime<Utc>,
    ) -> Option<(&SigningKey, Option<DateTime<Utc>>)> {
        if self.current.kid == kid {
            return Some((&self.current, None));
        }
        self.previous
            .iter()
            .find(|(key, until)| key.kid == kid && now < *until)
            .map(|(key, until)| (key, Some(*until)))
    }

    /// The key whose own header is `encoded` byte for byte, when it is also the key
    /// [`KeySet::find`] chooses for that header's `kid`: what parsing the header and finding
    /// its `kid` would give, without the parse.
    pub(crate) fn find_by_header(
        &self,
        encoded: &str,
        now: DateTime<Utc>,
    ) -> Option<(&SigningKey, Option<DateTime<Utc>>)> {
        let named = std::iter::once(&self.current)
            .chain(self.previous.iter().map(|(key, _)| key))
            .find(|key| key.encoded_header == encoded)?;
        self.find(&named.kid, now).filter(|(found, _)| std::ptr::eq(*found, named))
    }
}
