//! Accounts, access tokens and refresh sessions for iaas-rs.
//!
//! - [`username`] and [`password`]: account rules and argon2id hashing (OWASP parameters,
//!   constant-time verification, a dummy verification for unknown users).
//! - [`token`]: JWT access tokens with the algorithm pinned per key (`EdDSA` by default,
//!   `HS256` allowed), key rotation by `kid` and a JWKS document; a token presented again is
//!   answered from a bounded memo of verified tokens
//!   ([`TokenConfig::verify_cache_capacity`]), with its expiry checked on every use.
//! - [`session`]: refresh sessions behind [`SessionStore`] ([`MemorySessionStore`], and
//!   `RedisSessionStore` with feature `redis`): only token hashes are stored, tokens rotate on
//!   every refresh, reuse revokes the family, logout-all and password change revoke everything.
//! - [`AuthService`]: the flows over those parts and an [`iaas_core::UserRepository`], with
//!   login throttling per username and per client address, and a short-lived cache of users
//!   by id on the refresh path ([`UserCacheConfig`]).
//! - `http` (feature `http`): the axum router and the `AuthUser` extractor other services use
//!   to check access tokens without calling the auth service.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use iaas_auth::{AuthConfig, AuthService, KeySet, MemorySessionStore, SigningKey};
//! use iaas_core::SystemClock;
//! use iaas_core::memory::MemoryUserRepository;
//!
//! # async fn demo() -> Result<(), iaas_auth::AuthError> {
//! let auth = AuthService::new(
//!     Arc::new(MemoryUserRepository::new()),
//!     Arc::new(MemorySessionStore::new()),
//!     KeySet::new(SigningKey::generate_ed25519("2026-11")?),
//!     b"a secret of at least thirty-two bytes!!",
//!     Arc::new(SystemClock),
//!     AuthConfig::default(),
//! )?;
//! auth.register("ada", "correct horse battery").await?;
//! let pair = auth.login("ada", "correct horse battery", "127.0.0.1").await?;
//! let claims = auth.issuer().verify(&pair.access_token)?;
//! let next = auth.refresh(&pair.refresh_token).await?;
//! assert_ne!(next.refresh_token, pair.refresh_token);
//! # let _ = claims;
//! # Ok(()) }
//! ```
//!
//! # A whole program
//!
//! The auth API merged into your own axum app with in-memory stores, next to a route of yours
//! protected by the `AuthUser` access-token check, then called over HTTP
//! (`examples/own_axum_app.rs`, `cargo run -p iaas-auth --example own_axum_app`):
#![cfg_attr(
    feature = "http",
    doc = concat!("```no_run\n", include_str!("../examples/own_axum_app.rs"), "\n```")
)]
//!
//! # Feature flags
//!
//! - `http` (default): the axum router and extractor.
//! - `redis` (default): `RedisSessionStore`.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod hashing;
#[cfg(feature = "http")]
pub mod http;
mod keys;
pub mod openapi;
pub mod password;
mod service;
pub mod session;
mod throttle;
pub mod token;
mod user_cache;
pub mod username;
mod verify_cache;

pub use error::{AuthError, RefreshRejection, Result, TokenRejection};
pub use hashing::HashingLimits;
pub use password::{PasswordConfig, PasswordHasher, Scratch};
pub use service::{AuthConfig, AuthService, MIN_REFRESH_SECRET_BYTES, SessionConfig, TokenPair};
pub use session::memory::MemorySessionStore;
#[cfg(feature = "redis")]
pub use session::redis::{RedisSessionConfig, RedisSessionStore};
pub use session::{Attempts, Rotate, Rotation, Session, SessionStore, StoreLiveness, TokenHash};
pub use throttle::ThrottleConfig;
pub use token::{
    AccessClaims, AccessToken, Claims, KeyAlgorithm, KeySet, SigningKey, TokenConfig, TokenIssuer,
};
pub use user_cache::UserCacheConfig;
pub use username::Username;
