//! The HTTP client: one platform URL, the stored login, JSON in and out.
//!
//! Every authenticated request goes through [`Client::send`], which takes the access token from
//! the [`CredentialStore`], refreshes it first when it is about to expire, and, when the
//! platform still answers 401 (the token was revoked, or the clocks disagree), refreshes once
//! and retries. A refresh rotates the refresh token, so the new pair is saved before the
//! request goes on. Errors come back as the platform's JSON body, `{"error":{"code","message"}}`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use iaas_core::Clock;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::credentials::{CredentialStore, Credentials};
use crate::error::{CliError, Result};

/// The platform URL used when neither `--url` nor `IAAS_URL` is given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Timeouts and pacing of the client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Time to establish a connection (default 5 s); past it the platform counts as unreachable.
    pub connect_timeout: Duration,
    /// Time for a whole request and its answer (default 30 s).
    pub request_timeout: Duration,
    /// How often an instance is polled while a command waits for it (default 2 s); the live
    /// WebSocket feed usually reports the change sooner.
    pub poll_interval: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// An account as `register` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Account {
    /// The user's id.
    pub id: String,
    /// The user name.
    pub username: String,
    /// What the user may do.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// The token pair of `login` and `refresh`.
#[derive(Deserialize)]
struct TokenPair {
    access_token: String,
    expires_in: i64,
    refresh_token: String,
    refresh_expires_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// A client of one platform.
#[derive(Debug, Clone)]
pub struct Client {
    base: Url,
    http: reqwest::Client,
    store: CredentialStore,
    clock: Arc<dyn Clock>,
    config: ClientConfig,
}

impl Client {
    /// A client of the platform at `url` (`http://host:port`), keeping its login in `store`.
    pub fn new(
        url: &str,
        store: CredentialStore,
        clock: Arc<dyn Clock>,
        config: ClientConfig,
    ) -> Result<Self> {
        let base = Url::parse(url)
            .map_err(|err| CliError::usage("--url", url, format!("not a URL: {err}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(CliError::usage("--url", url, "expected http://HOST:PORT"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("iaasctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| CliError::Transport { url: url.to_owned(), source })?;
        Ok(Self { base, http, store, clock, config })
    }

    /// The platform's URL, without a trailing `/`.
    pub fn url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The client's timeouts and pacing.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The current time, from the client's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The URL of `path` (which starts with `/`) with `query` appended.
    pub fn endpoint(&self, path: &str, query: &[(&str, String)]) -> Result<Url> {
        let text = format!("{}{path}", self.url());
        let mut url = Url::parse(&text).map_err(|err| CliError::UnexpectedResponse {
            url: text.clone(),
            reason: format!("cannot build the request URL: {err}"),
        })?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (key, value) in query {
                pairs.append_pair(key, value);
            }
        }
        Ok(url)
    }

    /// Creates an account (`POST /v1/auth/register`).
    pub async fn register(&self, username: &str, password: &str) -> Result<Account> {
        let body = json!({"username": username, "password": password});
        let value = self.call(Method::POST, "/v1/auth/register", &[], Some(&body), None).await?;
        decode(self.url(), value)
    }

    /// Logs in (`POST /v1/auth/login`) and stores the tokens.
    pub async fn login(&self, username: &str, password: &str) -> Result<Credentials> {
        let body = json!({"username": username, "password": password});
        let value = self.call(Method::POST, "/v1/auth/login", &[], Some(&body), None).await?;
        let pair: TokenPair = decode(self.url(), value)?;
        let credentials = self.credentials_from(username, pair);
        self.store.save(&credentials)?;
        Ok(credentials)
    }

    /// Ends the stored session (`POST /v1/auth/logout`), or every session of the user with
    /// `all` (`POST /v1/auth/logout-all`), and forgets the tokens. `false` when nobody was
    /// logged in. The local tokens are forgotten even when the platform had already ended the
    /// session.
    pub async fn logout(&self, all: bool) -> Result<bool> {
        let Some(credentials) = self.stored()? else {
            return Ok(false);
        };
        let ended = if all {
            self.send(Method::POST, "/v1/auth/logout-all", &[], None).await.map(drop)
        } else {
            let body = json!({"refresh_token": credentials.refresh_token});
            self.call(Method::POST, "/v1/auth/logout", &[], Some(&body), None).await.map(drop)
        };
        match ended {
            Ok(()) => {}
            // Already over on the platform's side: forgetting the tokens is all there is to do.
            Err(CliError::Api { status: 401, .. } | CliError::SessionEnded { .. }) => {}
            Err(err) => return Err(err),
        }
        self.store.remove()?;
        Ok(true)
    }

    /// An authenticated request: `method path?query` with an optional JSON `body`, refreshing
    /// the access token as needed. Returns the JSON answer (`null` for an empty one).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value> {
        self.send_within(method, path, query, body, None).await
    }

    /// [`send`](Self::send) for a request the platform carries out before it answers (a
    /// switchover): the answer may take up to `timeout` instead of the configured
    /// [`request_timeout`](ClientConfig::request_timeout).
    pub async fn send_waiting(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value> {
        self.send_within(method, path, query, body, Some(timeout)).await
    }

    async fn send_within(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        let token = self.access_token().await?;
        match self.exchange(method.clone(), path, query, body, Some(&token), timeout).await {
            Err(CliError::Api { status: 401, .. }) => {
                let credentials = self.logged_in()?;
                let refreshed = self.refresh(credentials).await?;
                let token = Some(refreshed.access_token.as_str());
                self.exchange(method, path, query, body, token, timeout).await
            }
            other => other,
        }
    }

    /// A valid access token, refreshed first when it is about to expire.
    pub async fn access_token(&self) -> Result<String> {
        let credentials = self.logged_in()?;
        if credentials.needs_refresh(self.clock.now()) {
            return Ok(self.refresh(credentials).await?.access_token);
        }
        Ok(credentials.access_token)
    }

    /// The stored credentials for this platform, if any.
    fn stored(&self) -> Result<Option<Credentials>> {
        Ok(self.store.load()?.filter(|credentials| credentials.url == self.url()))
    }

    fn logged_in(&self) -> Result<Credentials> {
        self.stored()?.ok_or_else(|| CliError::NotLoggedIn { url: self.url().to_owned() })
    }

    /// Trades the refresh token for a new pair (`POST /v1/auth/refresh`) and stores it.
    async fn refresh(&self, credentials: Credentials) -> Result<Credentials> {
        let body = json!({"refresh_token": credentials.refresh_token});
        let value = match self.call(Method::POST, "/v1/auth/refresh", &[], Some(&body), None).await
        {
            Ok(value) => value,
            Err(err @ CliError::Api { status: 401, .. }) => {
                return Err(CliError::SessionEnded {
                    url: self.url().to_owned(),
                    source: Box::new(err),
                });
            }
            Err(err) => return Err(err),
        };
        let pair: TokenPair = decode(self.url(), value)?;
        let refreshed = self.credentials_from(&credentials.username, pair);
        self.store.save(&refreshed)?;
        Ok(refreshed)
    }

    fn credentials_from(&self, username: &str, pair: TokenPair) -> Credentials {
        Credentials {
            url: self.url().to_owned(),
            username: username.to_owned(),
            access_token: pair.access_token,
            access_expires_at: self.clock.now() + chrono::Duration::seconds(pair.expires_in),
            refresh_token: pair.refresh_token,
            refresh_expires_at: pair.refresh_expires_at,
        }
    }

    /// One HTTP exchange within the configured request timeout.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        token: Option<&str>,
    ) -> Result<Value> {
        self.exchange(method, path, query, body, token, None).await
    }

    /// One HTTP exchange, within `timeout` when given; an answer outside 2xx becomes
    /// [`CliError::Api`].
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        token: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        let url = self.endpoint(path, query)?;
        let mut request = self.http.request(method, url.clone());
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|source| transport(&url, source))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|source| transport(&url, source))?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|err| CliError::UnexpectedResponse {
            url: url.to_string(),
            reason: format!("the body is not JSON: {err}"),
        })
    }
}

