//! Access tokens: short-lived JWTs signed with a pinned algorithm, verified without a call to
//! the auth service.
//!
//! Keys live in a [`KeySet`] by `kid`. Each key has exactly one algorithm, and a token is
//! accepted only when its header names a known `kid` *and* that key's algorithm: an `HS256`
//! token can never be checked against an `EdDSA` public key used as an HMAC secret (the classic
//! algorithm-confusion attack), and `alg: none` is refused before any key is looked at.
//!
//! Rotation: [`TokenIssuer::rotate`] makes a new key current and keeps the old one for
//! verification only until the last token it signed has expired (lifetime plus leeway); after
//! that its `kid` is unknown. [`TokenIssuer::jwks`] publishes the public halves of the
//! `EdDSA` keys so other services can verify tokens themselves.
//!
//! Expiry is checked here against [`Clock`] rather than by `jsonwebtoken` (which reads the
//! system clock), so tests move time instead of sleeping.
//!
//! **Signing** is the key's own (`src/keys.rs`: each [`SigningKey`] decodes its signing half
//! once, where `jsonwebtoken` would on every token); Ed25519 and HMAC are deterministic, so a
//! unit test here checks the output is byte for byte what `jsonwebtoken::encode` produces.
//! **Verifying** is the key's own too (the signature checked with the key decoded once, see
//! `src/keys.rs`), in the order and with the answers of `jsonwebtoken::decode`: the header
//! chooses a key of the same pinned algorithm, the signature is checked before the claims are
//! read at all, then the claims must parse with every required field and name this issuer and
//! audience. The tests in `src/token/against_jsonwebtoken.rs` hold it to `jsonwebtoken::decode`
//! on thousands of changed and re-signed tokens.
//!
//! **Repeated tokens** are answered from a bounded memo of tokens that passed verification
//! (`src/verify_cache.rs`, [`TokenConfig::verify_cache_capacity`]): a client sends the same
//! token with every request for its lifetime, and an Ed25519 check is dear curve arithmetic.
//! A hit compares the entire token string, then applies the time rules (`exp`, `nbf`, `iat`
//! on [`Clock`]) and the previous key's retirement again, exactly as a cold verification
//! would; only tokens that passed are kept, and [`TokenIssuer::rotate`] clears the memo. So
//! the set of accepted tokens is the same with the memo as without it.

use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use iaas_core::{Clock, UserId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{AuthError, Result, TokenRejection};
pub use crate::keys::{KeyAlgorithm, KeySet, MIN_HMAC_SECRET_BYTES, SigningKey};
use crate::verify_cache::VerifiedTokens;

/// Longest token the verifier looks at; anything longer is malformed (bounds parsing work).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Issuer, audience and lifetimes of access tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenConfig {
    /// The `iss` claim written and required (default `"iaas-auth"`).
    pub issuer: String,
    /// The `aud` claim written and required (default `"iaas"`).
    pub audience: String,
    /// How long an access token is valid (default 15 minutes).
    pub access_lifetime: Duration,
    /// Clock skew tolerated on `exp`, `nbf` and `iat` (default 30 seconds).
    pub leeway: Duration,
    /// Most verified tokens [`TokenIssuer::verify`] remembers, so a token presented again is
    /// not checked cryptographically again (default
    /// [`TokenConfig::DEFAULT_VERIFY_CACHE_CAPACITY`]; zero turns the memo off and every
    /// verification runs in full).
    ///
    /// It changes which tokens are accepted in no way: a hit must equal the whole token
    /// string, passed every check when it was stored, and has its expiry, not-before and
    /// issue time checked on the clock again, and its key's retirement after a rotation;
    /// failures are never stored, and a rotation clears the memo. An entry holds the token
    /// itself, its decoded claims and the map's slot (137 bytes, 1.1 to 2.3 slots an entry
    /// as the map grows by doubling): at most about 0.5 KB plus the token's length. A default
    /// token with two scopes has 428 bytes, so an entry takes under 1 KB and 10,000 entries
    /// under 10 MB. When full, expired entries go first, then arbitrary ones.
    pub verify_cache_capacity: usize,
}

impl TokenConfig {
    /// Default bound of the verified-token memo: 10,000 distinct live tokens, under 10 MB.
    pub const DEFAULT_VERIFY_CACHE_CAPACITY: usize = 10_000;
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            issuer: "iaas-auth".to_owned(),
            audience: "iaas".to_owned(),
            access_lifetime: Duration::minutes(15),
            leeway: Duration::seconds(30),
            verify_cache_capacity: Self::DEFAULT_VERIFY_CACHE_CAPACITY,
        }
    }
}

/// The claims of an access token, as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Who issued the token.
    pub iss: String,
    /// Who the token is for.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issue time, seconds since the epoch.
    pub iat: i64,
    /// Not valid before, seconds since the epoch.
    pub nbf: i64,
    /// Unique token id.
    pub jti: String,
    /// Granted scopes, space separated (RFC 8693 `scope`).
    pub scope: String,
    /// The session (login) the token was issued for, when it was: live connections end with
    /// it (OpenID Connect's `sid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// A verified access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    /// Whose token it is.
    pub user: UserId,
    /// The scopes it grants.
    pub scopes: Vec<String>,
    /// Its unique id.
    pub jti: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// The session (login) it was issued for, if any.
    pub session: Option<Uuid>,
}

