//! The dashboard: one web page, served at `/`, from which a person signs in, runs instances,
//! watches their status change live and searches the event log.
//!
//! The page is plain HTML, CSS and JavaScript compiled into the binary with `include_str!`
//! (`iaas-platform/assets/`): no build step, no CDN, nothing fetched from another origin, so it
//! works offline. It holds no logic of its own on the server side: the browser calls the same
//! public JSON API every other client uses (`/v1/auth/*`, `/v1/instances`, `GET /v1/ws`,
//! `/v1/events`), so this module only serves files.
//!
//! Every response of this router carries [`SECURITY_HEADERS`]: a Content-Security-Policy that
//! allows scripts, styles, images and connections from this origin only (no inline script or
//! style, which is why the JavaScript is a file of its own), no framing, no MIME sniffing and no
//! referrer sent to other sites. No CORS header is sent, here or by any other router of the
//! platform: a page on another origin cannot read the API's answers.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// Path of the dashboard page.
pub const PAGE_PATH: &str = "/";
/// Path that redirects to the page (permanent redirect), for people who type it.
pub const ALIAS_PATH: &str = "/dashboard";
/// Path of the page's script.
pub const SCRIPT_PATH: &str = "/assets/dashboard.js";
/// Path of the page's stylesheet.
pub const STYLESHEET_PATH: &str = "/assets/dashboard.css";
/// Path of the page's icon.
pub const ICON_PATH: &str = "/assets/favicon.svg";

/// The Content-Security-Policy of every dashboard response: everything from this origin only,
/// nothing inline, no plugins, no framing. `connect-src 'self'` also covers the WebSocket to
/// the same host (CSP level 3).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The headers set on every dashboard response, in addition to its content type.
pub const SECURITY_HEADERS: [(HeaderName, &str); 7] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
    (HeaderName::from_static("cross-origin-resource-policy"), "same-origin"),
    (
        HeaderName::from_static("permissions-policy"),
        "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    ),
];

/// One file of the page, as compiled into the binary.
struct Asset {
    content_type: &'static str,
    body: &'static str,
}

const PAGE: Asset =
    Asset { content_type: "text/html; charset=utf-8", body: include_str!("../assets/index.html") };
const SCRIPT: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_str!("../assets/dashboard.js"),
};
const STYLESHEET: Asset = Asset {
    content_type: "text/css; charset=utf-8",
    body: include_str!("../assets/dashboard.css"),
};
const ICON: Asset =
    Asset { content_type: "image/svg+xml", body: include_str!("../assets/favicon.svg") };

/// The router serving the page, its assets and the `/dashboard` alias, every response with
/// [`SECURITY_HEADERS`].
pub fn router() -> Router {
    Router::new()
        .route(PAGE_PATH, get(|| serve(&PAGE)))
        .route(SCRIPT_PATH, get(|| serve(&SCRIPT)))
        .route(STYLESHEET_PATH, get(|| serve(&STYLESHEET)))
        .route(ICON_PATH, get(|| serve(&ICON)))
        .route(ALIAS_PATH, get(|| async { Redirect::permanent(PAGE_PATH) }))
        .layer(axum::middleware::map_response(with_security_headers))
}

async fn serve(asset: &'static Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            // The files change with the binary; revalidating keeps an upgrade from mixing an old
            // script with a new page.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        asset.body,
    )
        .into_response()
}

async fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_nothing_inline_and_no_framing() {
        assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self';"));
        assert!(CONTENT_SECURITY_POLICY.contains("default-src 'none'"));
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"), "{CONTENT_SECURITY_POLICY}");
        assert!(!CONTENT_SECURITY_POLICY.contains('*'), "{CONTENT_SECURITY_POLICY}");
    }

    #[test]
    fn the_page_loads_its_script_from_a_file_and_nothing_from_elsewhere() {
        let page = PAGE.body;
        assert!(page.contains(&format!("<script src=\"{SCRIPT_PATH}\" defer></script>")));
        assert_eq!(page.matches("<script").count(), 1, "one script tag, no inline script");
        assert!(!page.contains(" style="), "inline styles break the policy");
        for handler in [" onclick=", " onload=", " onsubmit=", " onerror=", " onchange="] {
            assert!(!page.contains(handler), "inline event handlers break the policy");
        }
        // The SVG namespace is a name, not a request.
        for text in [PAGE.body, SCRIPT.body, STYLESHEET.body] {
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"), "no external URL");
        }
    }

    #[test]
    fn every_element_the_script_names_is_on_the_page() {
        // `$('id')` throws when the page lacks the element; a renamed id would break the
        // dashboard only when that code path runs.
        let mut named = 0;
        for part in SCRIPT.body.split("$('").skip(1) {
            let Some((id, _)) = part.split_once("')") else { continue };
            assert!(PAGE.body.contains(&format!(" id=\"{id}\"")), "the page has no #{id}");
            named += 1;
        }
        assert!(named > 40, "only {named} element ids found: has `$` been renamed?");
    }

    #[test]
    fn the_script_never_writes_html_from_data() {
        // Everything the API returns is shown with textContent, so a hostile instance name or
        // event metadata cannot inject markup.
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
            assert!(!SCRIPT.body.contains(sink), "the script uses {sink}");
        }
    }
}
