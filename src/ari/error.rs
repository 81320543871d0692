//! [`AriError`]: why a request to Asterisk's REST interface failed, with Asterisk's own words.
//!
//! Asterisk's error bodies are not always JSON (see `fixtures/asterisk/ari`): most are
//! `{"message": "…"}`, an unknown channel technology gives `{"error": "Allocation failed"}`, and
//! some 400s are an HTML page. [`AriError::from_response`] keeps the message in every case.

/// Longest message kept from an error body; an HTML page or a proxy's error page can be large.
const MAX_MESSAGE: usize = 300;

/// A failed ARI request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AriError {
    /// 400: a missing or invalid parameter (`Invalid endpoint specified`).
    #[error("Asterisk refused the request (400 Bad Request): {0}")]
    BadRequest(String),
    /// 401 or 403: wrong `ari.username` / `ari.password`, or a read-only ARI user.
    #[error("Asterisk refused the credentials ({status}): {message}; check ari.username and ari.password")]
    Unauthorized { status: u16, message: String },
    /// 404: no such channel, recording, playback or resource.
    #[error("not found in Asterisk (404): {0}")]
    NotFound(String),
    /// 409: the resource is in the wrong state (`Channel not in Stasis application`, a
    /// duplicate channel id, a recording that exists).
    #[error("Asterisk refused the request (409 Conflict): {0}")]
    Conflict(String),
    /// 422: a parameter Asterisk understood but cannot use (an unknown recording format).
    #[error("Asterisk cannot process the request (422): {0}")]
    Unprocessable(String),
    /// 501: not implemented by this Asterisk.
    #[error("Asterisk does not implement this (501): {0}")]
    NotImplemented(String),
    /// 503 (or 502/504 from a proxy): Asterisk is starting, stopping or overloaded.
    #[error("Asterisk is unavailable ({status}): {message}")]
    Unavailable { status: u16, message: String },
    /// 500 and any other status.
    #[error("Asterisk failed the request ({status}): {message}")]
    Status { status: u16, message: String },
    /// No answer at all: connection refused, timeout, reset.
    #[error("cannot reach Asterisk's ARI at {url}: {message}")]
    Transport { url: String, message: String },
    /// A success whose body is not what ARI documents.
    #[error("unexpected answer from Asterisk for {what}: {message}")]
    Decode { what: String, message: String },
    /// A request asterai refused to send (an empty channel id, a bad argument).
    #[error("{0}")]
    Invalid(String),
}

impl AriError {
    /// Maps a non-success status and its body to the error, keeping Asterisk's message.
    pub fn from_response(status: u16, content_type: Option<&str>, body: &[u8]) -> AriError {
        let message = message_of(content_type, body).unwrap_or_else(|| reason(status).to_owned());
        match status {
            400 => AriError::BadRequest(message),
            401 | 403 => AriError::Unauthorized { status, message },
            404 => AriError::NotFound(message),
            409 => AriError::Conflict(message),
            422 => AriError::Unprocessable(message),
            501 => AriError::NotImplemented(message),
            502..=504 => AriError::Unavailable { status, message },
            _ => AriError::Status { status, message },
        }
    }

    /// The HTTP status Asterisk answered, when it answered.
    pub fn status(&self) -> Option<u16> {
        Some(match self {
            AriError::BadRequest(_) => 400,
            AriError::Unauthorized { status, .. } => *status,
            AriError::NotFound(_) => 404,
            AriError::Conflict(_) => 409,
            AriError::Unprocessable(_) => 422,
            AriError::NotImplemented(_) => 501,
            AriError::Unavailable { status, .. } | AriError::Status { status, .. } => *status,
            AriError::Transport { .. } | AriError::Decode { .. } | AriError::Invalid(_) => return None,
        })
    }

    /// Asterisk's message (or what went wrong), without the status.
    pub fn message(&self) -> &str {
        match self {
            AriError::BadRequest(m)
            | AriError::NotFound(m)
            | AriError::Conflict(m)
            | AriError::Unprocessable(m)
            | AriError::NotImplemented(m)
            | AriError::Invalid(m) => m,
            AriError::Unauthorized { message, .. }
            | AriError::Unavailable { message, .. }
            | AriError::Status { message, .. }
            | AriError::Transport { message, .. }
            | AriError::Decode { message, .. } => message,
        }
    }

