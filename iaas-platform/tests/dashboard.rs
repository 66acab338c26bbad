//! The dashboard as a browser receives it: the page and its files with their content types and
//! security headers, and no CORS answer for another origin anywhere on the platform.
//!
//! The person-level test (sign in, create, see the status change live) is the headless-Chromium
//! run in `scripts/browser-test.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use iaas_platform::dashboard;
use iaas_testkit::http::{self, Response};
use tokio::net::TcpListener;

async fn send(addr: &str, request: &str) -> Response {
    http::send(addr, request.as_bytes()).await.unwrap()
}

async fn get(addr: &str, path: &str) -> Response {
    http::get(addr, path, None).await.unwrap()
}

/// The dashboard router alone, on a free loopback port.
async fn serve_dashboard() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, dashboard::router()).await.unwrap() });
    addr
}

fn assert_security_headers(answer: &Response, path: &str) {
    assert_eq!(
        answer.header("content-security-policy"),
        Some(dashboard::CONTENT_SECURITY_POLICY),
        "{path}"
    );
    assert_eq!(answer.header("x-content-type-options"), Some("nosniff"), "{path}");
    assert_eq!(answer.header("x-frame-options"), Some("DENY"), "{path}");
    assert_eq!(answer.header("referrer-policy"), Some("no-referrer"), "{path}");
    assert_eq!(answer.header("access-control-allow-origin"), None, "{path}");
}

#[tokio::test]
async fn the_page_is_served_with_strict_security_headers() {
    let addr = serve_dashboard().await;
    let page = get(&addr, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert_security_headers(&page, "/");
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    // The page finds its script, styles and form controls where the browser test expects them.
    assert!(page.body.contains(r#"<script src="/assets/dashboard.js" defer></script>"#));
    assert!(page.body.contains(r#"<link rel="stylesheet" href="/assets/dashboard.css">"#));
    for label in ["Username", "Password", "Name", "Kind", "Image", "Instance", "Action", "Text"] {
        assert!(page.body.contains(&format!(">{label}</label>")), "no label {label}");
    }
}

#[tokio::test]
async fn the_script_stylesheet_and_icon_have_their_content_types() {
    let addr = serve_dashboard().await;
    for (path, content_type, sample) in [
        (dashboard::SCRIPT_PATH, "text/javascript; charset=utf-8", "new WebSocket("),
        (dashboard::STYLESHEET_PATH, "text/css; charset=utf-8", ".status-running"),
        (dashboard::ICON_PATH, "image/svg+xml", "<svg"),
    ] {
        let answer = get(&addr, path).await;
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.header("content-type"), Some(content_type), "{path}");
        assert_security_headers(&answer, path);
        assert!(answer.body.contains(sample), "{path} does not contain {sample:?}");
    }
}

#[tokio::test]
async fn the_dashboard_path_redirects_to_the_page() {
    let addr = serve_dashboard().await;
    let answer = get(&addr, "/dashboard").await;
    assert_eq!(answer.status, 308);
    assert_eq!(answer.header("location"), Some("/"));
    assert_security_headers(&answer, "/dashboard");
}

#[tokio::test]
async fn the_platform_serves_the_dashboard_and_answers_no_other_origin() {
    let data_dir = iaas_testkit::isolation::temp_dir("iaas-dashboard");
    let mut running = common::start_binary(&data_dir).await;
    let addr = running.addr().to_owned();

    // Mounted by the platform, with its headers, beside the API.
    let page = get(&addr, "/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_security_headers(&page, "/");
    let script = get(&addr, dashboard::SCRIPT_PATH).await;
    assert_eq!(script.header("content-type"), Some("text/javascript; charset=utf-8"));

    // A page on another origin asking to call the API gets no CORS permission: the browser
    // then refuses to send the request or to show it the answer.
    for (path, method) in
        [("/v1/auth/login", "POST"), ("/v1/instances", "POST"), ("/v1/events", "GET"), ("/", "GET")]
    {
        let preflight = send(
            &addr,
            &format!(
                "OPTIONS {path} HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\n\
                 Access-Control-Request-Method: {method}\r\n\
                 Access-Control-Request-Headers: authorization, content-type\r\n\
                 Connection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(preflight.status >= 400, "{path}: preflight answered {}", preflight.status);
        for (name, _) in &preflight.headers {
            assert!(!name.starts_with("access-control-"), "{path}: preflight sent {name}");
        }
    }
    let cross_origin = send(
        &addr,
        &format!(
            "POST /v1/auth/login HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        ),
    )
    .await;
    assert_eq!(cross_origin.status, 400, "{}", cross_origin.body);
    assert_eq!(cross_origin.header("access-control-allow-origin"), None);

    running.child_mut().kill().await.unwrap();
    std::fs::remove_dir_all(&data_dir).unwrap();
}