impl AccessClaims {
    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// A signed access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The compact JWT.
    pub token: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}

/// The time claims of a verified token: what must be checked again whenever it is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TokenTimes {
    exp: i64,
    nbf: i64,
    iat: i64,
}

impl TokenTimes {
    /// The time rules of a verification at `now_s` (seconds since the epoch) with `leeway`
    /// seconds: the one place they are written, for cold verifications and memo hits alike.
    fn check(self, now_s: i64, leeway: i64) -> Result<(), TokenRejection> {
        if now_s >= self.exp.saturating_add(leeway) {
            return Err(TokenRejection::Expired);
        }
        if self.nbf > now_s.saturating_add(leeway) || self.iat > now_s.saturating_add(leeway) {
            return Err(TokenRejection::NotYetValid);
        }
        Ok(())
    }
}

/// A token that passed every check: what the verified-token memo keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verified {
    claims: AccessClaims,
    times: TokenTimes,
    /// When the previous key that verified it stops being accepted; `None` when the current
    /// key did (a rotation clears the memo).
    key_retires_at: Option<DateTime<Utc>>,
}

impl Verified {
    /// Whether the key that verified the token is still accepted at `now`.
    fn key_is_trusted(&self, now: DateTime<Utc>) -> bool {
        self.key_retires_at.is_none_or(|until| now < until)
    }

    /// Whether a verification at `now` would still accept the token; what eviction keeps.
    fn is_live(&self, now: DateTime<Utc>, leeway: i64) -> bool {
        self.key_is_trusted(now) && self.times.check(now.timestamp(), leeway).is_ok()
    }
}

/// Signs access tokens and verifies them; clones share their keys and their memo of verified
/// tokens, so a rotation is seen by every clone. Cloning only bumps reference counts (the
/// `AuthUser` extractor takes a clone per request).
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    keys: Arc<RwLock<KeySet>>,
    config: Arc<TokenConfig>,
    clock: Arc<dyn Clock>,
    /// Tokens that passed verification with the current key set (`verify_cache.rs`).
    verified: Arc<VerifiedTokens<Verified>>,
}

impl TokenIssuer {
    /// An issuer signing with `keys.current()`.
    pub fn new(keys: KeySet, config: TokenConfig, clock: Arc<dyn Clock>) -> Self {
        let verified = Arc::new(VerifiedTokens::new(config.verify_cache_capacity));
        Self { keys: Arc::new(RwLock::new(keys)), config: Arc::new(config), clock, verified }
    }

    /// The configuration in use.
    pub fn config(&self) -> &TokenConfig {
        &self.config
    }

    fn read_keys(&self) -> std::sync::RwLockReadGuard<'_, KeySet> {
        // A panic while holding the lock cannot leave the key set half-written (rotation
        // replaces fields whole), so a poisoned lock is still safe to read.
        self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes `new` the signing key. The old key keeps verifying until every token it signed has
    /// expired (now + lifetime + leeway), then its `kid` becomes unknown. Forgets every
    /// remembered verification: tokens are checked against the new key set again.
    pub fn rotate(&self, new: SigningKey) {
        let now = self.clock.now();
        let retire_at = now + self.config.access_lifetime + self.config.leeway;
        let mut keys = self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let old = std::mem::replace(&mut keys.current, new);
        keys.previous.retain(|(_, until)| now < *until);
        keys.previous.push((old, retire_at));
        // Inserts into the memo happen under the read lock (`verify_token`), so clearing it
        // under the write lock leaves no entry from the old key set, not even one whose
        // verification began before this rotation.
        self.verified.clear();
    }

    /// Replaces the whole key set (a verifier taking a newer JWKS document): tokens signed by
    /// a key no longer in `keys` stop verifying at once. Forgets every remembered
    /// verification, as [`TokenIssuer::rotate`] does.
    pub fn replace_keys(&self, keys: KeySet) {
        let mut current = self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = keys;
        self.verified.clear();
    }

    /// Whether this issuer can sign (its current key has a private part).
    pub fn can_sign(&self) -> bool {
        self.read_keys().current.signer.is_some()
    }

    /// Signs an access token for `user` with `scopes`, tied to no session.
    pub fn issue(&self, user: UserId, scopes: &[String]) -> Result<AccessToken> {
        self.issue_for(user, scopes, None)
    }

