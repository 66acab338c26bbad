//! Access-token cost: signing and verifying with EdDSA (Ed25519, the default) and HS256. Verify
//! is what every protected request of every service pays.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a bench panics to report a failure")]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use iaas_auth::{KeySet, SigningKey, TokenConfig, TokenIssuer};
use iaas_core::{SystemClock, UserId};

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
    for (name, issuer) in issuers() {
        let token = issuer.issue(user, &scopes).unwrap().token;
        verify.bench_function(name, |b| b.iter(|| issuer.verify(&token).unwrap()));
    }
    verify.finish();
}

criterion_group!(benches, tokens);
criterion_main!(benches);
