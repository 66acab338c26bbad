//! Access-token cost: signing and verifying with EdDSA (Ed25519, the default) and HS256. Verify
//! is what every protected request of every service pays.
//!
//! Raw baselines in the same run: `ed25519-dalek` signing and verifying the same message with
//! keys decoded once (`auth_token_raw/eddsa_*`), and HMAC-SHA256 with a keyed state cloned per
//! call (`auth_token_raw/hs256_*`). A verify of ours also parses the header and the claims, so
//! it can only approach the raw figure; the gap is the JSON work.
//!
//! Two more raw cases show what `jsonwebtoken` 11's `rust_crypto` provider pays per call: it
//! rebuilds the key from its bytes every time (`eddsa_sign_with_key_derivation`: the public key
//! is derived again, a scalar multiplication; `eddsa_verify_with_point_decompression`). Our
//! sign keeps the key decoded (src/token.rs in iaas-auth); our verify is `jsonwebtoken`'s.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a bench panics to report a failure")]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signer as _, Verifier as _};
use hmac::{Hmac, Mac};
use iaas_auth::{KeySet, SigningKey, TokenConfig, TokenIssuer};
use iaas_core::{SystemClock, UserId};
use sha2::Sha256;

fn issuers() -> [(&'static str, TokenIssuer); 2] {
    let eddsa = SigningKey::ed25519_from_seed("ed-1", &[7; 32]).unwrap();
    let hs256 = SigningKey::hs256("hs-1", &[9; 32]).unwrap();
    let make =
        |key| TokenIssuer::new(KeySet::new(key), TokenConfig::default(), Arc::new(SystemClock));
    [("eddsa", make(eddsa)), ("hs256", make(hs256))]
}

fn tokens(c: &mut Criterion) {
    let scopes = vec!["instances:read".to_owned(), "instances:write".to_owned()];
    let user = UserId::new_random();
    let mut sign = c.benchmark_group("auth_token_sign");
    for (name, issuer) in issuers() {
        sign.bench_function(name, |b| b.iter(|| issuer.issue(user, &scopes).unwrap()));
    }
    sign.finish();
    let mut verify = c.benchmark_group("auth_token_verify");
    let mut signed_message = Vec::new();
    for (name, issuer) in issuers() {
        let token = issuer.issue(user, &scopes).unwrap().token;
        if name == "eddsa" {
            let (message, _) = token.rsplit_once('.').unwrap();
            signed_message = message.as_bytes().to_vec();
        }
        verify.bench_function(name, |b| b.iter(|| issuer.verify(&token).unwrap()));
    }
    verify.finish();

    // The same message a token signs (header.payload), through the bare primitives.
    let mut raw = c.benchmark_group("auth_token_raw");
    let signing = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let verifying = signing.verifying_key();
    let signature = signing.sign(&signed_message);
    raw.bench_function("eddsa_sign", |b| b.iter(|| signing.sign(&signed_message)));
    raw.bench_function("eddsa_sign_with_key_derivation", |b| {
        // What `jsonwebtoken` 11 does per sign: decode the key, which derives the public key.
        let seed = signing.to_bytes();
        b.iter(|| ed25519_dalek::SigningKey::from_bytes(&seed).sign(&signed_message));
    });
    raw.bench_function("eddsa_verify", |b| {
        b.iter(|| verifying.verify(&signed_message, &signature).unwrap());
    });
    raw.bench_function("eddsa_verify_with_point_decompression", |b| {
        // What `jsonwebtoken` 11 does per verify: rebuild the key from its 32 bytes.
        let bytes = verifying.to_bytes();
        b.iter(|| {
            let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).unwrap();
            key.verify(&signed_message, &signature).unwrap();
        });
    });
    let mac = <Hmac<Sha256> as Mac>::new_from_slice(&[9; 32]).unwrap();
    let tag = {
        let mut m = mac.clone();
        m.update(&signed_message);
        m.finalize().into_bytes()
    };
    raw.bench_function("hs256_verify", |b| {
        b.iter(|| {
            let mut m = mac.clone();
            m.update(&signed_message);
            m.verify_slice(&tag).unwrap();
        });
    });
    raw.finish();
}

criterion_group!(benches, tokens);
criterion_main!(benches);