    /// Signs an access token for `user` with `scopes`, issued for the login `session`.
    pub fn issue_for(
        &self,
        user: UserId,
        scopes: &[String],
        session: Option<Uuid>,
    ) -> Result<AccessToken> {
        let now = self.clock.now();
        let expires_at = now + self.config.access_lifetime;
        let claims = Claims {
            sub: user.to_string(),
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            exp: expires_at.timestamp(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            jti: Uuid::now_v7().to_string(),
            scope: scopes.join(" "),
            sid: session.map(|s| s.to_string()),
        };
        self.sign_claims(&claims).map(|token| AccessToken { token, expires_at })
    }

    /// Signs arbitrary claims with the current key (tests build bad tokens with it).
    pub fn sign_claims(&self, claims: &Claims) -> Result<String> {
        let keys = self.read_keys();
        let key = &keys.current;
        let signer = key.signer.as_ref().ok_or_else(|| AuthError::Config {
            reason: format!("key {:?} is verify-only and cannot sign", key.kid),
        })?;
        let json = serde_json::to_vec(claims).map_err(|err| {
            AuthError::internal(format!("encoding access-token claims for key {:?}", key.kid), err)
        })?;
        Ok(signer.sign(&key.encoded_header, &json))
    }

    /// Verifies `token`: pinned algorithm, known `kid`, signature, `iss`, `aud`, `exp`, `nbf`.
    ///
    /// A token that passed before is answered from the memo
    /// ([`TokenConfig::verify_cache_capacity`]) after its time claims and its key's retirement
    /// are checked again: the answer is the one a full verification would give.
    pub fn verify(&self, token: &str) -> Result<AccessClaims> {
        self.verify_token(token).map_err(AuthError::InvalidToken)
    }

    fn verify_token(&self, token: &str) -> Result<AccessClaims, TokenRejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRejection::Malformed);
        }
        let now = self.clock.now();
        let leeway = self.config.leeway.num_seconds();
        // A remembered token whose previous key has retired since gets the full verification,
        // which answers for it exactly (unknown key, or another key of the same `kid`).
        if let Some(hit) = self.verified.get(token)
            && hit.key_is_trusted(now)
        {
            hit.times.check(now.timestamp(), leeway)?;
            return Ok(hit.claims);
        }
        let keys = self.read_keys();
        let verified = verify_with(&keys, &self.config, now, token)?;
        if self.verified.is_enabled() {
            // Still under the key set's read lock: see `rotate`.
            self.verified.insert(token, verified.clone(), |entry| entry.is_live(now, leeway));
        }
        drop(keys);
        Ok(verified.claims)
    }

    /// The JWKS document (`{"keys": [...]}`) of the `EdDSA` keys still accepted.
    pub fn jwks(&self) -> serde_json::Value {
        let now = self.clock.now();
        let keys = self.read_keys();
        let live = std::iter::once(&keys.current)
            .chain(keys.previous.iter().filter(|(_, until)| now < *until).map(|(k, _)| k));
        let jwks: Vec<serde_json::Value> = live
            .filter_map(|key| {
                key.public_x.as_ref().map(|x| {
                    serde_json::json!({
                        "kty": "OKP", "crv": "Ed25519", "x": x, "kid": key.kid,
                        "alg": "EdDSA", "use": "sig",
                    })
                })
            })
            .collect();
        serde_json::json!({ "keys": jwks })
    }
}

fn verify_with(
    keys: &KeySet,
    config: &TokenConfig,
    now: DateTime<Utc>,
    token: &str,
) -> Result<Verified, TokenRejection> {
    let (claims, key_retires_at) = read_signed(keys, config, now, token)?;
    accept(claims, key_retires_at, config, now)
}

/// The claims of `token` once its header named a key of the right algorithm, that key's
/// signature matched, and the claims parsed and name this issuer and audience; with the
/// retirement of the key when it is a previous one.
fn read_signed(
    keys: &KeySet,
    config: &TokenConfig,
    now: DateTime<Utc>,
    token: &str,
) -> Result<(Claims, Option<DateTime<Utc>>), TokenRejection> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenRejection::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenRejection::Malformed);
    };
    // What the signature covers: `header.payload` exactly as sent.
    let signed = &token.as_bytes()[..header.len() + 1 + payload.len()];
    let (key, key_retires_at) = match keys.find_by_header(header, now) {
        // The header a key of this set writes (every token this platform issues): its key
        // is known without reading it.
        Some(found) => found,
        None => find_key(keys, header, now)?,
    };
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenRejection::Malformed)?;
    if !key.verifier.verifies(signed, &signature) {
        return Err(TokenRejection::BadSignature);
    }
    // Only a signed payload is read. Every claim of `Claims` but `sid` is required (so `exp`,
    // `nbf`, `aud`, `iss` and `sub` too); a missing or mistyped one, or a payload that is not
    // JSON, is a missing claim.
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenRejection::Malformed)?;
    let claims: Claims =
        serde_json::from_slice(&payload).map_err(|_| TokenRejection::MissingClaim)?;
    // Times are seconds since the epoch: a negative one is no time at all (`jsonwebtoken`
    // reads `exp` and `nbf` as unsigned numbers and finds them missing).
    if claims.exp < 0 || claims.nbf < 0 {
        return Err(TokenRejection::MissingClaim);
    }
    if claims.iss != config.issuer {
        return Err(TokenRejection::WrongIssuer);
    }
    if claims.aud != config.audience {
        return Err(TokenRejection::WrongAudience);
    }
    Ok((claims, key_retires_at))
}

