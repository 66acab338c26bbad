//! What every request passes through on its way to a route, outermost first:
//!
//! 1. **Observation.** The request gets an id: a sane incoming `x-request-id` is kept (so a
//!    caller's or a proxy's id follows the request through our logs), anything else is replaced
//!    by a new UUIDv7. The id is echoed in the response and carried by the request's tracing span,
//!    so every log line of the request names it. Count and latency are recorded by route
//!    template (`/v1/instances/{id}`, never the raw path: ids would make a series per instance)
//!    and status. Credentials (`authorization`, `cookie`, `set-cookie`, ...) are marked sensitive
//!    so no `Debug` output can print them; the log line names the route, never the query string,
//!    which may carry a WebSocket's access token.
//! 2. **Body limit.** A declared `content-length` over the limit is refused before a byte is
//!    read; an undeclared (chunked) body is cut at the limit by the extractors, every router's
//!    reading it from the request's `iaas_core::BodyLimit` (and axum's from `DefaultBodyLimit`).
//!    Both answer 413. Whatever answered before the body was read to its end, the rest of the
//!    body is then read and discarded (at most [`DRAIN_MAX_BYTES`], for at most the request
//!    timeout) so that a client still uploading reads the answer instead of a connection reset:
//!    closing a socket with unread data in it makes the kernel reset the connection, and the
//!    reset throws away the answer the client had not read yet.
//! 3. **Timeout.** A request not answered within the limit is abandoned: 408 when the client
//!    had not even sent its whole body, 503 when we were the slow ones. A WebSocket upgrade is
//!    answered at once and the socket then lives on its own task, so the timeout never cuts a
//!    live-status connection.
//! 4. **JSON errors.** An error response that is not JSON already (an extractor's plain-text
//!    rejection, an empty 405) is rewritten to `{"error":{"code","message"}}`, so clients parse
//!    one error shape whatever produced it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use iaas_core::http::HttpError;
use tracing::Instrument;

use crate::config::Config;

mod drain;

/// The header carrying a request's id, in both directions.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest incoming request id kept.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Most bytes of a non-JSON error body kept as the JSON error's message.
const MAX_ERROR_BODY: usize = 8 * 1024;

/// Most bytes of a request body read and thrown away after the answer went out before the body
/// was read (see the module docs); a larger rest closes the connection.
pub(crate) const DRAIN_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// Headers whose values are credentials.
const SENSITIVE_HEADERS: [HeaderName; 4] =
    [header::AUTHORIZATION, header::PROXY_AUTHORIZATION, header::COOKIE, header::SET_COOKIE];

/// Bounds on one HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpLimits {
    /// Longest time from the request's arrival to its response (default 30 s); longer requests
    /// are answered 408 (the body had not arrived) or 503.
    pub request_timeout: Duration,
    /// Largest request body, bytes (default 64 KiB), for every route; larger ones are answered
    /// 413.
    pub body_limit: usize,
    /// Caps of the live-status sockets (`GET /v1/ws`): per user, in all.
    pub live: iaas_provisioning::LiveLimits,
}

impl HttpLimits {
    /// The default request timeout.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    /// The default body limit: 64 KiB, far above any request of the API (the largest is an
    /// Nginx site configuration) and small enough that a flood of them cannot exhaust memory.
    pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

    /// Limits with this timeout and body limit (and the default live-status caps).
    pub fn new(request_timeout: Duration, body_limit: usize) -> Self {
        Self { request_timeout, body_limit, live: iaas_provisioning::LiveLimits::default() }
    }

    /// The limits `config` sets (`request_timeout_secs`, `body_limit_bytes`,
    /// `live_sockets_per_user`, `live_sockets_total`, `live_session_check_secs`,
    /// `live_session_recheck_secs`).
    pub fn from_config(config: &Config) -> Self {
        let mut limits = Self::new(config.request_timeout, config.body_limit);
        limits.live.per_user = config.live_sockets_per_user;
        limits.live.total = config.live_sockets_total;
        limits.live.session_check = config.live_session_check;
        limits.live.session_recheck = config.live_session_recheck;
        limits
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self::new(Self::DEFAULT_REQUEST_TIMEOUT, Self::DEFAULT_BODY_LIMIT)
    }
}

