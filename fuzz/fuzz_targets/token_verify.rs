//! Access-token verification on arbitrary strings (what arrives in an `Authorization` header):
//! it never panics and never accepts. A second check starts from a genuine token and changes
//! it where the fuzzer says: any token that differs from the genuine one is refused.

#![no_main]

use std::sync::{Arc, OnceLock};

use iaas_auth::{KeySet, SigningKey, TokenConfig, TokenIssuer};
use iaas_core::{Clock, ManualClock, SystemClock, UserId};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    issuers: Vec<TokenIssuer>,
    genuine: Vec<String>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let keys = [
            SigningKey::ed25519_from_seed("fuzz-ed", &[7; 32]).expect("a fixed seed is a key"),
            SigningKey::hs256("fuzz-hs", b"a fuzzing secret of at least 32 bytes!")
                .expect("a 38-byte secret is a key"),
        ];
        // A stopped clock: the genuine tokens never expire, however long the run, so a forged
        // token is refused for its forgery and not for its age.
        let clock = Arc::new(ManualClock::new(SystemClock.now()));
        let issuers: Vec<TokenIssuer> = keys
            .into_iter()
            .map(|key| TokenIssuer::new(KeySet::new(key), TokenConfig::default(), clock.clone()))
            .collect();
        let genuine = issuers
            .iter()
            .map(|issuer| {
                issuer
                    .issue(UserId::new_random(), &["instances:read".to_owned()])
                    .expect("a fresh token is issued")
                    .token
            })
            .collect();
        Fixture { issuers, genuine }
    })
}

fuzz_target!(|bytes: &[u8]| {
    let fixture = fixture();
    let text = String::from_utf8_lossy(bytes);
    for issuer in &fixture.issuers {
        assert!(issuer.verify(&text).is_err(), "an arbitrary string was accepted: {text:?}");
    }
    // Splice the input into a genuine token at a position the first two bytes choose.
    let [hi, lo, rest @ ..] = bytes else { return };
    let rest = String::from_utf8_lossy(rest);
    for (issuer, genuine) in fixture.issuers.iter().zip(&fixture.genuine) {
        let at = usize::from(u16::from_be_bytes([*hi, *lo])) % (genuine.len() + 1);
        let mut forged = String::with_capacity(genuine.len() + rest.len());
        forged.push_str(&genuine[..at]);
        forged.push_str(&rest);
        forged.push_str(&genuine[at..]);
        if forged != *genuine {
            assert!(issuer.verify(&forged).is_err(), "a changed token was accepted: {forged:?}");
        }
    }
});
