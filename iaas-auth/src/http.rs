//! The auth HTTP API (axum) and the [`AuthUser`] extractor.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | POST | `/v1/auth/register` | `{username, password}` | 201 `{id, username, scopes}` |
//! | POST | `/v1/auth/login` | `{username, password}` | 200 [`TokenPair`] |
//! | POST | `/v1/auth/refresh` | `{refresh_token}` | 200 [`TokenPair`] |
//! | POST | `/v1/auth/logout` | `{refresh_token}` | 204 |
//! | POST | `/v1/auth/logout-all` | (bearer) | 204 |
//! | PUT | `/v1/auth/password` | (bearer) `{current_password, new_password}` | 204 |
//! | GET | `/v1/auth/sessions` | (bearer) | 200 `{sessions: [...]}` |
//! | DELETE | `/v1/auth/sessions/{id}` | (bearer) | 204; 404 `session_not_found` |
//! | GET | `/.well-known/jwks.json` | | 200 JWKS |
//!
//! Bodies are read by the workspace's one extractor, [`JsonBody`]: `application/json` (else
//! 415) and at most the server's [`iaas_core::BodyLimit`], [`MAX_BODY_BYTES`] without one (else
//! 413). Every error is the shared `{"error": {"code", "message"}}` ([`HttpError`]), its status
//! chosen in exactly one place, the [`IntoResponse`] impl of [`AuthError`].
//!
//! Throttling per client address reads the peer address from axum's `ConnectInfo`: serve the
//! router with `into_make_service_with_connect_info::<SocketAddr>()`, otherwise every caller
//! counts as the one client `"unknown"`. `X-Forwarded-For` is believed only from the peers in
//! [`AuthConfig::trusted_proxies`](crate::AuthConfig) (see [`client_address`]).
//!
//! Other services protect their routes with [`AuthUser`]: it verifies the bearer token locally
//! with a [`TokenIssuer`] taken from their state (`FromRef`), which may hold only public keys
//! ([`SigningKey::ed25519_public`](crate::SigningKey::ed25519_public)); no call to the auth
//! service is made.

use std::net::SocketAddr;

use axum::extract::Path;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use iaas_core::http::HttpError;
pub use iaas_core::http::JsonBody;
use serde::Deserialize;

use crate::error::AuthError;
use crate::service::{AuthService, TokenPair};
use crate::session::Session;
use crate::token::{AccessClaims, TokenIssuer};

/// Largest accepted request body when the server sets no [`iaas_core::BodyLimit`] (64 KiB:
/// credentials and tokens are tiny).
pub const MAX_BODY_BYTES: usize = iaas_core::http::DEFAULT_BODY_LIMIT;

/// The auth API over `service`.
pub fn router(service: AuthService) -> Router {
    Router::new()
        .route("/v1/auth/register", post(register))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/auth/logout-all", post(logout_all))
        .route("/v1/auth/password", put(change_password))
        .route("/v1/auth/sessions", get(list_sessions))
        .route("/v1/auth/sessions/{id}", delete(revoke_session))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(service)
}