/// `routes` with `GET /metrics` added (installing the process's Prometheus recorder if it is not
/// yet), behind the platform's HTTP layers: request ids, HTTP metrics, the body limit and the
/// timeout of `limits`, JSON error bodies. For services that assemble their own routes.
pub fn instrumented(routes: Router, limits: HttpLimits) -> Router {
    crate::telemetry::install();
    apply(routes.route("/metrics", axum::routing::get(crate::telemetry::metrics_endpoint)), limits)
}

/// The JSON 404 of every router of the platform and its services.
pub(crate) async fn not_found(uri: Uri) -> Response {
    HttpError::new(StatusCode::NOT_FOUND, "not_found", format!("no route for {}", uri.path()))
        .into_response()
}

/// `routes` behind the layers of this module.
pub(crate) fn apply(routes: Router, limits: HttpLimits) -> Router {
    // The last layer added runs first.
    routes
        .layer(middleware::from_fn_with_state(limits, guard))
        .layer(DefaultBodyLimit::max(limits.body_limit))
        .layer(middleware::from_fn(observe))
}

/// An error response in the platform's JSON shape.
pub(crate) fn error_response(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
) -> Response {
    HttpError::new(status, code, message).into_response()
}

async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = incoming_request_id(request.headers()).unwrap_or_else(new_request_id);
    hide_credentials(request.headers_mut());
    // Handlers (and anything they call) read the id the response will carry.
    request.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = method_label(request.method());
    let span = tracing::info_span!(
        "http_request",
        request_id = id.to_str().unwrap_or_default(),
        method,
        route = %route,
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    hide_credentials(response.headers_mut());
    response.headers_mut().insert(REQUEST_ID_HEADER, id);
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let labels = [
        metrics::Label::from_static_parts("method", method),
        metrics::Label::new("route", route.clone()),
        metrics::Label::new("status", status_label(response.status())),
    ];
    metrics::counter!("iaas_http_requests_total", labels.iter()).increment(1);
    metrics::histogram!("iaas_http_request_duration_seconds", labels.iter())
        .record(elapsed.as_secs_f64());
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    // Probes and scrapes arrive every few seconds: logged only when asked for (debug).
    let routine = matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics") && status < 400;
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, latency_ms, "request failed");
        } else if routine {
            tracing::debug!(status, latency_ms, "request");
        } else {
            tracing::info!(status, latency_ms, "request");
        }
    });
    response
}

async fn guard(State(limits): State<HttpLimits>, mut request: Request, next: Next) -> Response {
    // Every route's JSON extractor reads its limit from here: one setting for all of them.
    request.extensions_mut().insert(iaas_core::BodyLimit(limits.body_limit));
    let declared = declared_length(request.headers());
    if let Some(length) = declared
        && length > limits.body_limit as u64
    {
        // Read (and thrown away) while the answer goes out, so the client sees the answer.
        drain::discard_rest(request.into_body().into_data_stream(), limits.request_timeout);
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the request body has {length} bytes; at most {} are accepted",
                limits.body_limit
            ),
        );
    }
    if is_websocket_upgrade(request.headers()) {
        return into_json_error(next.run(request).await).await;
    }
    let has_body = declared.is_some_and(|length| length > 0)
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    // Whether the handler read the body to its end: tells a slow client from a slow server.
    let received = Arc::new(AtomicBool::new(!has_body));
    let request = if has_body {
        let (parts, body) = request.into_parts();
        let body = drain::Tracked::new(body, received.clone(), limits.request_timeout);
        Request::from_parts(parts, Body::from_stream(body))
    } else {
        request
    };
    match tokio::time::timeout(limits.request_timeout, next.run(request)).await {
        Ok(response) => into_json_error(response).await,
        Err(_) if !received.load(Ordering::Relaxed) => error_response(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request body did not arrive within {:?}", limits.request_timeout),
        ),
        Err(_) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request was not answered within {:?}", limits.request_timeout),
        ),
    }
}

/// `response`, or when it is an error without a JSON body, the same error as JSON: its text
/// becomes the message, its status names the code.
async fn into_json_error(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_ERROR_BODY).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(error) => {
            tracing::debug!(%error, "reading a plain-text error body");
            String::new()
        }
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    // The original headers (Allow of a 405, ...) kept, the body the shared JSON error.
    let rewritten = HttpError::new(status, code_of(status), message).into_response();
    let (json_parts, body) = rewritten.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(content_type) = json_parts.headers.get(header::CONTENT_TYPE) {
        parts.headers.insert(header::CONTENT_TYPE, content_type.clone());
    }
    Response::from_parts(parts, body)
}

