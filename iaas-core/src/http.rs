//! The HTTP contract every router of the workspace shares (feature `http`): one error body,
//! one response built from it, one JSON body extractor, and serving an OpenAPI document.
//!
//! Every error a route answers is `{"error": {"code", "message", ...}}`: a stable
//! machine-readable `code`, a message safe to show (never internal detail), and sometimes more
//! fields naming what was wrong (the quota that was exceeded, say). [`HttpError`] is that
//! answer; each crate maps its own error type onto it in one place.
//!
//! ```
//! use axum::http::StatusCode;
//! use axum::response::IntoResponse;
//! use iaas_core::http::HttpError;
//!
//! let response = HttpError::new(StatusCode::CONFLICT, "conflict", "the name is taken")
//!     .with_field("field", serde_json::json!("name"))
//!     .into_response();
//! assert_eq!(response.status(), StatusCode::CONFLICT);
//! ```

use axum::Router;
use axum::body::HttpBody as _;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::BodyLimit;

/// The body limit of a [`JsonBody`] when the server sets no [`BodyLimit`]: 64 KiB, ample for
/// every request body of the API.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `not_found`, `unavailable`, `invalid_request`, ...
    pub code: String,
    /// For people; never internal detail.
    pub message: String,
    /// Further fields of some codes (say `field` for a validation error).
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// An error answer: a status, an [`ErrorBody`] and optional headers (`Retry-After`, ...).
#[derive(Debug, Clone)]
pub struct HttpError {
    status: StatusCode,
    body: ErrorBody,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl HttpError {
    /// `status` with `{"error": {"code": code, "message": message}}`.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        let error = ErrorDetail {
            code: code.into(),
            message: message.into(),
            fields: serde_json::Map::new(),
        };
        Self { status, body: ErrorBody { error }, headers: Vec::new() }
    }

    /// Adds a field to the `error` object (`code` and `message` cannot be replaced).
    #[must_use]
    pub fn with_field(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        let key = key.into();
        if key != "code" && key != "message" {
            self.body.error.fields.insert(key, value);
        }
        self
    }

    /// Adds a response header.
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds `Retry-After: seconds`.
    #[must_use]
    pub fn with_retry_after(self, seconds: u64) -> Self {
        self.with_header(header::RETRY_AFTER, HeaderValue::from(seconds))
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body.
    pub fn body(&self) -> &ErrorBody {
        &self.body
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

/// A JSON request body: `Content-Type: application/json` (else 415
/// `unsupported_media_type`), at most the request's [`BodyLimit`] or [`DEFAULT_BODY_LIMIT`]
/// bytes whether or not it declares a length (else 413 `payload_too_large`), a JSON object
/// parsed into `T` (else 400 `invalid_request` with serde's reason).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, HttpError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .unwrap_or_default();
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            let shown: String = content_type.chars().take(64).collect();
            return Err(HttpError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("expected application/json, got {shown:?}"),
            ));
        }
        let limit = request
            .extensions()
            .get::<BodyLimit>()
            .map_or(DEFAULT_BODY_LIMIT, |BodyLimit(limit)| *limit);
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<usize>().ok());
        if declared.is_some_and(|length| length > limit) {
            return Err(too_large(limit));
        }
        let bytes = read_body(request.into_body(), limit).await?;
        // serde reads a struct from an array of its fields' values too; a body is an object.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|&b| b != b'{') {
            return Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "invalid JSON body: expected a JSON object",
            ));
        }
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|error| {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("invalid JSON body: {error}"),
            )
        })
    }
}

fn too_large(limit: usize) -> HttpError {
    HttpError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("bodies are limited to {limit} bytes"),
    )
}

