//! Speech providers behind traits, chosen in config: speech-to-text ([`stt`]), the responder
//! that decides what to say ([`llm`], with the built-in [`rules`] engine), and text-to-speech
//! ([`tts`]), plus [`audio`] conversion. Nothing here knows about Asterisk or the store.
//!
//! The streaming path adds [`vad`] (voice activity detection per frame), [`stt_stream`]
//! (Deepgram live, and utterances posted the moment a turn ends with speculative transcription
//! at the short pause), [`tts_stream`] (audio read as providers produce it) and
//! [`audio::StreamResampler`] (resampling chunk by chunk).
//!
//! Every HTTP call has a timeout and is retried on 429, 5xx, timeouts and connection errors with
//! exponential backoff and jitter, within a deadline the caller sets (the turn's budget).

use std::time::Duration;

use tokio::time::Instant;

pub mod audio;
pub mod llm;
pub mod rules;
pub mod sse;
pub mod stt;
pub mod stt_stream;
pub mod tts;
pub mod tts_stream;
pub mod vad;

/// A boxed future, for provider traits used as trait objects: the `futures` crate's own, so
/// every module that needs one names the same type without borrowing it from here.
pub use futures_util::future::BoxFuture;

/// Why a provider call failed. Messages never include API keys.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpeechError {
    #[error("{provider}: no answer within {after:?}")]
    Timeout { provider: &'static str, after: Duration },
    #[error("{provider}: HTTP {status}: {message}")]
    Http { provider: &'static str, status: u16, message: String },
    #[error("{provider}: cannot reach the service: {message}")]
    Unreachable { provider: &'static str, message: String },
    #[error("{provider}: unexpected answer: {message}")]
    Invalid { provider: &'static str, message: String },
    #[error("{provider}: {message}")]
    Failed { provider: &'static str, message: String },
}

impl SpeechError {
    /// Worth trying again: rate limits, server errors, timeouts, connection failures.
    pub fn retryable(&self) -> bool {
        match self {
            SpeechError::Timeout { .. } | SpeechError::Unreachable { .. } => true,
            SpeechError::Http { status, .. } => *status == 429 || *status == 408 || *status >= 500,
            SpeechError::Invalid { .. } | SpeechError::Failed { .. } => false,
        }
    }

    pub fn provider(&self) -> &'static str {
        match self {
            SpeechError::Timeout { provider, .. }
            | SpeechError::Http { provider, .. }
            | SpeechError::Unreachable { provider, .. }
            | SpeechError::Invalid { provider, .. }
            | SpeechError::Failed { provider, .. } => provider,
        }
    }
}

/// Timeouts and retries of one provider.
#[derive(Debug, Clone, Copy)]
pub struct HttpPolicy {
    /// Time allowed for one request.
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
    /// Wait before the first retry; it doubles each time.
    pub backoff: Duration,
}

impl Default for HttpPolicy {
    fn default() -> Self {
        HttpPolicy { timeout: Duration::from_secs(10), retries: 2, backoff: Duration::from_millis(250) }
    }
}

/// The HTTP client every provider shares: rustls, connection pooling, no global timeout (each
/// request sets its own).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("asterai/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .expect("building the HTTP client")
}

/// The error message of a failed response, from the usual JSON shapes, else the text.
async fn error_message(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    let message = json.as_ref().and_then(|j| {
        j["error"]["message"]
            .as_str()
            .or_else(|| j["error"].as_str())
            .or_else(|| j["detail"]["message"].as_str())
            .or_else(|| j["detail"].as_str())
            .or_else(|| j["err_msg"].as_str())
            .or_else(|| j["message"].as_str())
            .map(str::to_owned)
    });
    let message = message.unwrap_or(text);
    let mut message = message.trim().replace('\n', " ");
    if message.len() > 300 {
        let mut cut = 300;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    message
}

/// Sends a request built by `build`, retrying what is retryable until it succeeds, the retries
/// are spent, or `deadline` would pass. Returns the successful response.
pub async fn send(
    provider: &'static str,
    policy: HttpPolicy,
    deadline: Instant,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, SpeechError> {
    let mut attempt = 0;
    let mut backoff = policy.backoff;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(SpeechError::Timeout { provider, after: policy.timeout });
        }
        let timeout = policy.timeout.min(left);
        let started = Instant::now();
        let result = match tokio::time::timeout(timeout, build().timeout(timeout).send()).await {
            Err(_) => Err(SpeechError::Timeout { provider, after: timeout }),
            Ok(Err(e)) if e.is_timeout() => Err(SpeechError::Timeout { provider, after: timeout }),
            Ok(Err(e)) => Err(SpeechError::Unreachable { provider, message: without_url(&e) }),
            Ok(Ok(response)) if response.status().is_success() => Ok(response),
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                if let Some(wait) = retry_after {
                    backoff = backoff.max(wait.min(Duration::from_secs(10)));
                }
                Err(SpeechError::Http { provider, status, message: error_message(response).await })
            }
        };
        metrics::histogram!("asterai_provider_request_duration_seconds", "provider" => provider)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("asterai_provider_requests_total", "provider" => provider).increment(1);
        match result {
            Ok(response) => return Ok(response),
            Err(error) => {
                metrics::counter!("asterai_provider_errors_total", "provider" => provider).increment(1);
                let jitter = Duration::from_millis(rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1));
                let wait = backoff + jitter;
                if !error.retryable() || attempt >= policy.retries || Instant::now() + wait >= deadline {
                    return Err(error);
                }
                tracing::debug!(provider, attempt, "provider request failed, retrying in {wait:?}: {error}");
                tokio::time::sleep(wait).await;
                attempt += 1;
                backoff *= 2;
            }
        }
    }
}

/// A transport error without the URL (which may carry a key in its query string).
fn without_url(error: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut message = if error.is_connect() { "connection failed".to_owned() } else { "request failed".to_owned() };
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    message
}