/// `payload_too_large` for 413: the canonical reason in snake case.
fn code_of(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => reason
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .collect(),
        None => format!("http_{}", status.as_u16()),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
        })
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// The caller's request id when it is 1 to 128 characters of `A-Z a-z 0-9 - _ . :`: anything
/// else could forge log lines or blow up their size.
fn incoming_request_id(headers: &HeaderMap) -> Option<HeaderValue> {
    let value = headers.get(REQUEST_ID_HEADER)?;
    let bytes = value.as_bytes();
    let sane = !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    sane.then(|| value.clone())
}

fn new_request_id() -> HeaderValue {
    // A UUID's text is hex digits and dashes, always a valid header value.
    HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

fn hide_credentials(headers: &mut HeaderMap) {
    for (name, value) in headers.iter_mut() {
        if SENSITIVE_HEADERS.contains(name) {
            value.set_sensitive(true);
        }
    }
}

/// The status code as a label: the common ones without an allocation.
fn status_label(status: StatusCode) -> metrics::SharedString {
    match status.as_u16() {
        200 => metrics::SharedString::const_str("200"),
        201 => metrics::SharedString::const_str("201"),
        202 => metrics::SharedString::const_str("202"),
        204 => metrics::SharedString::const_str("204"),
        400 => metrics::SharedString::const_str("400"),
        401 => metrics::SharedString::const_str("401"),
        403 => metrics::SharedString::const_str("403"),
        404 => metrics::SharedString::const_str("404"),
        409 => metrics::SharedString::const_str("409"),
        422 => metrics::SharedString::const_str("422"),
        429 => metrics::SharedString::const_str("429"),
        503 => metrics::SharedString::const_str("503"),
        other => metrics::SharedString::from_owned(other.to_string()),
    }
}

/// The method as a metric label; unknown methods share one label so they cannot grow the
/// number of series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Bytes;
    use axum::extract::ws::WebSocketUpgrade;
    use axum::routing::{get, post};
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower::ServiceExt;

    use super::*;

    const LIMIT: usize = 1024;

    #[test]
    fn the_default_limits_are_the_declared_defaults_of_the_settings() {
        assert_eq!(HttpLimits::default(), HttpLimits::from_config(&Config::default()));
    }

    fn app(timeout: Duration) -> Router {
        let routes = Router::new()
            .route("/echo", post(|body: axum::Json<serde_json::Value>| async move { body }))
            .route("/items/{id}", get(|| async { "item" }))
            .route("/slow", get(std::future::pending::<&'static str>))
            .route(
                "/plain-error",
                get(|| async { (StatusCode::BAD_REQUEST, "the thing is wrong") }),
            )
            .route(
                "/headers",
                get(|headers: HeaderMap| async move {
                    let id = headers
                        .get(REQUEST_ID_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    format!("{id}\n{headers:?}")
                }),
            )
            .route(
                "/ws",
                get(|socket: WebSocketUpgrade| async move {
                    socket.on_upgrade(|mut socket| async move {
                        while let Some(Ok(message)) = socket.recv().await {
                            if socket.send(message).await.is_err() {
                                return;
                            }
                        }
                    })
                }),
            )
            .fallback(|| async { StatusCode::NOT_FOUND });
        apply(routes, HttpLimits::new(timeout, LIMIT))
    }

    async fn call(request: Request) -> (StatusCode, HeaderMap, String) {
        crate::telemetry::install();
        let response = app(Duration::from_millis(300)).oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.status, parts.headers, String::from_utf8(body.to_vec()).unwrap())
    }

    fn error_code(body: &str) -> String {
        let json: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("not a JSON error body ({e}): {body:?}"));
        assert!(json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{json}");
        json["error"]["code"].as_str().unwrap().to_owned()
    }

    async fn serve(router: Router) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    }

    #[tokio::test]
    async fn a_declared_body_over_the_limit_is_refused_with_413_json() {
        let request = Request::post("/echo")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, LIMIT + 1)
            .body(Body::from(vec![b' '; LIMIT + 1]))
            .unwrap();
        let (status, headers, body) = call(request).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error_code(&body), "payload_too_large");
        assert!(headers.contains_key(REQUEST_ID_HEADER), "errors carry the request id too");
    }

    #[tokio::test]
    async fn an_undeclared_body_over_the_limit_is_refused_with_413_json() {
        let chunks = (0..4).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; LIMIT / 2])));
        let request = Request::post("/echo")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap();
        let (status, _, body) = call(request).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(error_code(&body), "payload_too_large");
    }

    /// Sends `head` and then `body_len` bytes in 64 KiB writes, slowly, as a client on a slow
    /// link does, and only then reads the answer: every write must succeed (no reset) and the
    /// answer must be there.
    async fn upload_slowly(head: &str, body_len: usize, chunked: bool) -> String {
        let addr = serve(app(Duration::from_secs(10))).await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0;
        while sent < body_len {
            let n = chunk.len().min(body_len - sent);
            if chunked {
                stream.write_all(format!("{n:x}\r\n").as_bytes()).await.unwrap();
            }
            stream
                .write_all(&chunk[..n])
                .await
                .unwrap_or_else(|err| panic!("write after {sent} bytes failed: {err}"));
            if chunked {
                stream.write_all(b"\r\n").await.unwrap();
            }
            sent += n;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if chunked {
            stream.write_all(b"0\r\n\r\n").await.unwrap();
        }
        let mut response = Vec::new();
        let mut buffer = vec![0; 4096];
        while !String::from_utf8_lossy(&response).contains("}}") {
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
                .await
                .expect("an answer within 5 s")
                .unwrap_or_else(|err| panic!("reading the answer: {err}"));
            assert!(read > 0, "closed before the answer: {:?}", String::from_utf8_lossy(&response));
            response.extend_from_slice(&buffer[..read]);
        }
        String::from_utf8_lossy(&response).into_owned()
    }

    #[tokio::test]
    async fn a_client_still_uploading_a_declared_body_over_the_limit_reads_413_json() {
        const BODY: usize = 2 * 1024 * 1024;
        let head = format!(
            "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {BODY}\r\n\r\n"
        );
        let response = upload_slowly(&head, BODY, false).await;
        assert!(response.starts_with("HTTP/1.1 413"), "{response}");
        assert_eq!(error_code(response.split("\r\n\r\n").nth(1).unwrap()), "payload_too_large");
    }

    #[tokio::test]
    async fn a_client_that_goes_on_sending_past_the_drain_bound_is_cut_off() {
        // An attacker announcing 1 GiB and sending it: the rest is read only up to the bound,
        // then the connection is closed under it instead of being held open.
        let addr = serve(app(Duration::from_secs(10))).await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b' '; 64 * 1024];
        let mut sent: u64 = 0;
        let cut = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if stream.write_all(&chunk).await.is_err() {
                    return sent;
                }
                sent += chunk.len() as u64;
            }
        })
        .await
        .expect("the connection is closed within 30 s, not held open");
        assert!(cut > DRAIN_MAX_BYTES / 2, "cut off after {cut} bytes, before the bound");
        assert!(cut < 4 * DRAIN_MAX_BYTES, "still read after {cut} bytes");
    }

    #[tokio::test]
    async fn a_client_still_uploading_a_chunked_body_over_the_limit_reads_413_json() {
        let head = "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        let response = upload_slowly(head, 2 * 1024 * 1024, true).await;
        assert!(response.starts_with("HTTP/1.1 413"), "{response}");
        let body = response.split("\r\n\r\n").nth(1).unwrap();
        // A chunked answer: the JSON follows its first chunk-size line.
        let json = body.split_once("\r\n").map_or(body, |(_, rest)| rest);
        assert_eq!(error_code(json.trim_end_matches(|c| c != '}')), "payload_too_large");
    }

    #[tokio::test]
    async fn a_body_within_the_limit_reaches_the_handler() {
        let request = Request::post("/echo")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"name":"db"}"#))
            .unwrap();
        let (status, _, body) = call(request).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, r#"{"name":"db"}"#);
    }

    #[tokio::test]
    async fn a_slow_body_times_out_with_408_json() {
        let addr = serve(app(Duration::from_millis(300))).await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Ten bytes announced, three sent: the server waits for the rest until the timeout.
        let head = "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"a";
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut response = vec![0; 4096];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut response))
            .await
            .expect("the server answers within the timeout, not never")
            .unwrap();
        let response = String::from_utf8_lossy(&response[..read]).into_owned();
        assert!(response.starts_with("HTTP/1.1 408"), "{response}");
        let body = response.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(error_code(body), "request_timeout");
    }

    #[tokio::test]
    async fn a_slow_handler_times_out_with_503_json() {
        let (status, _, body) = call(Request::get("/slow").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error_code(&body), "timeout");
    }

    #[tokio::test]
    async fn a_websocket_outlives_the_request_timeout() {
        let addr = serve(app(Duration::from_millis(200))).await;
        let (mut socket, _) =
            tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap();
        // The scenario itself: the socket stays open well past the request timeout.
        tokio::time::sleep(Duration::from_millis(600)).await;
        socket.send(tokio_tungstenite::tungstenite::Message::text("still there?")).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("an echo within 5 s")
            .expect("the socket is open")
            .unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), "still there?");
    }

    #[tokio::test]
    async fn a_sane_request_id_is_echoed_and_seen_by_the_handler() {
        let request = Request::get("/headers")
            .header(REQUEST_ID_HEADER, "client-42.a:b_c")
            .body(Body::empty())
            .unwrap();
        let (status, headers, body) = call(request).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[REQUEST_ID_HEADER], "client-42.a:b_c");
        assert_eq!(body.lines().next(), Some("client-42.a:b_c"));
    }

    #[tokio::test]
    async fn a_missing_or_insane_request_id_is_replaced_by_a_new_one() {
        let long = "x".repeat(MAX_REQUEST_ID_LEN + 1);
        for incoming in [None, Some("has spaces and \"quotes\""), Some(long.as_str())] {
            let mut request = Request::get("/headers");
            if let Some(id) = incoming {
                request = request.header(REQUEST_ID_HEADER, id);
            }
            let (_, headers, body) = call(request.body(Body::empty()).unwrap()).await;
            let id = headers[REQUEST_ID_HEADER].to_str().unwrap();
            assert!(uuid::Uuid::parse_str(id).is_ok(), "{incoming:?} -> {id}");
            assert_eq!(body.lines().next(), Some(id), "the handler sees the id the client gets");
        }
        let (_, first, _) = call(Request::get("/headers").body(Body::empty()).unwrap()).await;
        let (_, second, _) = call(Request::get("/headers").body(Body::empty()).unwrap()).await;
        assert_ne!(first[REQUEST_ID_HEADER], second[REQUEST_ID_HEADER]);
    }

    #[tokio::test]
    async fn credentials_never_show_in_debug_output() {
        let request = Request::get("/headers")
            .header(header::AUTHORIZATION, "Bearer secret-token-value")
            .header(header::COOKIE, "session=secret-cookie-value")
            .body(Body::empty())
            .unwrap();
        let (status, _, body) = call(request).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("authorization"), "the header is there: {body}");
        assert!(!body.contains("secret-token-value"), "{body}");
        assert!(!body.contains("secret-cookie-value"), "{body}");
    }

    #[tokio::test]
    async fn plain_text_and_empty_errors_become_json() {
        let (status, _, body) =
            call(Request::get("/plain-error").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error_code(&body), "bad_request");
        assert!(body.contains("the thing is wrong"), "{body}");
        let (status, headers, body) =
            call(Request::delete("/items/1").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(error_code(&body), "method_not_allowed");
        assert!(headers.contains_key(header::ALLOW), "other headers are kept");
    }

    #[tokio::test]
    async fn http_metrics_are_labelled_by_route_template_and_status() {
        call(Request::get("/items/8f3c").body(Body::empty()).unwrap()).await;
        call(Request::get("/no/such/thing/8f3c").body(Body::empty()).unwrap()).await;
        let text = crate::telemetry::install().render();
        assert!(
            text.contains(
                r#"iaas_http_requests_total{method="GET",route="/items/{id}",status="200"}"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"iaas_http_requests_total{method="GET",route="unmatched",status="404"}"#
            ),
            "{text}"
        );
        assert!(!text.contains("8f3c"), "raw paths never become labels");
        assert!(
            text.contains(r#"iaas_http_request_duration_seconds_bucket{method="GET",route="/items/{id}",status="200",le="0.01"}"#),
            "{text}"
        );
    }
}
