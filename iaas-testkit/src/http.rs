//! A tiny HTTP/1.1 client for tests that talk to a server over a real socket: one request per
//! connection (`Connection: close`), the answer read to the end and split into status, headers
//! and body. Raw requests ([`send`]) let hostile tests write bytes no real client would.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::TestkitError;

/// How long [`send`] waits for a whole answer before it gives up.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// An answer: status, headers (names in lowercase, in the order sent) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Response {
    /// The first value of header `name` (any case), if sent.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(sent, _)| sent.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON, or `Value::Null` when it is not JSON (so a test's assertion on a field
    /// fails and shows the status and body instead of panicking on the parse).
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The status and [`json`](Self::json) body, for `let (status, body) = ...`.
    #[must_use]
    pub fn into_json(self) -> (u16, serde_json::Value) {
        (self.status, self.json())
    }
}

/// The text of a request with `Connection: close`: a bearer `token` when given, and `body` as
/// JSON with its length when given.
#[must_use]
pub fn request_text(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> String {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let (content, body) = match body {
        Some(body) => {
            let body = body.to_string();
            (format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()), body)
        }
        None => (String::new(), String::new()),
    };
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{content}Connection: close\r\n\r\n{body}"
    )
}

/// Writes the raw `request` to `addr` and reads the answer until the server closes the
/// connection (so the request should say `Connection: close`), within [`TIMEOUT`]. Add
/// headers to a [`request_text`] with [`with_header`].
///
/// # Errors
/// [`TestkitError::Http`] naming the address and the request line when the connection, the
/// write or the read fails, it takes longer than [`TIMEOUT`], or the answer is not HTTP.
pub async fn send(addr: &str, request: &[u8]) -> Result<Response, TestkitError> {
    send_within(addr, request, TIMEOUT).await
}

/// [`send`] with a deadline of `within` instead of [`TIMEOUT`].
///
/// # Errors
/// As [`send`].
pub async fn send_within(
    addr: &str,
    request: &[u8],
    within: Duration,
) -> Result<Response, TestkitError> {
    let line = String::from_utf8_lossy(request).lines().next().unwrap_or_default().to_owned();
    let fail = |reason: String| TestkitError::Http {
        addr: addr.to_owned(),
        request: line.clone(),
        reason,
    };
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(within, exchange)
        .await
        .map_err(|_| fail(format!("no whole answer within {within:?}")))?
        .map_err(|err| fail(err.to_string()))?;
    parse(&String::from_utf8_lossy(&response)).map_err(fail)
}

/// `request` (a request's text) with the header `name: value` after its request line.
#[must_use]
pub fn with_header(request: &str, name: &str, value: &str) -> String {
    request.replacen("\r\n", &format!("\r\n{name}: {value}\r\n"), 1)
}

/// Splits an HTTP/1.1 answer into its parts.
fn parse(response: &str) -> Result<Response, String> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {response:?}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line in {response:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(Response { status, headers, body: body.to_owned() })
}

/// `method path` with an optional bearer `token` and JSON `body` (see [`request_text`]).
///
/// # Errors
/// As [`send`].
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Result<Response, TestkitError> {
    send(addr, request_text(addr, method, path, token, body).as_bytes()).await
}

/// `GET path` with an optional bearer `token`.
///
/// # Errors
/// As [`send`].
pub async fn get(addr: &str, path: &str, token: Option<&str>) -> Result<Response, TestkitError> {
    request(addr, "GET", path, token, None).await
}

/// `POST path` with the JSON `body` and no token.
///
/// # Errors
/// As [`send`].
pub async fn post_json(
    addr: &str,
    path: &str,
    body: &serde_json::Value,
) -> Result<Response, TestkitError> {
    request(addr, "POST", path, None, Some(body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_splits_into_status_lowercase_headers_and_body() {
        let response =
            parse("HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\r\n{\"a\":1}")
                .expect("an HTTP answer");
        assert_eq!(response.status, 404);
        assert_eq!(response.header("CONTENT-TYPE"), Some("application/json"));
        assert_eq!(response.headers[0].0, "content-type");
        assert_eq!(response.json()["a"], 1);
        assert_eq!(response.into_json(), (404, serde_json::json!({"a": 1})));
    }

    #[test]
    fn a_body_that_is_not_json_reads_as_null_and_a_non_answer_is_an_error() {
        let response = parse("HTTP/1.1 200 OK\r\n\r\nplain").expect("an HTTP answer");
        assert_eq!(response.json(), serde_json::Value::Null);
        assert!(parse("garbage").is_err());
        assert!(parse("\r\n\r\n").is_err());
    }

    #[test]
    fn a_request_carries_its_token_and_body_length() {
        let text =
            request_text("h:1", "POST", "/p", Some("tok"), Some(&serde_json::json!({"k": "v"})));
        assert_eq!(
            text,
            "POST /p HTTP/1.1\r\nHost: h:1\r\nAuthorization: Bearer tok\r\n\
             Content-Type: application/json\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{\"k\":\"v\"}"
        );
        let get = request_text("h:1", "GET", "/", None, None);
        assert_eq!(get, "GET / HTTP/1.1\r\nHost: h:1\r\nConnection: close\r\n\r\n");
        assert_eq!(
            with_header(&get, "X-Id", "7"),
            "GET / HTTP/1.1\r\nX-Id: 7\r\nHost: h:1\r\nConnection: close\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn nobody_listening_is_an_error_naming_address_and_request() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = listener.local_addr().expect("bound").to_string();
        drop(listener);
        let err = get(&addr, "/x", None).await.expect_err("nothing listens");
        let text = err.to_string();
        assert!(text.contains(&addr) && text.contains("GET /x HTTP/1.1"), "{text}");
    }
}
