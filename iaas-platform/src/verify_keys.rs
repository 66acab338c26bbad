//! The keys of a service that only verifies access tokens (provisioning, monitoring).
//!
//! With `auth_jwks` set, the service reads public keys only, from the auth service's JWKS (a
//! file, or `http://` URL such as `http://auth:8081/.well-known/jwks.json`), re-reads it every
//! [`REFRESH_INTERVAL`] and takes a changed document at once, so a rotation on the auth side
//! reaches it without a restart. It never opens the key file: a compromised service has
//! nothing to sign with. Without `auth_jwks` it reads the key file (as releases before did)
//! and keeps only the public half in memory.

use std::sync::Arc;
use std::time::Duration;

use iaas_auth::{AuthConfig, AuthError, KeySet, TokenIssuer};
use iaas_core::SystemClock;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, JwksSource};
use crate::error::StartError;

/// How often the JWKS is read again.
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Longest wait for a JWKS over HTTP.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Reading the document `auth_jwks` names (the type and its syntax belong to the setting).
impl JwksSource {
    /// Reads and parses the document; the keys and the document they came from.
    async fn load(&self) -> Result<(KeySet, serde_json::Value), AuthError> {
        let config_error = |reason: String| AuthError::Config { reason };
        let text = match self {
            Self::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|err| config_error(format!("reading {}: {err}", path.display())))?,
            Self::Url(url) => fetch(url).await.map_err(config_error)?,
        };
        let document: serde_json::Value = serde_json::from_str(&text)
            .map_err(|err| config_error(format!("JWKS from {self}: not JSON: {err}")))?;
        Ok((KeySet::from_jwks(&document)?, document))
    }
}

async fn fetch(url: &str) -> Result<String, String> {
    let shown = iaas_core::redact_url(url);
    let client = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|err| format!("building an HTTP client: {err}"))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|err| iaas_core::redact_urls_in(&format!("fetching {shown}: {err}")))?;
    if !response.status().is_success() {
        return Err(format!("fetching {shown}: HTTP {}", response.status()));
    }
    response
        .text()
        .await
        .map_err(|err| iaas_core::redact_urls_in(&format!("reading {shown}: {err}")))
}

/// A verifier of the platform's access tokens that cannot sign: from `auth_jwks` when set,
/// else the public half of the key file. With a JWKS, [`refresh`] keeps it current.
pub(crate) async fn token_verifier(
    config: &Config,
) -> Result<(TokenIssuer, Option<JwksSource>), StartError> {
    let tokens = AuthConfig::default().tokens;
    let source =
        config.auth_jwks.as_deref().map(JwksSource::parse).transpose().map_err(|reason| {
            StartError::Auth(AuthError::Config { reason: format!("auth_jwks: {reason}") })
        })?;
    let Some(source) = source else {
        let signing = crate::auth_keys::token_issuer(config)?;
        let public = KeySet::from_jwks(&signing.jwks()).map_err(StartError::Auth)?;
        return Ok((TokenIssuer::new(public, tokens, Arc::new(SystemClock)), None));
    };
    let (keys, _) = source.load().await.map_err(StartError::Auth)?;
    tracing::info!(source = %source, kids = ?keys.kids(), "verifying tokens with public keys only");
    Ok((TokenIssuer::new(keys, tokens, Arc::new(SystemClock)), Some(source)))
}

/// Re-reads `source` every [`REFRESH_INTERVAL`] until `cancel`, and gives `issuer` the keys of
/// a changed document. A document that cannot be read or parsed is logged and the keys in
/// hand stay.
pub(crate) async fn refresh(
    source: JwksSource,
    issuer: TokenIssuer,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut known: Option<serde_json::Value> = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match source.load().await {
            Ok((keys, document)) => {
                if known.as_ref() != Some(&document) {
                    tracing::info!(source = %source, kids = ?keys.kids(), "verification keys (re)loaded");
                    issuer.replace_keys(keys);
                    known = Some(document);
                }
            }
            Err(error) => {
                tracing::warn!(source = %source, %error, "JWKS not refreshed; keeping the keys in hand");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use iaas_auth::{SigningKey, TokenConfig};
    use iaas_core::UserId;

    use super::*;

    #[test]
    fn a_source_is_a_file_or_an_http_url() {
        assert_eq!(
            JwksSource::parse("/etc/iaas/jwks.json"),
            Ok(JwksSource::File("/etc/iaas/jwks.json".into()))
        );
        assert_eq!(
            JwksSource::parse("http://auth:8081/.well-known/jwks.json"),
            Ok(JwksSource::Url("http://auth:8081/.well-known/jwks.json".into()))
        );
        assert!(
            JwksSource::parse("https://auth/.well-known/jwks.json").unwrap_err().contains("https")
        );
    }

    #[tokio::test]
    async fn a_rotation_on_the_auth_side_reaches_the_verifier_without_a_restart() {
        let dir = std::env::temp_dir().join(format!("iaas-jwks-{}", UserId::new_random()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("jwks.json");
        let signer = TokenIssuer::new(
            KeySet::new(SigningKey::ed25519_from_seed("one", &[1; 32]).unwrap()),
            TokenConfig::default(),
            Arc::new(SystemClock),
        );
        std::fs::write(&file, signer.jwks().to_string()).unwrap();
        let source = JwksSource::File(file.clone());
        let (keys, _) = source.load().await.unwrap();
        let verifier = TokenIssuer::new(keys, TokenConfig::default(), Arc::new(SystemClock));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(refresh(
            source,
            verifier.clone(),
            Duration::from_millis(20),
            cancel.clone(),
        ));

        signer.rotate(SigningKey::ed25519_from_seed("two", &[2; 32]).unwrap());
        let token = signer.issue(UserId::new_random(), &[]).unwrap().token;
        assert!(verifier.verify(&token).is_err(), "the new key is not published yet");
        std::fs::write(&file, signer.jwks().to_string()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while verifier.verify(&token).is_err() {
            assert!(std::time::Instant::now() < deadline, "the new key never arrived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A broken document keeps the keys in hand.
        std::fs::write(&file, "{not json").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        verifier.verify(&token).unwrap();
        assert!(!verifier.can_sign());
        cancel.cancel();
        task.await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
