//! Our verification held to `jsonwebtoken::decode`, the verification it replaced: the same
//! answer, claims or rejection, for genuine tokens, tokens changed anywhere, and tokens signed
//! by the right key over odd headers and claims (the only way past the signature check).

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ed25519_dalek::Signer as _;
use hmac::{Hmac, Mac};
use iaas_core::{Clock, ManualClock, UserId};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use proptest::prelude::*;
use serde_json::{Value, json};
use sha2::Sha256;

use super::{
    AccessClaims, Claims, KeyAlgorithm, KeySet, MAX_TOKEN_BYTES, SigningKey, TokenConfig,
    TokenIssuer, accept, verify_with,
};
use crate::error::TokenRejection;

const SEED: [u8; 32] = [7; 32];
const SECRET: &[u8] = b"a secret of at least thirty-two bytes";

/// The verification this crate used to run: its hand-read header, then `jsonwebtoken::decode`
/// with the key's algorithm, then the same time rules.
fn reference(
    keys: &KeySet,
    decoding: &DecodingKey,
    config: &TokenConfig,
    now: DateTime<Utc>,
    token: &str,
) -> Result<AccessClaims, TokenRejection> {
    if token.len() > MAX_TOKEN_BYTES || token.split('.').count() != 3 {
        return Err(TokenRejection::Malformed);
    }
    let header = token.split('.').next().unwrap_or_default();
    let header = URL_SAFE_NO_PAD.decode(header).map_err(|_| TokenRejection::Malformed)?;
    let header: Value = serde_json::from_slice(&header).map_err(|_| TokenRejection::Malformed)?;
    let alg = header.get("alg").and_then(Value::as_str).ok_or(TokenRejection::Malformed)?;
    if alg != "EdDSA" && alg != "HS256" {
        return Err(TokenRejection::AlgorithmNotAllowed);
    }
    let kid = header.get("kid").and_then(Value::as_str).ok_or(TokenRejection::UnknownKey)?;
    let (key, key_retires_at) = keys.find(kid, now).ok_or(TokenRejection::UnknownKey)?;
    if alg != key.algorithm.header_name() {
        return Err(TokenRejection::AlgorithmMismatch);
    }
    let mut validation = Validation::new(key.algorithm.jwt());
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = 0;
    validation.required_spec_claims =
        ["exp", "nbf", "aud", "iss", "sub"].into_iter().map(String::from).collect::<HashSet<_>>();
    validation.set_audience(&[&config.audience]);
    validation.set_issuer(&[&config.issuer]);
    let claims = jsonwebtoken::decode::<Claims>(token, decoding, &validation)
        .map_err(|err| match err.kind() {
            ErrorKind::InvalidSignature => TokenRejection::BadSignature,
            ErrorKind::InvalidAudience => TokenRejection::WrongAudience,
            ErrorKind::InvalidIssuer => TokenRejection::WrongIssuer,
            ErrorKind::InvalidAlgorithm => TokenRejection::AlgorithmMismatch,
            ErrorKind::MissingRequiredClaim(_)
            | ErrorKind::InvalidClaimFormat(_)
            | ErrorKind::Json(_) => TokenRejection::MissingClaim,
            _ => TokenRejection::Malformed,
        })?
        .claims;
    accept(claims, key_retires_at, config, now).map(|verified| verified.claims)
}

/// One key under test: its key set, what `jsonwebtoken` verifies with, and how to sign any
/// bytes with it.
struct Case {
    keys: KeySet,
    decoding: DecodingKey,
    algorithm: KeyAlgorithm,
}