/// The key an `encoded` header names, read from it: so that `alg: none` gets its own answer,
/// and the key is chosen by `kid` before any crypto runs. Then the header must be a JOSE
/// header as `jsonwebtoken` reads one (registered members of the right types, none twice);
/// beyond `alg` and `kid` its members are not interpreted.
fn find_key<'k>(
    keys: &'k KeySet,
    encoded: &str,
    now: DateTime<Utc>,
) -> Result<(&'k SigningKey, Option<DateTime<Utc>>), TokenRejection> {
    let json = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| TokenRejection::Malformed)?;
    let header: serde_json::Value =
        serde_json::from_slice(&json).map_err(|_| TokenRejection::Malformed)?;
    let alg = header.get("alg").and_then(|a| a.as_str()).ok_or(TokenRejection::Malformed)?;
    if alg != KeyAlgorithm::EdDsa.header_name() && alg != KeyAlgorithm::Hs256.header_name() {
        return Err(TokenRejection::AlgorithmNotAllowed);
    }
    let kid = header.get("kid").and_then(|k| k.as_str()).ok_or(TokenRejection::UnknownKey)?;
    let found = keys.find(kid, now).ok_or(TokenRejection::UnknownKey)?;
    if alg != found.0.algorithm.header_name() {
        return Err(TokenRejection::AlgorithmMismatch);
    }
    // `jsonwebtoken` answers a header it cannot read so (a JSON error), before the signature.
    serde_json::from_slice::<jsonwebtoken::Header>(&json)
        .map_err(|_| TokenRejection::MissingClaim)?;
    Ok(found)
}

/// The time rules on `now`, then the claims in the form services use.
fn accept(
    claims: Claims,
    key_retires_at: Option<DateTime<Utc>>,
    config: &TokenConfig,
    now: DateTime<Utc>,
) -> Result<Verified, TokenRejection> {
    let times = TokenTimes { exp: claims.exp, nbf: claims.nbf, iat: claims.iat };
    times.check(now.timestamp(), config.leeway.num_seconds())?;
    let user = claims.sub.parse::<UserId>().map_err(|_| TokenRejection::MissingClaim)?;
    let expires_at = DateTime::from_timestamp(claims.exp, 0).ok_or(TokenRejection::MissingClaim)?;
    let claims = AccessClaims {
        user,
        scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
        jti: claims.jti,
        expires_at,
        // A `sid` that is not a session id is a token this issuer never made.
        session: claims
            .sid
            .map(|sid| sid.parse::<Uuid>())
            .transpose()
            .map_err(|_| TokenRejection::MissingClaim)?,
    };
    Ok(Verified { claims, times, key_retires_at })
}

#[cfg(test)]
mod against_jsonwebtoken;