impl FromRef<AuthService> for TokenIssuer {
    fn from_ref(service: &AuthService) -> Self {
        service.issuer().clone()
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let status = match &self {
            AuthError::InvalidUsername { .. } | AuthError::WeakPassword { .. } => {
                StatusCode::BAD_REQUEST
            }
            AuthError::InvalidCredentials
            | AuthError::MissingToken
            | AuthError::InvalidToken(_)
            | AuthError::InvalidRefresh(_) => StatusCode::UNAUTHORIZED,
            AuthError::MissingScope { .. } => StatusCode::FORBIDDEN,
            AuthError::UsernameTaken { .. } => StatusCode::CONFLICT,
            AuthError::SessionNotFound => StatusCode::NOT_FOUND,
            AuthError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            AuthError::Unavailable { .. } | AuthError::Busy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AuthError::Config { .. } | AuthError::Internal { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        // Logged once, here, where the error is handled; client errors are not worth a log.
        if status.is_server_error() {
            tracing::error!(error = %self, source = ?std::error::Error::source(&self), "auth request failed");
        }
        // Internal details stay in the log; the client gets the stable code and a safe message.
        let message = match &self {
            AuthError::Config { .. } | AuthError::Internal { .. } => "internal error".to_owned(),
            AuthError::Unavailable { backend, .. } => {
                format!("{backend} is unavailable; retry later")
            }
            other => other.to_string(),
        };
        let error = HttpError::new(status, self.code(), message);
        match &self {
            AuthError::Throttled { retry_after_secs, .. }
            | AuthError::Busy { retry_after_secs } => error.with_retry_after(*retry_after_secs),
            AuthError::MissingToken | AuthError::InvalidToken(_) => {
                error.with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
            }
            _ => error,
        }
        .into_response()
    }
}

/// The caller of a protected route: its verified access-token claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser(pub AccessClaims);

impl AuthUser {
    /// Fails with [`AuthError::MissingScope`] (403) unless the token grants `scope`.
    pub fn require_scope(&self, scope: &str) -> Result<(), AuthError> {
        if self.0.has_scope(scope) {
            Ok(())
        } else {
            Err(AuthError::MissingScope { scope: scope.to_owned() })
        }
    }
}

impl<S> FromRequestParts<S> for AuthUser
where
    TokenIssuer: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get(header::AUTHORIZATION).ok_or(AuthError::MissingToken)?;
        let value = value.to_str().map_err(|_| AuthError::MissingToken)?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::MissingToken)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::MissingToken);
        }
        TokenIssuer::from_ref(state).verify(token.trim()).map(AuthUser)
    }
}

impl From<AccessClaims> for iaas_core::Principal {
    fn from(claims: AccessClaims) -> Self {
        iaas_core::Principal {
            user_id: claims.user,
            scopes: claims.scopes,
            expires_at: Some(claims.expires_at),
            session: claims.session,
        }
    }
}

/// Middleware for the routers of other crates: a request carrying a valid access token gets the
/// caller as an [`iaas_core::Principal`] in its extensions; one carrying an invalid token is
/// refused here with the token error (401); one carrying none passes untouched, and the route
/// decides whether it needs a caller.
///
/// Browsers cannot set headers on WebSocket requests, so a WebSocket upgrade may carry the
/// token as the `access_token` query parameter instead; no other request may (a token in a URL
/// ends up in logs).
///
/// ```no_run
/// # fn demo(issuer: iaas_auth::TokenIssuer, routes: axum::Router) -> axum::Router {
/// routes.layer(axum::middleware::from_fn_with_state(issuer, iaas_auth::http::principal_layer))
/// # }
/// ```
pub async fn principal_layer(
    State(issuer): State<TokenIssuer>,
    mut request: Request,
    next: axum::middleware::Next,
) -> Response {
    let token = match bearer_token(&request) {
        Ok(token) => token,
        Err(error) => return error.into_response(),
    };
    if let Some(token) = token {
        match issuer.verify(&token) {
            Ok(claims) => {
                request.extensions_mut().insert(iaas_core::Principal::from(claims));
            }
            Err(error) => return error.into_response(),
        }
    }
    next.run(request).await
}

/// The bearer token of a request, if it has one.
fn bearer_token(request: &Request) -> Result<Option<String>, AuthError> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthError::MissingToken)?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::MissingToken)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::MissingToken);
        }
        return Ok(Some(token.trim().to_owned()));
    }
    let upgrade = request.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok());
    if upgrade.is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        let token = request
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|pair| pair.strip_prefix("access_token="))
            .filter(|token| !token.is_empty());
        return Ok(token.map(str::to_owned));
    }
    Ok(None)
}

/// The caller's address: the peer the server saw (`ConnectInfo`), or `"unknown"` when the
/// server was not started with connect info. When the peer is one of `trusted_proxies`, the
/// `X-Forwarded-For` chain is read from the right and the first address that is not a trusted
/// proxy is the client (what the proxy itself appended, not what the client claimed).
pub fn client_address(
    trusted_proxies: &[ipnet::IpNet],
    headers: &axum::http::HeaderMap,
    connect: Option<&ConnectInfo<SocketAddr>>,
) -> String {
    let Some(ConnectInfo(peer)) = connect else { return "unknown".to_owned() };
    let trusted = |ip: &std::net::IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    let mut client = peer.ip();
    if trusted(&client) {
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in forwarded.iter().rev() {
            // Anything unparsable ends the walk: what lies left of it is not worth believing.
            let Ok(ip) = hop.parse::<std::net::IpAddr>() else { break };
            client = ip;
            if !trusted(&ip) {
                break;
            }
        }
    }
    client.to_canonical().to_string()
}

