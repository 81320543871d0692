//! The supervisors' live-monitor page: an HTML page served from `/`, and its ES modules and style
//! sheet from `/ui/` (see [`FILES`]), all embedded in the binary: no build step, no framework, no
//! chart library (the few bar charts are SVG drawn by `charts.js`).
//!
//! The page holds no secret of its own. The supervisor pastes a token, which the page keeps in
//! the browser's session storage and sends only back to this daemon (REST with
//! `Authorization: Bearer`, the feed with `?token=`). The Content-Security-Policy keeps it that
//! way: scripts, styles and connections are limited to this origin.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::ApiError;

const INDEX: &str = include_str!("monitor/index.html");

const JS: &str = "text/javascript; charset=utf-8";

/// The page's other files, served under `/ui/`: ES modules (`app.js` imports the others) and
/// the style sheet. A fixed list: nothing else of the binary or the disk can be named.
const FILES: &[(&str, &str, &str)] = &[
    ("app.js", include_str!("monitor/app.js"), JS),
    ("api.js", include_str!("monitor/api.js"), JS),
    ("format.js", include_str!("monitor/format.js"), JS),
    ("charts.js", include_str!("monitor/charts.js"), JS),
    ("dashboard.js", include_str!("monitor/dashboard.js"), JS),
    ("console.js", include_str!("monitor/console.js"), JS),
    ("listen-worklet.js", include_str!("monitor/listen-worklet.js"), JS),
    ("barge-worklet.js", include_str!("monitor/barge-worklet.js"), JS),
    ("monitor.css", include_str!("monitor/monitor.css"), "text/css; charset=utf-8"),
];

/// Same-origin only. `connect-src 'self'` covers the feed's WebSocket to this host and port:
/// CSP Level 3 matches `ws:`/`wss:` against `'self'` (Chromium since 2017, Firefox and Safari
/// too; `tests/monitor.rs` checks it in Chromium). No other host, and no blanket `ws:`.
/// `media-src blob:`: a call's recording is fetched with the token in a header and played from
/// a `blob:` URL (its route never takes `?token=`, so an `<audio src>` could not load it).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The names [`asset`] serves.
pub fn file_names() -> Vec<&'static str> {
    FILES.iter().map(|(name, _, _)| *name).collect()
}

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

/// `GET /ui/{file}`: one of [`FILES`], or 404.
pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    FILES
        .iter()
        .find(|(file, _, _)| *file == name)
        .map(|(_, body, content_type)| file(body, content_type))
        .ok_or_else(|| ApiError::not_found(format!("no file {name:?} in the monitor page")))
}