    /// True when the request may succeed if sent again later: no answer, or Asterisk busy.
    pub fn is_transient(&self) -> bool {
        matches!(self, AriError::Transport { .. } | AriError::Unavailable { .. })
    }

    /// A short form for a call's `status_reason`: `400 Invalid endpoint specified`.
    pub fn reason(&self) -> String {
        match self.status() {
            Some(status) => format!("{status} {}", self.message()),
            None => self.message().to_owned(),
        }
    }
}

/// The standard reason phrase, for a body that says nothing.
fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "error",
    }
}

/// Asterisk's message from an error body: `message` or `error` of a JSON object, the text of
/// an HTML page's paragraphs (or its title), or the plain text itself.
fn message_of(content_type: Option<&str>, body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) {
        for key in ["message", "error"] {
            if let Some(value) = map.get(key).and_then(|v| v.as_str()).filter(|v| !v.trim().is_empty()) {
                return Some(clip(value.trim()));
            }
        }
        return Some(clip(text));
    }
    let html = content_type.is_some_and(|c| c.to_ascii_lowercase().contains("html")) || text.starts_with('<');
    if html {
        let paragraphs = elements(text, "p");
        let chosen = if paragraphs.is_empty() { elements(text, "title") } else { paragraphs };
        let joined = if chosen.is_empty() { strip_tags(text) } else { chosen.join(" ") };
        let joined = collapse(&joined);
        return (!joined.is_empty()).then(|| clip(&joined));
    }
    Some(clip(&collapse(text)))
}

/// The text inside every `<tag>…</tag>` (case-insensitive, tags inside removed).
fn elements(html: &str, tag: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let (open, close) = (format!("<{tag}"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(start) = lower[at..].find(&open).map(|i| i + at) {
        // `<p>` or `<p class=…>`, never `<pre>`.
        let after = start + open.len();
        if !matches!(lower.as_bytes().get(after), Some(b'>' | b' ' | b'\t' | b'\r' | b'\n')) {
            at = after;
            continue;
        }
        let Some(content) = lower[after..].find('>').map(|i| after + i + 1) else { break };
        let end = lower[content..].find(&close).map_or(lower.len(), |i| content + i);
        let text = collapse(&strip_tags(&html[content..end]));
        if !text.is_empty() {
            out.push(text);
        }
        at = end;
    }
    out
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&amp;", "&")
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn clip(text: &str) -> String {
    if text.chars().count() <= MAX_MESSAGE {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(MAX_MESSAGE).collect();
    clipped.push('…');
    clipped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_message_and_error_keys() {
        let e = AriError::from_response(
            409,
            Some("application/json"),
            br#"{"message":"Channel not in Stasis application"}"#,
        );
        assert_eq!(e, AriError::Conflict("Channel not in Stasis application".into()));
        let e = AriError::from_response(500, Some("application/json"), br#"{"error":"Allocation failed"}"#);
        assert_eq!(e.reason(), "500 Allocation failed");
        assert_eq!(e.status(), Some(500));
    }

    #[test]
    fn html_bodies_keep_the_paragraph() {
        let body = "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\r\n<html><head>\r\n<title>400 Bad Request</title>\r\n</head><body>\r\n<h1>Bad Request</h1>\r\n<p>HTTP request is missing param: [app]</p>\r\n<hr />\r\n<address>Asterisk/22.10.1</address>\r\n</body></html>\r\n";
        let e = AriError::from_response(400, Some("text/html"), body.as_bytes());
        assert_eq!(e, AriError::BadRequest("HTTP request is missing param: [app]".into()));
        let e = AriError::from_response(503, None, b"<html><title>Overloaded</title></html>");
        assert_eq!(e.message(), "Overloaded");
        assert!(e.is_transient());
    }

    #[test]
    fn plain_and_empty_bodies() {
        let e = AriError::from_response(409, Some("text/plain"), b"  Channel with given unique ID already exists\n");
        assert_eq!(e.message(), "Channel with given unique ID already exists");
        let e = AriError::from_response(500, None, b"");
        assert_eq!(e.reason(), "500 Internal Server Error");
        let e = AriError::from_response(401, None, b"\xff\xfe");
        assert!(matches!(e, AriError::Unauthorized { status: 401, .. }));
        let long = "x".repeat(1000);
        assert!(AriError::from_response(500, None, long.as_bytes()).message().chars().count() <= MAX_MESSAGE + 1);
    }
}
