//! The tools that report back to the model: an agent's HTTP tools, and the built-in
//! `schedule_callback` and `send_dtmf` (see [`super::core`], which runs them between two
//! requests of a turn and feeds their results to the model).
//!
//! **HTTP tools.** The model's arguments are checked against the tool's JSON Schema
//! ([`crate::agent::schema`]) before anything is sent: arguments that do not fit give the model
//! an error result, and the tool is not called. Then asterai sends
//!
//! ```text
//! POST <url>
//! Content-Type: application/json
//! X-Asterai-Timestamp: 1764583200
//! X-Asterai-Signature: v1=<hex HMAC-SHA-256(signing secret, "1764583200." + body)>
//! Idempotency-Key: <call id>:<tool call id>
//! X-Asterai-Call-Id: <call id>
//!
//! {"tool": "lookup_order", "call_id": "…", "tool_call_id": "call_…", "arguments": {…}}
//! ```
//!
//! A receiver recomputes the signature over the timestamp, a `.` and the raw body, compares in
//! constant time, and refuses timestamps more than a few minutes old (replays). The idempotency
//! key is the same for every delivery of one tool call, and asterai never sends a tool call
//! twice (no retries), so a receiver that keeps the keys it has seen applies an effect at most
//! once. Redirects are not followed (the signature and headers would go elsewhere).
//!
//! The answer's JSON (2xx) is the result the model reads; a non-JSON answer is given as
//! `{"text": …}`. An error status, a timeout, or a tool that cannot be reached gives the model
//! `{"error": …}` and the call goes on.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use crate::agent::{HTTP_TOOL_TIMEOUT, HttpToolSpec};
use crate::dialer::campaign::CallingWindow;
use crate::types::Secret;

pub use crate::signing::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
/// `<call id>:<tool call id>`: the same for every delivery of one tool call.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// The call the tool is called for.
pub const CALL_ID_HEADER: &str = "x-asterai-call-id";
/// The longest answer read from a tool; a longer one is an error (the model's context is small).
pub const MAX_ANSWER: usize = 64 * 1024;

/// The HTTP client of tools: no redirects (a signed request goes where the agent says only).
pub fn tool_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("asterai/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("building the HTTP client")
}

/// An agent's HTTP tool, ready to call: its secrets resolved.
pub struct HttpTool {
    pub name: String,
    /// The JSON Schema the arguments are checked against.
    pub parameters: Value,
    url: reqwest::Url,
    method: reqwest::Method,
    timeout: Duration,
    headers: HeaderMap,
    secret: Secret,
    client: reqwest::Client,
}

impl std::fmt::Debug for HttpTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTool").field("name", &self.name).field("url", &self.url.as_str()).finish_non_exhaustive()
    }
}

