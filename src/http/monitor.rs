//! The supervisors' live-monitor page: three files embedded in the binary, served from `/`.
//!
//! The page holds no secret of its own. The supervisor pastes a token, which the page keeps in
//! the browser's session storage and sends only back to this daemon (REST with
//! `Authorization: Bearer`, the feed with `?token=`). The Content-Security-Policy keeps it that
//! way: scripts, styles and connections are limited to this origin.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("monitor/index.html");
const SCRIPT: &str = include_str!("monitor/monitor.js");
const STYLE: &str = include_str!("monitor/monitor.css");

/// Same-origin only. `connect-src 'self'` covers the feed's WebSocket to this host and port:
/// CSP Level 3 matches `ws:`/`wss:` against `'self'` (Chromium since 2017, Firefox and Safari
/// too; `tests/monitor.rs` checks it in Chromium). No other host, and no blanket `ws:`.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn file(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change only with the binary; revalidating is cheap and avoids a stale page
    // after an upgrade.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// `GET /`
pub async fn index() -> Response {
    file(INDEX, "text/html; charset=utf-8")
}

/// `GET /monitor.js`
pub async fn script() -> Response {
    file(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /monitor.css`
pub async fn style() -> Response {
    file(STYLE, "text/css; charset=utf-8")
}