/// The body's bytes, refused past `limit` (bodies without a declared length included).
async fn read_body(mut body: axum::body::Body, limit: usize) -> Result<Vec<u8>, HttpError> {
    let mut bytes = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let frame = frame.map_err(|_| {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the request body could not be read",
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if bytes.len().saturating_add(data.len()) > limit {
                return Err(too_large(limit));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// A router answering `GET path` with `document` (an OpenAPI document's JSON text) as
/// `application/json`, without authentication; it needs no state, so it merges into any
/// router.
pub fn openapi_router<S: Clone + Send + Sync + 'static>(
    path: &'static str,
    document: &'static str,
) -> Router<S> {
    Router::new().route(
        path,
        get(move || async move { ([(header::CONTENT_TYPE, "application/json")], document) }),
    )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::post;
    use tower::ServiceExt;

    use super::*;

    async fn answer(router: Router, request: Request) -> (StatusCode, serde_json::Value) {
        let response = router.oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("a body");
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    fn echo() -> Router {
        Router::new().route(
            "/",
            post(|JsonBody(value): JsonBody<serde_json::Value>| async move { axum::Json(value) }),
        )
    }

    fn json_request(body: impl Into<Body>, limit: Option<usize>) -> Request {
        let mut request = Request::post("/")
            .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
            .body(body.into())
            .expect("a valid request");
        if let Some(limit) = limit {
            request.extensions_mut().insert(BodyLimit(limit));
        }
        request
    }

    #[tokio::test]
    async fn a_body_at_the_limit_is_read_and_one_byte_over_is_413() {
        let at_limit = format!("{{\"a\":\"{}\"}}", "x".repeat(92));
        assert_eq!(at_limit.len(), 100);
        let (status, body) = answer(echo(), json_request(at_limit.clone(), Some(100))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let over = format!("{{\"a\":\"{}\"}}", "x".repeat(93));
        let (status, body) = answer(echo(), json_request(over.clone(), Some(100))).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
        );
        // The same without a declared length (a streamed body).
        let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(over.into_bytes())]);
        let (status, _) = answer(echo(), json_request(Body::from_stream(stream), Some(100))).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn wrong_media_type_and_bad_json_are_clear_4xx_errors() {
        let request = Request::post("/").body(Body::from("{}")).expect("a valid request");
        let (status, body) = answer(echo(), request).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(body["error"]["code"], "unsupported_media_type");
        let (status, body) = answer(echo(), json_request("{", None)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "invalid_request");
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.starts_with("invalid JSON")));
        // A body is an object: serde would read a struct from an array of its fields' values.
        for not_an_object in [" [3]", "3", "\"x\"", "null"] {
            let (status, body) = answer(echo(), json_request(not_an_object, None)).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (StatusCode::BAD_REQUEST, Some("invalid_request")),
                "{not_an_object}"
            );
        }
    }

    #[tokio::test]
    async fn an_error_carries_its_fields_and_headers_but_never_loses_code_or_message() {
        let router = Router::new().route(
            "/",
            get(|| async {
                HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "retry later")
                    .with_field("backend", serde_json::json!("redis"))
                    .with_field("code", serde_json::json!("overwritten"))
                    .with_retry_after(2)
            }),
        );
        let request = Request::get("/").body(Body::empty()).expect("a valid request");
        let response = router.oneshot(request).await.expect("infallible");
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("a body");
        let body: ErrorBody = serde_json::from_slice(&bytes).expect("an error body");
        assert_eq!(body.error.code, "unavailable");
        assert_eq!(body.error.message, "retry later");
        assert_eq!(body.error.fields["backend"], "redis");
    }

    #[tokio::test]
    async fn the_openapi_router_serves_the_document_as_json() {
        let router: Router = openapi_router("/v1/openapi/x.json", "{\"openapi\":\"3.1.0\"}");
        let request = Request::get("/v1/openapi/x.json").body(Body::empty()).expect("a request");
        let response = router.oneshot(request).await.expect("infallible");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("a body");
        assert_eq!(&bytes[..], b"{\"openapi\":\"3.1.0\"}");
    }
}