impl HttpTool {
    /// The tool of a checked definition, its secret references read from `env`.
    pub fn new(
        key: &str,
        spec: &HttpToolSpec,
        client: reqwest::Client,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<HttpTool, String> {
        let url = reqwest::Url::parse(&spec.url).map_err(|e| format!("{key}.url: {e}"))?;
        let method = reqwest::Method::from_bytes(spec.method.as_bytes()).map_err(|e| format!("{key}.method: {e}"))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &spec.headers {
            let here = format!("{key}.headers.{name}");
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("{here}: {e}"))?;
            let mut value = if value.starts_with("env:") || value.starts_with("config:") {
                let secret = crate::agent::resolve_tool_secret(&here, value, env)?;
                HeaderValue::from_str(secret.expose())
                    .map_err(|_| format!("{here}: the secret is not a header value"))?
            } else {
                HeaderValue::from_str(value).map_err(|e| format!("{here}: {e}"))?
            };
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        let secret = crate::agent::resolve_tool_secret(&format!("{key}.signing_secret"), &spec.signing_secret, env)?;
        Ok(HttpTool {
            name: spec.name.clone(),
            parameters: spec.parameters.clone(),
            url,
            method,
            timeout: spec.timeout.unwrap_or(HTTP_TOOL_TIMEOUT).0,
            headers,
            secret,
            client,
        })
    }

    /// Calls the tool for tool call `tool_call_id` of call `call_id`; the result is what the
    /// model reads (the tool's JSON, or `{"error": …}`). Never fails: a failing tool is a result.
    pub async fn call(&self, call_id: &str, tool_call_id: &str, arguments: &Map<String, Value>) -> Value {
        let started = std::time::Instant::now();
        let (result, label) = self.send(call_id, tool_call_id, arguments).await;
        metrics::histogram!("asterai_tool_duration_seconds", "tool" => self.name.clone(), "result" => label)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn send(&self, call_id: &str, tool_call_id: &str, arguments: &Map<String, Value>) -> (Value, &'static str) {
        let args = Value::Object(arguments.clone());
        if let Err(e) = crate::agent::schema::validate(&self.parameters, &args) {
            tracing::info!(call_id, tool = %self.name, "the model's arguments do not fit the tool's schema: {e}");
            return (json!({"error": format!("invalid arguments, the tool was not called: {e}")}), "invalid_arguments");
        }
        let body = json!({"tool": self.name, "call_id": call_id, "tool_call_id": tool_call_id, "arguments": args});
        let body = body.to_string().into_bytes();
        let timestamp = Utc::now().timestamp();
        let [(timestamp_header, timestamp), (signature_header, signature)] =
            crate::signing::signed_headers(self.secret.expose().as_bytes(), timestamp, &body);
        let request = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(timestamp_header, timestamp)
            .header(signature_header, signature)
            .header(IDEMPOTENCY_HEADER, format!("{call_id}:{tool_call_id}"))
            .header(CALL_ID_HEADER, call_id)
            .body(body);
        let exchange = async {
            let mut response = request.send().await?;
            let status = response.status();
            let mut answer = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if answer.len() + chunk.len() > MAX_ANSWER {
                    return Ok((status, None));
                }
                answer.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>((status, Some(answer)))
        };
        let (status, answer) = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => {
                tracing::warn!(call_id, tool = %self.name, "the tool did not answer within {:?}", self.timeout);
                let error = format!("the tool did not answer within {} ms", self.timeout.as_millis());
                return (json!({"error": error}), "timeout");
            }
            Ok(Err(e)) => {
                let e = e.without_url();
                tracing::warn!(call_id, tool = %self.name, "the tool could not be reached: {e}");
                return (json!({"error": format!("the tool could not be reached: {e}")}), "unreachable");
            }
            Ok(Ok(exchange)) => exchange,
        };
        let Some(answer) = answer else {
            return (
                json!({"error": format!("the tool's answer is longer than {MAX_ANSWER} bytes")}),
                "invalid_answer",
            );
        };
        let content = match serde_json::from_slice::<Value>(&answer) {
            Ok(value) => value,
            Err(_) if answer.iter().all(u8::is_ascii_whitespace) => Value::Null,
            Err(_) => json!({"text": String::from_utf8_lossy(&answer).chars().take(4096).collect::<String>()}),
        };
        if !status.is_success() {
            tracing::warn!(call_id, tool = %self.name, status = status.as_u16(), "the tool answered with an error");
            let mut error = json!({"error": format!("the tool answered HTTP {}", status.as_u16())});
            if !content.is_null() {
                error["answer"] = content;
            }
            return (error, "http_error");
        }
        (if content.is_null() { json!({"ok": true}) } else { content }, "ok")
    }
}

/// The most days ahead a callback may be booked.
pub const MAX_CALLBACK_DAYS: i64 = 90;

/// When a callback the model asked for at local time `when` (`YYYY-MM-DD HH:MM`, or with a
/// `T`) in `tz` is booked: that instant, or the next opening of the calling `window` after it.
/// Returns the instant and whether it was moved. The error is for the model to read.
pub fn callback_time(
    when: &str,
    tz: Tz,
    window: &CallingWindow,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, bool), String> {
    let local_now = now.with_timezone(&tz).format("%Y-%m-%d %H:%M (%A)");
    let text = when.trim().replace('T', " ");
    let naive = NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S"))
        .map_err(|_| {
            format!("\"when\" must be a local date and time YYYY-MM-DD HH:MM; it is now {local_now} in {tz}")
        })?;
    let at = match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        // A time the clocks skip (a DST gap): an hour later exists.
        chrono::LocalResult::None => {
            match naive.checked_add_signed(chrono::Duration::hours(1)).map(|later| tz.from_local_datetime(&later)) {
                Some(chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _)) => t.with_timezone(&Utc),
                _ => return Err(format!("{text} does not exist in {tz}")),
            }
        }
    };
    if at <= now {
        return Err(format!("{text} has passed; it is now {local_now} in {tz}"));
    }
    if at > now + chrono::Duration::days(MAX_CALLBACK_DAYS) {
        return Err(format!("{text} is more than {MAX_CALLBACK_DAYS} days ahead; it is now {local_now} in {tz}"));
    }
    let booked = window.next_open(at, tz);
    Ok((booked, booked != at))
}

/// Whether `digits` can be sent as DTMF: 1 to 32 of `0-9 * # A-D`, and `w` (half a second's
/// pause). Nothing else can reach the channel (or an AGI line).
pub fn valid_dtmf(digits: &str) -> bool {
    (1..=32).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit() || b"*#ABCDw".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callback_is_booked_in_the_contacts_time_inside_the_window() {
        let settings = crate::dialer::campaign::CampaignSettings::from_json(
            &json!({"window": {"start": "09:00", "end": "18:00", "days": ["mon", "tue", "wed", "thu", "fri"]}}),
        )
        .unwrap();
        let window = settings.calling_window().unwrap();
        let tz: Tz = "Europe/Paris".parse().unwrap();
        // Tuesday 1 December 2026, 10:00 in Paris.
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
        let (at, moved) = callback_time("2026-12-02 15:30", tz, &window, now).unwrap();
        assert_eq!((at, moved), (Utc.with_ymd_and_hms(2026, 12, 2, 14, 30, 0).unwrap(), false));
        // Saturday evening: Monday's opening.
        let (at, moved) = callback_time("2026-12-05T19:00", tz, &window, now).unwrap();
        assert_eq!((at, moved), (Utc.with_ymd_and_hms(2026, 12, 7, 8, 0, 0).unwrap(), true));
        let e = callback_time("2026-11-30 10:00", tz, &window, now).unwrap_err();
        assert!(e.contains("has passed; it is now 2026-12-01 10:00 (Tuesday) in Europe/Paris"), "{e}");
        assert!(callback_time("tomorrow at 3", tz, &window, now).unwrap_err().contains("YYYY-MM-DD HH:MM"));
        assert!(callback_time("2027-06-01 10:00", tz, &window, now).unwrap_err().contains("90 days"));
    }

    #[test]
    fn dtmf_is_checked() {
        assert!(valid_dtmf("1w2#*D"));
        for bad in ["", "1 2", "1\r\nHANGUP", "\"", "x", &"1".repeat(33)] {
            assert!(!valid_dtmf(bad), "{bad:?}");
        }
    }
}
