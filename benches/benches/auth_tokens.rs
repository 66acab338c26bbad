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
//! sign and verify keep the key decoded (src/keys.rs in iaas-auth); `jsonwebtoken_decode` is
//! the verification iaas-auth ran before, `jsonwebtoken::decode` with the same validation, on
//! the same token.
//!
//! `auth_token_verify` is the cold verification (the verified-token memo turned off with
//! `verify_cache_capacity = 0`, so the figure stays the full check). `auth_token_verify_memo`
//! is what a service pays for a token it has seen before (the default memo): one repeated
//! token per algorithm, then 256 distinct tokens on one thread and on two (time per
//! verification over both threads: half the one-thread figure is perfect scaling, equal to it
//! means the hits serialize). Its raw baseline is a bare `HashMap<String, AccessClaims>` lookup
//! and clone of the same token (`auth_token_raw/hashmap_get_clone`).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a bench panics to report a failure")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signer as _, Verifier as _};
use hmac::{Hmac, Mac};
use iaas_auth::{AccessClaims, KeySet, SigningKey, TokenConfig, TokenIssuer};
use iaas_core::{SystemClock, UserId};
use sha2::Sha256;

/// Distinct tokens in the pool cases: more than one shard's worth of spread, all remembered.
const POOL: usize = 256;

/// One issuer per algorithm, with the verified-token memo holding `verify_cache_capacity`.
fn issuers(verify_cache_capacity: usize) -> [(&'static str, TokenIssuer); 2] {
    let eddsa = SigningKey::ed25519_from_seed("ed-1", &[7; 32]).unwrap();
    let hs256 = SigningKey::hs256("hs-1", &[9; 32]).unwrap();
    let mut config = TokenConfig::default();
    config.verify_cache_capacity = verify_cache_capacity;
    let make = |key| TokenIssuer::new(KeySet::new(key), config.clone(), Arc::new(SystemClock));
    [("eddsa", make(eddsa)), ("hs256", make(hs256))]
}

/// `iters` verifications of the pool's tokens spread over `threads` threads; the wall time.
fn verify_pool(issuer: &TokenIssuer, pool: &[String], threads: u64, iters: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for first in 0..threads {
            scope.spawn(move || {
                let mut i = first;
                while i < iters {
                    let token = &pool[usize::try_from(i).unwrap() % pool.len()];
                    std::hint::black_box(issuer.verify(token).unwrap());
                    i += threads;
                }
            });
        }
    });
    start.elapsed()
}

fn tokens(c: &mut Criterion) {
    let scopes = vec!["instances:read".to_owned(), "instances:write".to_owned()];
    let user = UserId::new_random();
    let mut sign = c.benchmark_group("auth_token_sign");
    for (name, issuer) in issuers(0) {
        sign.bench_function(name, |b| b.iter(|| issuer.issue(user, &scopes).unwrap()));
    }
    sign.finish();
    // Cold: the memo is off, every call is the full verification.
    let mut verify = c.benchmark_group("auth_token_verify");
    let mut signed_message = Vec::new();
    let mut eddsa_token = String::new();
    for (name, issuer) in issuers(0) {
        let token = issuer.issue(user, &scopes).unwrap().token;
        if name == "eddsa" {
            let (message, _) = token.rsplit_once('.').unwrap();
            signed_message = message.as_bytes().to_vec();
            eddsa_token.clone_from(&token);
        }
        verify.bench_function(name, |b| b.iter(|| issuer.verify(&token).unwrap()));
    }
    verify.finish();

    // Repeated tokens, default memo: what a service pays from a token's second request on.
    let mut memo = c.benchmark_group("auth_token_verify_memo");
    let [(_, eddsa), (_, hs256)] = issuers(TokenConfig::DEFAULT_VERIFY_CACHE_CAPACITY);
    for (name, issuer) in [("eddsa", &eddsa), ("hs256", &hs256)] {
        let token = issuer.issue(user, &scopes).unwrap().token;
        issuer.verify(&token).unwrap();
        memo.bench_function(name, |b| b.iter(|| issuer.verify(&token).unwrap()));
    }
    let pool: Vec<String> = (0..POOL)
        .map(|_| {
            let token = eddsa.issue(UserId::new_random(), &scopes).unwrap().token;
            eddsa.verify(&token).unwrap();
            token
        })
        .collect();
    for threads in [1, 2] {
        memo.bench_function(format!("eddsa_{POOL}_tokens_{threads}_threads"), |b| {
            b.iter_custom(|iters| verify_pool(&eddsa, &pool, threads, iters));
        });
    }
    memo.finish();

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
    raw.bench_function("jsonwebtoken_decode", |b| {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(verifying.as_bytes());
        let key = jsonwebtoken::DecodingKey::from_ed_components(&x).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        let config = TokenConfig::default();
        validation.set_audience(&[&config.audience]);
        validation.set_issuer(&[&config.issuer]);
        b.iter(|| {
            jsonwebtoken::decode::<iaas_auth::Claims>(&eddsa_token, &key, &validation).unwrap()
        });
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
    // What a memo hit cannot do without: find the whole token in a std map and clone its claims.
    let claims: AccessClaims = issuers(0)[0].1.verify(&eddsa_token).unwrap();
    let map: HashMap<String, AccessClaims> = HashMap::from([(eddsa_token.clone(), claims)]);
    raw.bench_function("hashmap_get_clone", |b| {
        b.iter(|| map.get(std::hint::black_box(eddsa_token.as_str())).cloned().unwrap());
    });
    raw.finish();
}

criterion_group!(benches, tokens);
criterion_main!(benches);