/// Parses a JSON answer into `T`, naming the URL when it does not fit.
pub(crate) fn decode<T: DeserializeOwned>(url: &str, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|err| CliError::UnexpectedResponse {
        url: url.to_owned(),
        reason: format!("the body does not have the expected shape: {err}"),
    })
}

fn transport(url: &Url, source: reqwest::Error) -> CliError {
    if source.is_connect() || source.is_timeout() {
        CliError::Connect { url: url.to_string(), source }
    } else {
        CliError::Transport { url: url.to_string(), source }
    }
}

/// The platform's JSON error, or, for a body that is not one (a proxy's page), the status and
/// the start of the body.
fn api_error(status: StatusCode, body: &[u8]) -> CliError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => {
            CliError::Api { status: status.as_u16(), code: error.code, message: error.message }
        }
        Err(_) => {
            const SHOWN: usize = 200;
            let text = String::from_utf8_lossy(body);
            let text: String = text.chars().take(SHOWN).collect();
            let message = if text.trim().is_empty() {
                status.canonical_reason().unwrap_or("no reason given").to_owned()
            } else {
                text.trim().to_owned()
            };
            CliError::Api {
                status: status.as_u16(),
                code: format!("http_{}", status.as_u16()),
                message,
            }
        }
    }
}

/// Percent-encodes everything but unreserved characters, so `text` (a user name, an id) is
/// one path segment whatever it holds.
pub(crate) fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(url: &str) -> Result<Client> {
        Client::new(
            url,
            CredentialStore::new("/nonexistent/credentials"),
            Arc::new(iaas_core::SystemClock),
            ClientConfig::default(),
        )
    }

    #[test]
    fn the_url_must_be_http_with_a_host() {
        for bad in ["127.0.0.1:8080", "ftp://host", "not a url", "http://"] {
            let err = client(bad).unwrap_err();
            assert!(matches!(err, CliError::Usage { argument: "--url", .. }), "{bad}: {err}");
        }
        assert_eq!(client("http://127.0.0.1:8080/").unwrap().url(), "http://127.0.0.1:8080");
    }

    #[test]
    fn query_values_are_escaped() {
        let client = client("http://127.0.0.1:8080").unwrap();
        let url = client.endpoint("/v1/events", &[("q", "a b&c".to_owned())]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/v1/events?q=a+b%26c");
    }

    #[test]
    fn an_error_body_becomes_the_api_error_and_anything_else_keeps_the_status() {
        let body = br#"{"error":{"code":"not_found","message":"instance x not found"}}"#;
        let err = api_error(StatusCode::NOT_FOUND, body);
        assert!(
            matches!(&err, CliError::Api { status: 404, code, message } if code == "not_found" && message == "instance x not found"),
            "{err}"
        );
        let err = api_error(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(err.to_string(), "Bad Gateway (http_502, HTTP 502)");
        let err = api_error(StatusCode::BAD_GATEWAY, b"<html>proxy</html>");
        assert_eq!(err.to_string(), "<html>proxy</html> (http_502, HTTP 502)");
    }

    #[tokio::test]
    async fn a_command_without_a_login_says_how_to_log_in() {
        let err = client("http://127.0.0.1:9").unwrap().access_token().await.unwrap_err();
        assert!(matches!(err, CliError::NotLoggedIn { .. }), "{err}");
        assert!(err.to_string().contains("iaasctl login"));
    }
}