impl Case {
    fn eddsa() -> Self {
        let key = SigningKey::ed25519_from_seed("ed-1", &SEED).unwrap();
        let x = ed25519_dalek::SigningKey::from_bytes(&SEED).verifying_key();
        let decoding = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(x)).unwrap();
        Self { keys: KeySet::new(key), decoding, algorithm: KeyAlgorithm::EdDsa }
    }

    fn hs256() -> Self {
        let key = SigningKey::hs256("hs-1", SECRET).unwrap();
        Self {
            keys: KeySet::new(key),
            decoding: DecodingKey::from_secret(SECRET),
            algorithm: KeyAlgorithm::Hs256,
        }
    }

    /// `header.payload.signature` with this key's signature over the first two, whatever
    /// they hold.
    fn sign(&self, header: &[u8], payload: &[u8]) -> String {
        self.sign_message(&format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        ))
    }

    /// `message.signature`, with this key's signature over `message` as it is.
    fn sign_message(&self, message: &str) -> String {
        let signature = match self.algorithm {
            KeyAlgorithm::EdDsa => {
                ed25519_dalek::SigningKey::from_bytes(&SEED).sign(message.as_bytes()).to_vec()
            }
            KeyAlgorithm::Hs256 => {
                let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
                mac.update(message.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
        };
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// The claims JSON with the claims at the given indexes of [`CLAIMS`] changed to the given
    /// wrong values, the others right.
    fn claims_json(changes: &[(usize, u8)]) -> Vec<u8> {
        let claims: serde_json::Map<String, Value> = CLAIMS
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let choice = changes.iter().find(|(at, _)| *at == i).map_or(0, |(_, wrong)| *wrong);
                claim(name, choice).map(|value| ((*name).to_owned(), value))
            })
            .collect();
        Value::Object(claims).to_string().into_bytes()
    }

    /// A token signed by this key under the header it writes itself (so the key is found
    /// without reading the header) and the claims changed as given.
    fn sign_claims(&self, changes: &[(usize, u8)]) -> String {
        let header = &self.keys.current().encoded_header;
        self.sign_message(&format!(
            "{header}.{}",
            URL_SAFE_NO_PAD.encode(Self::claims_json(changes))
        ))
    }

    fn assert_same_answer(&self, token: &str) -> Result<(), TestCaseError> {
        let config = TokenConfig::default();
        let now = clock().now();
        let ours = verify_with(&self.keys, &config, now, token).map(|verified| verified.claims);
        let theirs = reference(&self.keys, &self.decoding, &config, now, token);
        prop_assert_eq!(ours, theirs, "token {:?}", token);
        Ok(())
    }
}

fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(start()))
}

fn genuine(case: &Case) -> String {
    TokenIssuer::new(case.keys.clone(), TokenConfig::default(), clock())
        .issue_for(UserId::new_random(), &["instances:read".into()], Some(uuid::Uuid::nil()))
        .unwrap()
        .token
}

/// A change at `at` (a fraction of the length): replace, insert or delete one character, or
/// cut the token there.
fn changed(token: &str, op: u8, at: f64, with: char) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    // The fraction is below 1, so the index is within the token.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let i = (at * chars.len() as f64) as usize;
    match op % 4 {
        0 => chars[i] = with,
        1 => chars.insert(i, with),
        2 => {
            chars.remove(i);
        }
        _ => chars.truncate(i),
    }
    chars.into_iter().collect()
}

/// How many wrong values [`claim`] knows for a claim.
const WRONG: u8 = 8;

/// A value for one claim: the right one (`0`), or absent, another string, a past time, null,
/// an array of the right one, -1, a float, 2^63 (`1..=WRONG`).
fn claim(name: &str, choice: u8) -> Option<Value> {
    let now = start().timestamp();
    let right = match name {
        "sub" => json!(UserId::from_uuid(uuid::Uuid::nil()).to_string()),
        "iss" => json!("iaas-auth"),
        "aud" => json!("iaas"),
        "exp" => json!(now + 900),
        "iat" | "nbf" => json!(now),
        "jti" => json!("j"),
        "scope" => json!("instances:read"),
        _ => json!(uuid::Uuid::nil().to_string()),
    };
    match choice {
        0 => Some(right),
        1 => None,
        2 => Some(json!("someone-else")),
        3 => Some(json!(now - 3_600)),
        4 => Some(Value::Null),
        5 => Some(json!([right])),
        6 => Some(json!(-1)),
        7 => Some(json!(1.8e9)),
        _ => Some(json!(9_223_372_036_854_775_808_u64)),
    }
}

const CLAIMS: [&str; 9] = ["sub", "iss", "aud", "exp", "iat", "nbf", "jti", "scope", "sid"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_changed_token_gets_the_same_answer(
        hs in any::<bool>(), op in any::<u8>(), at in 0.0..1.0f64,
        with in prop::sample::select(vec!['A', 'g', '0', '-', '_', '.', '=', '+', '/', ' ', '{']),
    ) {
        let case = if hs { Case::hs256() } else { Case::eddsa() };
        let token = genuine(&case);
        case.assert_same_answer(&token)?;
        case.assert_same_answer(&changed(&token, op, at, with))?;
    }
}

