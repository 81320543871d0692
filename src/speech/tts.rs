//! Text-to-speech: text in, 8 kHz audio out, cached on disk.
//!
//! * [`OpenAiTts`]: OpenAI-compatible `POST {url}/audio/speech` with `{model, input, voice,
//!   response_format: "wav"}`; WAV at any rate or raw 16-bit PCM is converted.
//! * [`ElevenLabsTts`]: `POST {url}/text-to-speech/{voice_id}?output_format=pcm_8000` with
//!   `xi-api-key` and `{text, model_id}`; raw PCM at the telephone rate back, so nothing needs
//!   resampling.
//! * [`EspeakTts`]: the local `espeak-ng` program (the offline default). Text goes in on stdin,
//!   never on the command line.
//!
//! Providers hand back the audio as they received it ([`RawAudio`]). [`SpeechCache`] converts it to
//! Asterisk's format and puts a cache in front: each (provider, model, voice, text) is synthesized
//! once into `<media dir>/tts/<sha256>.wav`, which Asterisk plays by path. Keeping conversion out
//! of the providers lets the turn's latency breakdown tell the provider's time from asterai's.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{BoxFuture, HttpPolicy, SpeechError, audio, send};

/// Audio as a provider returned it: a WAV file (any rate or format), or raw 16-bit little-endian
/// mono PCM at `pcm_rate`.
#[derive(Debug, Clone)]
pub struct RawAudio {
    pub bytes: bytes::Bytes,
    /// The rate of raw PCM; ignored for WAV, which says its own.
    pub pcm_rate: u32,
}

impl RawAudio {
    /// 8 kHz mono 16-bit samples.
    pub fn decode(&self) -> Result<Vec<i16>, audio::AudioError> {
        audio::decode_any(&self.bytes, self.pcm_rate)
    }
}

/// A text-to-speech provider.
pub trait TextToSpeech: Send + Sync {
    fn name(&self) -> &'static str;
    /// What makes this provider's output differ (model, voice, speed): part of the cache key.
    fn variant(&self) -> String;
    /// Synthesizes `text`.
    fn synthesize<'a>(&'a self, text: &'a str, deadline: Instant) -> BoxFuture<'a, Result<RawAudio, SpeechError>>;
}

/// OpenAI-compatible speech.
pub struct OpenAiTts {
    pub client: reqwest::Client,
    /// Base URL up to and including `/v1`.
    pub url: String,
    pub api_key: String,
    pub model: String,
    pub voice: String,
    /// The rate of raw PCM answers (OpenAI's `pcm` is 24 kHz); WAV answers say their own rate.
    pub pcm_rate: u32,
    pub policy: HttpPolicy,
}

impl TextToSpeech for OpenAiTts {
    fn name(&self) -> &'static str {
        "openai-tts"
    }

    fn variant(&self) -> String {
        format!("{}|{}|{}", self.url, self.model, self.voice)
    }

    fn synthesize<'a>(&'a self, text: &'a str, deadline: Instant) -> BoxFuture<'a, Result<RawAudio, SpeechError>> {
        Box::pin(async move {
            let url = format!("{}/audio/speech", self.url.trim_end_matches('/'));
            let body =
                serde_json::json!({"model": self.model, "input": text, "voice": self.voice, "response_format": "wav"});
            let response = send(self.name(), self.policy, deadline, || {
                let builder = self.client.post(&url).json(&body);
                if self.api_key.is_empty() { builder } else { builder.bearer_auth(&self.api_key) }
            })
            .await?;
            let bytes = response
                .bytes()
                .await
                .map_err(|e| SpeechError::Unreachable { provider: self.name(), message: e.to_string() })?;
            Ok(RawAudio { bytes, pcm_rate: self.pcm_rate })
        })
    }
}

/// ElevenLabs text-to-speech.
pub struct ElevenLabsTts {
    pub client: reqwest::Client,
    /// Base URL up to and including `/v1`.
    pub url: String,
    pub api_key: String,
    pub model: String,
    /// The voice id.
    pub voice: String,
    pub policy: HttpPolicy,
}

impl TextToSpeech for ElevenLabsTts {
    fn name(&self) -> &'static str {
        "elevenlabs"
    }

    fn variant(&self) -> String {
        format!("{}|{}|{}", self.url, self.model, self.voice)
    }

    fn synthesize<'a>(&'a self, text: &'a str, deadline: Instant) -> BoxFuture<'a, Result<RawAudio, SpeechError>> {
        Box::pin(async move {
            let url = format!("{}/text-to-speech/{}", self.url.trim_end_matches('/'), self.voice);
            let body = serde_json::json!({"text": text, "model_id": self.model});
            let response = send(self.name(), self.policy, deadline, || {
                self.client
                    .post(&url)
                    .query(&[("output_format", "pcm_8000")])
                    .header("xi-api-key", &self.api_key)
                    .json(&body)
            })
            .await?;
            let bytes = response
                .bytes()
                .await
                .map_err(|e| SpeechError::Unreachable { provider: self.name(), message: e.to_string() })?;
            Ok(RawAudio { bytes, pcm_rate: audio::RATE })
        })
    }
}

/// The local `espeak-ng` program.
pub struct EspeakTts {
    /// The program to run (`espeak-ng`, or a path).
    pub program: String,
    /// An espeak-ng voice such as `en-us`.
    pub voice: String,
    /// Words per minute.
    pub speed: u32,
    pub timeout: Duration,
}

