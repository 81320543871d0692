//! Speech-to-text: a recording in, the caller's words out.
//!
//! * [`OpenAiStt`]: OpenAI-compatible `POST {url}/audio/transcriptions` (multipart `file`,
//!   `model`, `response_format=json`, optional `language`), answered `{"text": "…"}`. OpenAI,
//!   Groq and self-hosted Whisper servers speak it.
//! * [`DeepgramStt`]: Deepgram pre-recorded `POST {url}/listen?model=…&smart_format=true` with
//!   `Authorization: Token …` and the WAV as the body, answered
//!   `results.channels[0].alternatives[0].{transcript, confidence}`.
//! * [`ScriptedStt`]: **for the demo and tests only.** It hears nothing: it reads the transcript
//!   a simulated caller attached to the recording (`<recording>.txt` beside `<recording>.wav`).

use std::path::Path;

use bytes::Bytes;
use tokio::time::Instant;

use super::{BoxFuture, HttpPolicy, SpeechError, send};

/// The caller's words.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub text: String,
    /// The provider's confidence (0 to 1), when it gives one.
    pub confidence: Option<f64>,
}

/// One recording to transcribe.
pub struct SttRequest<'a> {
    /// The recording as an 8 kHz mono 16-bit WAV file.
    pub wav: Bytes,
    /// Where Asterisk wrote it, with its `.wav` extension.
    pub path: &'a Path,
    /// The give-up time (the turn's budget).
    pub deadline: Instant,
}

/// A speech-to-text provider.
pub trait SpeechToText: Send + Sync {
    /// The provider's name in logs, metrics and errors.
    fn name(&self) -> &'static str;
    fn transcribe<'a>(&'a self, request: SttRequest<'a>) -> BoxFuture<'a, Result<Transcript, SpeechError>>;
}

/// OpenAI-compatible transcriptions.
pub struct OpenAiStt {
    pub client: reqwest::Client,
    /// Base URL up to and including `/v1`.
    pub url: String,
    pub api_key: String,
    pub model: String,
    pub language: Option<String>,
    pub policy: HttpPolicy,
}

impl SpeechToText for OpenAiStt {
    fn name(&self) -> &'static str {
        "openai-stt"
    }

    fn transcribe<'a>(&'a self, request: SttRequest<'a>) -> BoxFuture<'a, Result<Transcript, SpeechError>> {
        Box::pin(async move {
            let url = format!("{}/audio/transcriptions", self.url.trim_end_matches('/'));
            let response = send(self.name(), self.policy, request.deadline, || {
                let file = reqwest::multipart::Part::bytes(request.wav.to_vec())
                    .file_name("audio.wav")
                    .mime_str("audio/wav")
                    .expect("a valid MIME type");
                let mut form = reqwest::multipart::Form::new()
                    .part("file", file)
                    .text("model", self.model.clone())
                    .text("response_format", "json");
                if let Some(language) = &self.language {
                    form = form.text("language", language.clone());
                }
                let builder = self.client.post(&url).multipart(form);
                if self.api_key.is_empty() { builder } else { builder.bearer_auth(&self.api_key) }
            })
            .await?;
            let body: serde_json::Value = response
                .json()
                .await
                .map_err(|e| SpeechError::Invalid { provider: self.name(), message: e.to_string() })?;
            let text = body["text"].as_str().ok_or_else(|| SpeechError::Invalid {
                provider: self.name(),
                message: "no \"text\" in the answer".into(),
            })?;
            Ok(Transcript { text: text.trim().to_owned(), confidence: None })
        })
    }
}

/// Deepgram pre-recorded transcription.
pub struct DeepgramStt {
    pub client: reqwest::Client,
    /// Base URL up to and including `/v1`.
    pub url: String,
    pub api_key: String,
    pub model: String,
    pub language: Option<String>,
    pub policy: HttpPolicy,
}

impl SpeechToText for DeepgramStt {
    fn name(&self) -> &'static str {
        "deepgram"
    }

    fn transcribe<'a>(&'a self, request: SttRequest<'a>) -> BoxFuture<'a, Result<Transcript, SpeechError>> {
        Box::pin(async move {
            let url = format!("{}/listen", self.url.trim_end_matches('/'));
            let mut query = vec![("model", self.model.clone()), ("smart_format", "true".to_owned())];
            if let Some(language) = &self.language {
                query.push(("language", language.clone()));
            }
            let response = send(self.name(), self.policy, request.deadline, || {
                self.client
                    .post(&url)
                    .query(&query)
                    .header(reqwest::header::AUTHORIZATION, format!("Token {}", self.api_key))
                    .header(reqwest::header::CONTENT_TYPE, "audio/wav")
                    .body(request.wav.clone())
            })
            .await?;
            let body: serde_json::Value = response
                .json()
                .await
                .map_err(|e| SpeechError::Invalid { provider: self.name(), message: e.to_string() })?;
            let best = &body["results"]["channels"][0]["alternatives"][0];
            let text = best["transcript"].as_str().ok_or_else(|| SpeechError::Invalid {
                provider: self.name(),
                message: "no results.channels[0].alternatives[0].transcript in the answer".into(),
            })?;
            Ok(Transcript { text: text.trim().to_owned(), confidence: best["confidence"].as_f64() })
        })
    }
}

/// Demo and test provider: returns the transcript a simulated caller attached to the recording.
pub struct ScriptedStt;

/// Where a simulated caller puts the words of a recording: `<recording>.txt`.
pub fn script_path(recording: &Path) -> std::path::PathBuf {
    recording.with_extension("txt")
}

impl SpeechToText for ScriptedStt {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn transcribe<'a>(&'a self, request: SttRequest<'a>) -> BoxFuture<'a, Result<Transcript, SpeechError>> {
        Box::pin(async move {
            let path = script_path(request.path);
            match tokio::fs::read_to_string(&path).await {
                Ok(text) => Ok(Transcript { text: text.trim().to_owned(), confidence: Some(1.0) }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Ok(Transcript { text: String::new(), confidence: None })
                }
                Err(e) => Err(SpeechError::Failed {
                    provider: self.name(),
                    message: format!("cannot read {}: {e}", path.display()),
                }),
            }
        })
    }
}