/// Every claim alone and every pair of claims changed to each wrong value (absent, another
/// string, a past time, null, an array, -1, a float, 2^63), signed under the key's own header:
/// the checks and their order agree. HS256 for
/// the pairs (the claims are read after the signature, whichever the algorithm), both
/// algorithms for single changes.
#[test]
fn tokens_signed_over_changed_claims_get_the_same_answer() {
    let changes: Vec<(usize, u8)> =
        (0..CLAIMS.len()).flat_map(|claim| (1..=WRONG).map(move |wrong| (claim, wrong))).collect();
    let hs = Case::hs256();
    let eddsa = Case::eddsa();
    for (i, first) in changes.iter().enumerate() {
        eddsa.assert_same_answer(&eddsa.sign_claims(&[*first])).unwrap();
        for second in &changes[i + 1..] {
            hs.assert_same_answer(&hs.sign_claims(&[*first, *second])).unwrap();
        }
    }
}

/// Every combination of `alg` (the key's, the other one, `none`, a number, absent), `kid`
/// (the key's, another, a number, absent) and `typ` (absent, a string, a number), and headers
/// with odd members, signed by each key: the same answers. None of these is a key's own
/// header, so the key is found by reading it.
#[test]
fn tokens_signed_over_odd_headers_get_the_same_answer() {
    let claims = Case::claims_json(&[]);
    for case in [Case::eddsa(), Case::hs256()] {
        let algs = [json!("EdDSA"), json!("HS256"), json!("none"), json!(5), Value::Null];
        let kids = [json!(case.keys.current().kid()), json!("other"), json!(7), Value::Null];
        for alg in &algs {
            for kid in &kids {
                for typ in [Value::Null, json!("JWT"), json!(5)] {
                    let mut header = serde_json::Map::new();
                    for (name, value) in [("alg", alg), ("kid", kid), ("typ", &typ)] {
                        if !value.is_null() {
                            header.insert(name.into(), value.clone());
                        }
                    }
                    let header = Value::Object(header).to_string();
                    case.assert_same_answer(&case.sign(header.as_bytes(), &claims)).unwrap();
                }
            }
        }
        // Registered members of the wrong type, a member twice, one not understood.
        let (alg, kid) = (case.algorithm.header_name(), case.keys.current().kid());
        for header in [
            format!(r#"{{"alg":"{alg}","kid":"{kid}","x5c":"a"}}"#),
            format!(r#"{{"alg":"{alg}","kid":"{kid}","jku":"https://example.test/jwks"}}"#),
            format!(r#"{{"alg":"{alg}","kid":"zz","kid":"{kid}"}}"#),
            format!(r#"{{"alg":"{alg}","alg":"{alg}","kid":"{kid}"}}"#),
            format!(r#"{{"alg":"{alg}","kid":"{kid}","crit":["exp"]}}"#),
        ] {
            case.assert_same_answer(&case.sign(header.as_bytes(), &claims)).unwrap();
        }
    }
}

/// Payloads that are not JSON objects or not base64url, signed: the parse failures agree too.
#[test]
fn signed_payloads_that_do_not_parse_get_the_same_answer() {
    for case in [Case::eddsa(), Case::hs256()] {
        let header = json!({"alg": case.algorithm.header_name(), "kid": case.keys.current().kid()});
        for payload in [&b""[..], b"[]", b"null", b"{", b"{\"sub\":1,\"sub\":2}", b"\xff"] {
            let token = case.sign(header.to_string().as_bytes(), payload);
            case.assert_same_answer(&token).unwrap();
        }
        // A payload part that is not base64url, under a signature over exactly those bytes.
        let token = case.sign(header.to_string().as_bytes(), b"{}");
        let [head, _, _]: [&str; 3] = token.split('.').collect::<Vec<_>>().try_into().unwrap();
        case.assert_same_answer(&case.sign_message(&format!("{head}.not*base64"))).unwrap();
    }
}

/// A previous key under the current key's `kid` with the other algorithm: a token carrying
/// exactly its header is refused as the reference refuses it (the `kid` names the current
/// key, whose algorithm differs), though the header is that key's own.
#[test]
fn a_header_of_a_key_whose_kid_names_another_is_refused_the_same() {
    let mut case = Case::eddsa();
    let shadowed = SigningKey::hs256(case.keys.current().kid(), SECRET).unwrap();
    let header = shadowed.encoded_header.clone();
    case.keys.previous.push((shadowed, start() + chrono::Duration::hours(1)));
    case.algorithm = KeyAlgorithm::Hs256;
    let payload = URL_SAFE_NO_PAD.encode(Case::claims_json(&[]));
    let token = case.sign_message(&format!("{header}.{payload}"));
    let config = TokenConfig::default();
    let ours = verify_with(&case.keys, &config, start(), &token).map(|verified| verified.claims);
    assert_eq!(ours, Err(TokenRejection::AlgorithmMismatch));
    case.assert_same_answer(&token).unwrap();
}