impl TextToSpeech for EspeakTts {
    fn name(&self) -> &'static str {
        "espeak-ng"
    }

    fn variant(&self) -> String {
        format!("{}|{}", self.voice, self.speed)
    }

    fn synthesize<'a>(&'a self, text: &'a str, deadline: Instant) -> BoxFuture<'a, Result<RawAudio, SpeechError>> {
        Box::pin(async move {
            let provider = self.name();
            let started = Instant::now();
            let mut child = tokio::process::Command::new(&self.program)
                .args(["--stdin", "--stdout", "-v", &self.voice, "-s", &self.speed.to_string()])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| SpeechError::Failed {
                    provider,
                    message: format!("cannot run {}: {e} (install the espeak-ng package)", self.program),
                })?;
            let mut stdin = child.stdin.take().expect("piped stdin");
            // espeak-ng reads stdin line by line; a newline ends the text.
            let input = format!("{}\n", text.replace(['\n', '\r'], " "));
            let work = async move {
                stdin.write_all(input.as_bytes()).await?;
                drop(stdin);
                child.wait_with_output().await
            };
            let limit = self.timeout.min(deadline.saturating_duration_since(Instant::now()));
            let output = match tokio::time::timeout(limit, work).await {
                Err(_) => return Err(SpeechError::Timeout { provider, after: limit }),
                Ok(Err(e)) => return Err(SpeechError::Failed { provider, message: e.to_string() }),
                Ok(Ok(output)) => output,
            };
            metrics::histogram!("asterai_provider_request_duration_seconds", "provider" => provider)
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("asterai_provider_requests_total", "provider" => provider).increment(1);
            if !output.status.success() {
                metrics::counter!("asterai_provider_errors_total", "provider" => provider).increment(1);
                let stderr = String::from_utf8_lossy(&output.stderr);
                return Err(SpeechError::Failed { provider, message: format!("{}: {}", output.status, stderr.trim()) });
            }
            Ok(RawAudio { bytes: output.stdout.into(), pcm_rate: 22050 })
        })
    }
}

/// A synthesized phrase on disk, ready for `STREAM FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spoken {
    /// The path without `.wav`, as Asterisk wants it.
    pub file: PathBuf,
    /// Its length.
    pub duration_ms: u64,
    /// True when it came from the cache.
    pub cached: bool,
    /// Time spent waiting for the provider (zero from the cache).
    pub provider_time: Duration,
}

/// A provider with an on-disk cache in front: each phrase is synthesized once, converted to
/// Asterisk's format and kept as a file Asterisk plays by path.
#[derive(Clone)]
pub struct SpeechCache {
    provider: Arc<dyn TextToSpeech>,
    dir: PathBuf,
}

impl SpeechCache {
    /// Caches into `<media_dir>/tts`.
    pub fn new(provider: Arc<dyn TextToSpeech>, media_dir: &Path) -> SpeechCache {
        SpeechCache { provider, dir: media_dir.join("tts") }
    }

    pub fn provider(&self) -> &dyn TextToSpeech {
        self.provider.as_ref()
    }

    /// Where `text` is (or will be) cached, without extension.
    pub fn path_for(&self, text: &str) -> PathBuf {
        let mut hash = Sha256::new();
        hash.update(self.provider.name().as_bytes());
        hash.update([0]);
        hash.update(self.provider.variant().as_bytes());
        hash.update([0]);
        hash.update(text.trim().as_bytes());
        let hex: String = hash.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
        self.dir.join(hex)
    }

    /// The cached phrase, if it was synthesized before.
    pub async fn cached(&self, text: &str) -> Option<Spoken> {
        let file = self.path_for(text);
        let wav = file.with_extension("wav");
        let meta = tokio::fs::metadata(&wav).await.ok()?;
        let samples = meta.len().saturating_sub(44) / 2;
        Some(Spoken {
            file,
            duration_ms: samples * 1000 / audio::RATE as u64,
            cached: true,
            provider_time: Duration::ZERO,
        })
    }

    /// The phrase as a playable file: from the cache, or synthesized and cached.
    pub async fn speak(&self, text: &str, deadline: Instant) -> Result<Spoken, SpeechError> {
        if let Some(spoken) = self.cached(text).await {
            metrics::counter!("asterai_tts_cache_hits_total").increment(1);
            return Ok(spoken);
        }
        let asked = Instant::now();
        let raw = self.provider.synthesize(text.trim(), deadline).await?;
        let provider_time = asked.elapsed();
        let provider = self.provider.name();
        let file = self.path_for(text);
        let wav = file.with_extension("wav");
        let dir = self.dir.clone();
        // Conversion and the file write run together on the blocking pool: resampling a sentence
        // is CPU work that must not hold up other calls' AGI traffic.
        let written = tokio::task::spawn_blocking(move || {
            let samples = raw.decode().map_err(|e| SpeechError::Invalid { provider, message: e.to_string() })?;
            // Written aside, then renamed: Asterisk never sees half a file, and two calls that
            // synthesize the same phrase at once both end with a whole one.
            let tmp = wav.with_extension(format!("tmp{}", rand::random::<u32>()));
            let write = || {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(&tmp, audio::encode_wav(&samples))?;
                std::fs::rename(&tmp, &wav)
            };
            write().map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                SpeechError::Failed { provider, message: format!("cannot write {}: {e}", wav.display()) }
            })?;
            Ok(audio::duration_ms(&samples))
        })
        .await
        .map_err(|e| SpeechError::Failed { provider, message: format!("audio conversion failed: {e}") })?;
        let duration_ms = written?;
        Ok(Spoken { file, duration_ms, cached: false, provider_time })
    }
}

/// The former name of [`SpeechCache`], kept only while `conversation` (reworked on another
/// branch) still says `Voice`; remove it once that code uses the new name.
pub type Voice = SpeechCache;