#[cfg(test)]
mod tests {
    use super::*;
    use iaas_core::ManualClock;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    /// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410): 16 bytes before the 32-byte seed.
    const ED25519_PKCS8_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];

    fn start() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn ed_issuer(clock: &Arc<ManualClock>) -> TokenIssuer {
        let key = SigningKey::ed25519_from_seed("ed-1", &[7; 32]).unwrap();
        TokenIssuer::new(KeySet::new(key), TokenConfig::default(), clock.clone())
    }

    fn b64(json: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(json.to_string())
    }

    fn claims(clock: &ManualClock) -> Claims {
        let now = clock.now().timestamp();
        Claims {
            sub: UserId::new_random().to_string(),
            iss: "iaas-auth".into(),
            aud: "iaas".into(),
            exp: now + 900,
            iat: now,
            nbf: now,
            jti: "j".into(),
            scope: "instances:read instances:write".into(),
            sid: None,
        }
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let clock = Arc::new(ManualClock::new(start()));
        let issuer = ed_issuer(&clock);
        let user = UserId::new_random();
        let token = issuer.issue(user, &["instances:read".into()]).unwrap();
        assert_eq!(token.expires_at, start() + Duration::minutes(15));
        let verified = issuer.verify(&token.token).unwrap();
        assert_eq!(verified.user, user);
        assert!(verified.has_scope("instances:read"));
        assert!(!verified.has_scope("instances:write"));
    }

    #[test]
    fn a_verifier_from_the_jwks_checks_tokens_cannot_sign_and_follows_rotation() {
        let clock = Arc::new(ManualClock::new(start()));
        let signer = ed_issuer(&clock);
        let verifier = TokenIssuer::new(
            KeySet::from_jwks(&signer.jwks()).unwrap(),
            TokenConfig::default(),
            clock,
        );
        assert!(signer.can_sign() && !verifier.can_sign());
        let user = UserId::new_random();
        let token = signer.issue(user, &["instances:read".into()]).unwrap().token;
        assert_eq!(verifier.verify(&token).unwrap().user, user);
        let refused = verifier.issue(user, &["admin".into()]).unwrap_err();
        assert!(matches!(refused, AuthError::Config { .. }), "{refused}");

        // The signer rotates: the new document lists both keys, the verifier takes it.
        signer.rotate(SigningKey::ed25519_from_seed("ed-2", &[8; 32]).unwrap());
        let newer = signer.issue(user, &[]).unwrap().token;
        assert_eq!(verifier.verify(&newer).unwrap_err().code(), "token_unknown_key");
        verifier.replace_keys(KeySet::from_jwks(&signer.jwks()).unwrap());
        assert_eq!(verifier.read_keys().kids(), ["ed-2", "ed-1"]);
        verifier.verify(&newer).unwrap();
        verifier.verify(&token).unwrap();
        // A document without the old key ends it.
        let only_new = serde_json::json!({"keys": [signer.jwks()["keys"][0].clone()]});
        verifier.replace_keys(KeySet::from_jwks(&only_new).unwrap());
        assert_eq!(verifier.verify(&token).unwrap_err().code(), "token_unknown_key");
    }

    #[test]
    fn a_jwks_with_a_private_part_or_no_key_is_refused() {
        let clock = Arc::new(ManualClock::new(start()));
        let mut document = ed_issuer(&clock).jwks();
        document["keys"][0]["d"] = serde_json::json!("c2VjcmV0");
        for (bad, why) in [
            (document, "private part"),
            (serde_json::json!({"keys": []}), "no Ed25519 key"),
            (
                serde_json::json!({"keys": [{"kty": "RSA", "kid": "r", "n": "x", "e": "AQAB"}]}),
                "no Ed25519 key",
            ),
            (
                serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": "c2hvcnQ"}]}),
                "bytes",
            ),
            (
                // The identity point: one fixed signature would verify any token under it.
                serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k",
                    "x": "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}),
                "weak key",
            ),
            (serde_json::json!([1, 2]), "keys"),
        ] {
            let err = KeySet::from_jwks(&bad).unwrap_err();
            assert!(
                err.to_string().contains(why) || format!("{err:?}").contains(why),
                "{bad}: {err:?}"
            );
        }
    }

    /// The library-level bad-input table: each forged or stale token gets its own rejection.
    #[test]
    fn bad_tokens_are_rejected_for_the_right_reason() {
        let clock = Arc::new(ManualClock::new(start()));
        let issuer = ed_issuer(&clock);
        let good = issuer.sign_claims(&claims(&clock)).unwrap();
        let [header, payload, signature]: [&str; 3] =
            good.split('.').collect::<Vec<_>>().try_into().unwrap();

        // alg none, with and without a signature.
        let none_header = b64(&serde_json::json!({"alg": "none", "kid": "ed-1"}));
        let alg_none = format!("{none_header}.{payload}.");
        // HS256 signed with the Ed25519 *public* key bytes as the secret: the confusion attack.
        let public =
            URL_SAFE_NO_PAD.decode(issuer.jwks()["keys"][0]["x"].as_str().unwrap()).unwrap();
        let mut hs_header = Header::new(Algorithm::HS256);
        hs_header.kid = Some("ed-1".into());
        let confused =
            jsonwebtoken::encode(&hs_header, &claims(&clock), &EncodingKey::from_secret(&public))
                .unwrap();
        // Unknown kid.
        let other = SigningKey::ed25519_from_seed("ed-9", &[9; 32]).unwrap();
        let unknown_kid =
            TokenIssuer::new(KeySet::new(other), TokenConfig::default(), clock.clone())
                .sign_claims(&claims(&clock))
                .unwrap();
        // Tampered payload: more scopes, original signature.
        let mut elevated = claims(&clock);
        elevated.scope = "admin".into();
        let tampered = format!(
            "{header}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&elevated).unwrap())
        );
        let with = |f: &dyn Fn(&mut Claims)| {
            let mut c = claims(&clock);
            f(&mut c);
            issuer.sign_claims(&c).unwrap()
        };
        let expired = with(&|c| c.exp = c.iat - 3600);
        let not_yet = with(&|c| c.nbf = c.iat + 3600);
        let wrong_aud = with(&|c| c.aud = "someone-else".into());
        let wrong_iss = with(&|c| c.iss = "evil".into());
        let garbage_header = format!("not-base64!.{payload}.{signature}");
        let json_header = format!("{}.{payload}.{signature}", URL_SAFE_NO_PAD.encode("[1,2]"));
        let rs256 = format!(
            "{}.{payload}.{signature}",
            b64(&serde_json::json!({"alg": "RS256", "kid": "ed-1"}))
        );
        let no_kid = format!("{}.{payload}.{signature}", b64(&serde_json::json!({"alg": "EdDSA"})));

        let table: Vec<(&str, String, TokenRejection)> = vec![
            ("alg none", alg_none, TokenRejection::AlgorithmNotAllowed),
            ("alg RS256", rs256, TokenRejection::AlgorithmNotAllowed),
            ("HS256 with the EdDSA public key", confused, TokenRejection::AlgorithmMismatch),
            ("unknown kid", unknown_kid, TokenRejection::UnknownKey),
            ("no kid", no_kid, TokenRejection::UnknownKey),
            ("tampered payload", tampered, TokenRejection::BadSignature),
            ("expired", expired, TokenRejection::Expired),
            ("not yet valid", not_yet, TokenRejection::NotYetValid),
            ("wrong aud", wrong_aud, TokenRejection::WrongAudience),
            ("wrong iss", wrong_iss, TokenRejection::WrongIssuer),
            ("header not base64", garbage_header, TokenRejection::Malformed),
            ("header not an object", json_header, TokenRejection::Malformed),
            ("two parts", format!("{header}.{payload}"), TokenRejection::Malformed),
            ("empty", String::new(), TokenRejection::Malformed),
            ("huge", "a".repeat(MAX_TOKEN_BYTES + 1), TokenRejection::Malformed),
        ];
        for (case, token, want) in table {
            match issuer.verify(&token) {
                Err(AuthError::InvalidToken(got)) => assert_eq!(got, want, "{case}"),
                other => panic!("{case}: {other:?}"),
            }
        }
        assert!(issuer.verify(&good).is_ok(), "the untouched token still verifies");
    }

    /// Our signing path must produce exactly what `jsonwebtoken::encode` produces (both
    /// algorithms are deterministic), so tokens stay standard JWTs any library verifies.
    #[test]
    fn signed_tokens_are_byte_identical_to_jsonwebtoken_encode() {
        let clock = Arc::new(ManualClock::new(start()));
        let claims = claims(&clock);
        let seed = [7; 32];
        let mut der = ED25519_PKCS8_PREFIX.to_vec();
        der.extend_from_slice(&seed);
        let secret = [1; 32];
        let cases = [
            (
                "ed-1",
                Algorithm::EdDSA,
                SigningKey::ed25519_from_seed("ed-1", &seed).unwrap(),
                EncodingKey::from_ed_der(&der),
            ),
            (
                "hs-1",
                Algorithm::HS256,
                SigningKey::hs256("hs-1", &secret).unwrap(),
                EncodingKey::from_secret(&secret),
            ),
        ];
        for (kid, alg, key, reference_key) in cases {
            let ours = TokenIssuer::new(KeySet::new(key), TokenConfig::default(), clock.clone())
                .sign_claims(&claims)
                .unwrap();
            let mut header = Header::new(alg);
            header.kid = Some(kid.into());
            let reference = jsonwebtoken::encode(&header, &claims, &reference_key).unwrap();
            assert_eq!(ours, reference, "{kid}");
        }
    }

    #[test]
    fn an_hs256_key_rejects_an_eddsa_header() {
        let clock = Arc::new(ManualClock::new(start()));
        let hs = SigningKey::hs256("hs-1", &[1; 32]).unwrap();
        let issuer = TokenIssuer::new(KeySet::new(hs), TokenConfig::default(), clock);
        let token = issuer.issue(UserId::new_random(), &[]).unwrap().token;
        assert!(issuer.verify(&token).is_ok());
        let payload = token.split('.').nth(1).unwrap();
        let forged =
            format!("{}.{payload}.AAAA", b64(&serde_json::json!({"alg": "EdDSA", "kid": "hs-1"})));
        assert!(matches!(
            issuer.verify(&forged),
            Err(AuthError::InvalidToken(TokenRejection::AlgorithmMismatch))
        ));
    }

    #[test]
    fn expiry_follows_the_clock_with_leeway() {
        let clock = Arc::new(ManualClock::new(start()));
        let issuer = ed_issuer(&clock);
        let token = issuer.issue(UserId::new_random(), &[]).unwrap().token;
        clock.advance(Duration::minutes(15) + Duration::seconds(29));
        assert!(issuer.verify(&token).is_ok(), "inside the leeway");
        clock.advance(Duration::seconds(1));
        assert!(matches!(
            issuer.verify(&token),
            Err(AuthError::InvalidToken(TokenRejection::Expired))
        ));
    }

    #[test]
    fn a_rotated_key_verifies_until_its_tokens_expire() {
        let clock = Arc::new(ManualClock::new(start()));
        let issuer = ed_issuer(&clock);
        let old_token = issuer.issue(UserId::new_random(), &[]).unwrap().token;
        issuer.rotate(SigningKey::ed25519_from_seed("ed-2", &[8; 32]).unwrap());
        let new_token = issuer.issue(UserId::new_random(), &[]).unwrap().token;
        let header = jsonwebtoken::decode_header(&new_token).unwrap();
        assert_eq!(header.kid.as_deref(), Some("ed-2"));
        assert!(issuer.verify(&old_token).is_ok(), "previous key still accepted");
        assert_eq!(issuer.jwks()["keys"].as_array().unwrap().len(), 2);

        clock.advance(Duration::minutes(16));
        assert!(matches!(
            issuer.verify(&old_token),
            Err(AuthError::InvalidToken(TokenRejection::UnknownKey))
        ));
        assert_eq!(issuer.jwks()["keys"].as_array().unwrap().len(), 1);
        assert_eq!(issuer.jwks()["keys"][0]["kid"], "ed-2");
    }

    #[test]
    fn jwks_publishes_only_public_eddsa_keys() {
        let clock = Arc::new(ManualClock::new(start()));
        let issuer = ed_issuer(&clock);
        let jwks = issuer.jwks();
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert_eq!(key["alg"], "EdDSA");
        assert_eq!(URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap().len(), 32);
        assert!(key.get("d").is_none(), "no private part");

        let hs = SigningKey::hs256("hs-1", &[1; 32]).unwrap();
        let hs_issuer = TokenIssuer::new(KeySet::new(hs), TokenConfig::default(), clock);
        assert_eq!(hs_issuer.jwks(), serde_json::json!({"keys": []}));
    }

    #[test]
    fn a_short_hmac_secret_is_refused() {
        assert!(matches!(SigningKey::hs256("k", &[1; 16]), Err(AuthError::Config { .. })));
    }

    #[test]
    fn a_verify_only_key_from_the_jwks_checks_tokens_but_cannot_sign() {
        let clock = Arc::new(ManualClock::new(start()));
        let issuer = ed_issuer(&clock);
        let token = issuer.issue(UserId::new_random(), &[]).unwrap().token;
        let x = issuer.jwks()["keys"][0]["x"].as_str().unwrap().to_owned();
        let public = SigningKey::ed25519_public("ed-1", &x).unwrap();
        let verifier = TokenIssuer::new(KeySet::new(public), TokenConfig::default(), clock);
        assert!(verifier.verify(&token).is_ok());
        assert!(matches!(verifier.issue(UserId::new_random(), &[]), Err(AuthError::Config { .. })));
        assert!(SigningKey::ed25519_public("bad", "AAAA").is_err());
    }

    fn rejection(issuer: &TokenIssuer, token: &str) -> TokenRejection {
        match issuer.verify(token) {
            Err(AuthError::InvalidToken(rejection)) => rejection,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn memo_issuer(clock: &Arc<ManualClock>, capacity: usize) -> TokenIssuer {
        let key = SigningKey::ed25519_from_seed("ed-1", &[7; 32]).unwrap();
        let config = TokenConfig { verify_cache_capacity: capacity, ..TokenConfig::default() };
        TokenIssuer::new(KeySet::new(key), config, clock.clone())
    }

    #[test]
    fn a_repeated_token_is_answered_from_the_memo_with_the_same_claims() {
        let clock = Arc::new(ManualClock::new(start()));
        let issuer = ed_issuer(&clock);
        assert_eq!(issuer.config().verify_cache_capacity, 10_000, "the documented default");
        let token = issuer.issue(UserId::new_random(), &["instances:read".into()]).unwrap().token;
        assert_eq!(issuer.verified.len(), 0);
        let cold = issuer.verify(&token).unwrap();
        assert_eq!(issuer.verified.len(), 1, "remembered after it passed");
        // A clone shares the memo (the extractor verifies through a clone per request).
        let per_request = issuer.clone();
        let hit = per_request.verify(&token).unwrap();
        assert_eq!(hit, cold);
        assert_eq!(issuer.verified.len(), 1);
        assert!(Arc::ptr_eq(&issuer.verified, &per_request.verified));
    }

    #[test]
    fn a_remembered_token_expires_on_the_clock_like_a_cold_one() {
        let clock = Arc::new(ManualClock::new(start()));
        let issuer = ed_issuer(&clock);
        let token = issuer.issue(UserId::new_random(), &[]).unwrap().token;
        issuer.verify(&token).unwrap();
        clock.advance(Duration::minutes(15) + Duration::seconds(29));
        assert!(issuer.verify(&token).is_ok(), "inside the leeway");
        assert_eq!(issuer.verified.len(), 1);
        clock.advance(Duration::seconds(1));
        assert_eq!(rejection(&issuer, &token), TokenRejection::Expired);
        // The same answer as a verifier that never saw the token.
        assert_eq!(rejection(&memo_issuer(&clock, 0), &token), TokenRejection::Expired);
    }

    #[test]
    fn a_remembered_token_is_not_valid_before_its_time_when_the_clock_goes_back() {
        let clock = Arc::new(ManualClock::new(start()));
        let issuer = ed_issuer(&clock);
        let token = issuer.issue(UserId::new_random(), &[]).unwrap().token;
        issuer.verify(&token).unwrap();
        clock.set(start() - Duration::seconds(31));
        assert_eq!(rejection(&issuer, &token), TokenRejection::NotYetValid);
        clock.set(start() - Duration::seconds(30));
        assert!(issuer.verify(&token).is_ok(), "inside the leeway");
    }

    #[test]
    fn rotation_clears_the_memo_and_a_retired_key_is_refused_even_when_remembered() {
        let clock = Arc::new(ManualClock::new(start()));
        let issuer = ed_issuer(&clock);
        // A token that outlives its key's retirement: only the retirement can refuse it.
        let mut long = claims(&clock);
        long.exp += 3600 * 24;
        let long_lived = issuer.sign_claims(&long).unwrap();
        let ordinary = issuer.issue(UserId::new_random(), &[]).unwrap().token;
        issuer.verify(&long_lived).unwrap();
        issuer.verify(&ordinary).unwrap();
        assert_eq!(issuer.verified.len(), 2);

        issuer.rotate(SigningKey::ed25519_from_seed("ed-2", &[8; 32]).unwrap());
        assert_eq!(issuer.verified.len(), 0, "a rotation forgets every verification");
        // Rotation keeps the old key for verification until its tokens expire: still accepted,
        // and remembered again with the key's retirement time.
        issuer.verify(&long_lived).unwrap();
        issuer.verify(&ordinary).unwrap();
        assert_eq!(issuer.verified.len(), 2);

        clock.advance(Duration::minutes(15) + Duration::seconds(30));
        assert_eq!(rejection(&issuer, &long_lived), TokenRejection::UnknownKey, "retired key");
        assert_eq!(rejection(&issuer, &ordinary), TokenRejection::UnknownKey);
        let fresh = issuer.issue(UserId::new_random(), &[]).unwrap().token;
        assert!(issuer.verify(&fresh).is_ok(), "the new key's tokens pass");
    }

    #[test]
    fn a_token_changed_in_one_byte_is_refused_while_the_original_is_remembered() {
        let clock = Arc::new(ManualClock::new(start()));
        for secret in [None, Some([1u8; 32])] {
            let issuer = match secret {
                None => ed_issuer(&clock),
                Some(secret) => TokenIssuer::new(
                    KeySet::new(SigningKey::hs256("hs-1", &secret).unwrap()),
                    TokenConfig::default(),
                    clock.clone(),
                ),
            };
            let token = issuer.issue(UserId::new_random(), &["admin".into()]).unwrap().token;
            let original = issuer.verify(&token).unwrap();
            let signature_at = token.rfind('.').unwrap() + 1;
            // One byte in the header, the payload and the signature; and one appended.
            let positions = [2, token.find('.').unwrap() + 5, signature_at + 3];
            let mut forged: Vec<String> = positions
                .iter()
                .map(|&at| {
                    let mut bytes = token.clone().into_bytes();
                    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
                    String::from_utf8(bytes).unwrap()
                })
                .collect();
            forged.push(format!("{token}A"));
            for bad in &forged {
                assert_ne!(bad, &token);
                assert!(issuer.verify(bad).is_err(), "{bad}");
            }
            assert_eq!(rejection(&issuer, &forged[2]), TokenRejection::BadSignature);
            assert_eq!(issuer.verified.len(), 1, "no failure is remembered");
            assert_eq!(issuer.verify(&token).unwrap(), original);
        }
    }

    #[test]
    fn failed_verifications_are_never_remembered() {
        let clock = Arc::new(ManualClock::new(start()));
        let issuer = ed_issuer(&clock);
        let expired = {
            let mut c = claims(&clock);
            c.exp = c.iat - 3600;
            issuer.sign_claims(&c).unwrap()
        };
        for _ in 0..3 {
            assert_eq!(rejection(&issuer, &expired), TokenRejection::Expired);
            assert_eq!(rejection(&issuer, "a.b.c"), TokenRejection::Malformed);
        }
        assert_eq!(issuer.verified.len(), 0);
    }

    #[test]
    fn the_memo_never_holds_more_than_its_capacity() {
        let clock = Arc::new(ManualClock::new(start()));
        let issuer = memo_issuer(&clock, 3);
        let tokens: Vec<(UserId, String)> = (0..10)
            .map(|_| {
                let user = UserId::new_random();
                (user, issuer.issue(user, &[]).unwrap().token)
            })
            .collect();
        for round in 0..2 {
            for (user, token) in &tokens {
                assert_eq!(issuer.verify(token).unwrap().user, *user, "round {round}");
                assert!(issuer.verified.len() <= 3, "{} entries", issuer.verified.len());
            }
        }
        assert!(issuer.verified.len() >= 1);
    }

    #[test]
    fn a_zero_capacity_turns_the_memo_off() {
        let clock = Arc::new(ManualClock::new(start()));
        let issuer = memo_issuer(&clock, 0);
        let token = issuer.issue(UserId::new_random(), &[]).unwrap().token;
        let first = issuer.verify(&token).unwrap();
        assert_eq!(issuer.verify(&token).unwrap(), first);
        assert_eq!(issuer.verified.len(), 0);
        assert!(!issuer.verified.is_enabled());
        clock.advance(Duration::minutes(16));
        assert_eq!(rejection(&issuer, &token), TokenRejection::Expired);
    }

    /// The memory figure in `TokenConfig::verify_cache_capacity`'s documentation: the map's
    /// slot, the claims' own allocations and the token's bytes.
    #[test]
    fn an_entry_costs_what_the_documentation_says() {
        let clock = Arc::new(ManualClock::new(start()));
        let issuer = ed_issuer(&clock);
        let scopes = ["instances:read".to_owned(), "instances:write".to_owned()];
        let token = issuer.issue(UserId::new_random(), &scopes).unwrap().token;
        let claims = issuer.verify(&token).unwrap();
        let slot = std::mem::size_of::<(Box<str>, Verified)>() + 1;
        let owned = claims.jti.len()
            + claims.scopes.capacity() * std::mem::size_of::<String>()
            + claims.scopes.iter().map(String::len).sum::<usize>();
        // A map at most 7/8 full and at least 7/16 full (it doubles): up to 2.3 slots an entry.
        let fixed = slot * 23 / 10 + owned;
        eprintln!("slot {slot} B, owned {owned} B, worst case {fixed} B + token {} B", token.len());
        assert!(fixed <= 512, "at most 0.5 KB plus the token: {fixed} bytes");
        assert!((400..=500).contains(&token.len()), "a default token: {} bytes", token.len());
    }
}
