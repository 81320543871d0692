//! The server side of the WebSocket handshake (RFC 6455 §4.2) for the routes that upgrade: the
//! live feed (`GET /v1/feed`) and listening to a call (`GET /v1/calls/{id}/listen`).
//!
//! A route checks the request with [`accept`] before anything else, answers `101 Switching
//! Protocols` with the value it returns, and speaks WebSocket over hyper's upgraded connection
//! with tokio-tungstenite (`WebSocketStream::from_raw_socket`). The check is ours rather than
//! axum's `ws` extractor so that a request that is not an upgrade gets this API's JSON error
//! (426 `upgrade_required`, naming what is missing), and so that the feed can watch its socket
//! under tungstenite (see [`crate::feed::subscriber`]).

use axum::http::{HeaderMap, HeaderValue, header};

/// Why an upgrade request is not a WebSocket handshake.
#[derive(Debug, thiserror::Error)]
#[error("not a WebSocket upgrade: {0}")]
pub struct NotAnUpgrade(pub &'static str);

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks an HTTP/1.1 upgrade request and returns the `Sec-WebSocket-Accept` value to answer with.
pub fn accept(headers: &HeaderMap) -> Result<HeaderValue, NotAnUpgrade> {
    if !header_has(headers, header::CONNECTION, "upgrade") {
        return Err(NotAnUpgrade("expected `Connection: upgrade`"));
    }
    if !header_has(headers, header::UPGRADE, "websocket") {
        return Err(NotAnUpgrade("expected `Upgrade: websocket`"));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) != Some("13") {
        return Err(NotAnUpgrade("expected `Sec-WebSocket-Version: 13`"));
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or(NotAnUpgrade("missing Sec-WebSocket-Key"))?;
    let value = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    HeaderValue::from_str(&value).map_err(|_| NotAnUpgrade("unusable Sec-WebSocket-Key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_from_the_rfc() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        headers.insert(header::UPGRADE, "websocket".parse().unwrap());
        headers.insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        headers.insert(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap());
        assert_eq!(accept(&headers).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        headers.insert(header::SEC_WEBSOCKET_VERSION, "8".parse().unwrap());
        assert!(accept(&headers).unwrap_err().to_string().contains("Version: 13"));
        headers.insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        headers.remove(header::SEC_WEBSOCKET_KEY);
        assert!(accept(&headers).is_err());
        headers.remove(header::UPGRADE);
        assert!(accept(&headers).unwrap_err().to_string().contains("Upgrade: websocket"));
    }
}