/// The caller's address as the throttles count it ([`client_address`]).
struct Client(String);

impl FromRequestParts<AuthService> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        auth: &AuthService,
    ) -> Result<Self, Self::Rejection> {
        let connect = parts.extensions.get::<ConnectInfo<SocketAddr>>();
        Ok(Client(client_address(&auth.config().trusted_proxies, &parts.headers, connect)))
    }
}

#[derive(Debug, Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

#[derive(Debug, Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

#[derive(Debug, Deserialize)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

async fn register(
    State(auth): State<AuthService>,
    Client(client): Client,
    JsonBody(body): JsonBody<Credentials>,
) -> Result<Response, AuthError> {
    let user = auth.register_from(&body.username, &body.password, &client).await?;
    let body =
        serde_json::json!({ "id": user.id, "username": user.username, "scopes": user.scopes });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn login(
    State(auth): State<AuthService>,
    Client(client): Client,
    JsonBody(body): JsonBody<Credentials>,
) -> Result<Json<TokenPair>, AuthError> {
    Ok(Json(auth.login(&body.username, &body.password, &client).await?))
}

async fn refresh(
    State(auth): State<AuthService>,
    JsonBody(body): JsonBody<RefreshBody>,
) -> Result<Json<TokenPair>, AuthError> {
    Ok(Json(auth.refresh(&body.refresh_token).await?))
}

async fn logout(
    State(auth): State<AuthService>,
    JsonBody(body): JsonBody<RefreshBody>,
) -> Result<StatusCode, AuthError> {
    auth.logout(&body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn logout_all(
    State(auth): State<AuthService>,
    AuthUser(claims): AuthUser,
) -> Result<StatusCode, AuthError> {
    auth.logout_all(claims.user).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn change_password(
    State(auth): State<AuthService>,
    AuthUser(claims): AuthUser,
    Client(client): Client,
    JsonBody(body): JsonBody<PasswordChange>,
) -> Result<StatusCode, AuthError> {
    auth.change_password(claims.user, &body.current_password, &body.new_password, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_sessions(
    State(auth): State<AuthService>,
    AuthUser(claims): AuthUser,
) -> Result<Json<serde_json::Value>, AuthError> {
    let sessions: Vec<Session> = auth.list_sessions(claims.user).await?;
    Ok(Json(serde_json::json!({ "sessions": sessions })))
}

/// Ends one of the caller's session families (the `family` of an entry of the list); a
/// malformed id is answered like an unknown one.
async fn revoke_session(
    State(auth): State<AuthService>,
    AuthUser(claims): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, AuthError> {
    let family = id.parse::<uuid::Uuid>().map_err(|_| AuthError::SessionNotFound)?;
    auth.revoke_session(claims.user, family).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn jwks(State(auth): State<AuthService>) -> Json<serde_json::Value> {
    Json(auth.issuer().jwks())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_address_is_believed_only_from_a_trusted_proxy() {
        let proxies: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let headers = |value: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert("x-forwarded-for", value.parse().unwrap());
            headers
        };
        let peer = |ip: [u8; 4]| ConnectInfo(SocketAddr::from((ip, 40000)));
        let cases = [
            // A client talking to us directly cannot claim another address.
            (peer([203, 0, 113, 9]), "198.51.100.1", "203.0.113.9"),
            // Through the proxy: what the proxy appended, not what the client put first.
            (peer([10, 0, 0, 2]), "1.2.3.4, 198.51.100.7", "198.51.100.7"),
            // Two proxies in a row are both skipped.
            (peer([10, 0, 0, 2]), "198.51.100.7, 10.0.0.3", "198.51.100.7"),
            // Garbage stops the walk at the last address believed.
            (peer([10, 0, 0, 2]), "198.51.100.7, not-an-ip", "10.0.0.2"),
        ];
        for (peer, forwarded, want) in cases {
            assert_eq!(client_address(&proxies, &headers(forwarded), Some(&peer)), want);
        }
        assert_eq!(
            client_address(&[], &headers("1.2.3.4"), Some(&peer([10, 0, 0, 2]))),
            "10.0.0.2"
        );
        assert_eq!(client_address(&proxies, &headers("1.2.3.4"), None), "unknown");
    }
}
