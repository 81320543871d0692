//! Text-to-speech for the streaming path: audio read as the provider produces it, not after.
//!
//! * [`OpenAiTts`]: `POST {url}/audio/speech` with `response_format: "pcm"`: raw 24 kHz 16-bit
//!   little-endian mono, read chunk by chunk from the response body.
//! * [`ElevenLabsTts`]: `POST {url}/text-to-speech/{voice}/stream?output_format=pcm_16000`
//!   (`pcm_8000` for an 8 kHz call): raw PCM at the call's rate, streamed.
//! * [`EspeakTts`]: `espeak-ng --stdout`, its WAV read from the pipe as it is written (the
//!   header's placeholder lengths are skipped, the samples passed on).
//!
//! A [`PcmStream`] yields chunks of samples as they arrive; [`PcmStream::to_rate`] resamples them
//! on the fly to the call's rate ([`super::audio::StreamResampler`]). Dropping the stream stops
//! the work: the HTTP response is dropped (closing its connection) or espeak-ng is killed.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::audio::StreamResampler;
use super::tts::{ElevenLabsTts, EspeakTts, OpenAiTts};
use super::{BoxFuture, SpeechError, send};

/// OpenAI's `pcm` format: 24 kHz.
pub const OPENAI_PCM_RATE: u32 = 24000;
/// espeak-ng's output rate.
pub const ESPEAK_RATE: u32 = 22050;

/// Audio chunks as a provider delivers them.
pub struct PcmStream {
    provider: &'static str,
    chunks: mpsc::Receiver<Result<Vec<i16>, SpeechError>>,
    rate: u32,
    resampler: Option<StreamResampler>,
    finished: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PcmStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for PcmStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcmStream").field("provider", &self.provider).field("rate", &self.rate).finish()
    }
}

impl PcmStream {
    /// The rate of the samples [`PcmStream::next`] returns.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// The same audio at `rate`, resampled chunk by chunk.
    pub fn to_rate(mut self, rate: u32) -> Result<PcmStream, SpeechError> {
        if rate != self.rate {
            let resampler = StreamResampler::new(self.rate, rate)
                .map_err(|e| SpeechError::Invalid { provider: self.provider, message: e.to_string() })?;
            self.resampler = Some(resampler);
            self.rate = rate;
        }
        Ok(self)
    }

    /// The next chunk; `None` when the audio is complete. An error ends the stream.
    pub async fn next(&mut self) -> Option<Result<Vec<i16>, SpeechError>> {
        loop {
            if self.finished {
                return None;
            }
            match self.chunks.recv().await {
                Some(Ok(samples)) => {
                    let out = match &mut self.resampler {
                        Some(resampler) => resampler.push_i16(&samples),
                        None => samples,
                    };
                    if !out.is_empty() {
                        return Some(Ok(out));
                    }
                }
                Some(Err(e)) => {
                    self.finished = true;
                    return Some(Err(e));
                }
                None => {
                    self.finished = true;
                    let tail = self.resampler.as_mut().map(StreamResampler::finish_i16).unwrap_or_default();
                    return (!tail.is_empty()).then_some(Ok(tail));
                }
            }
        }
    }

    /// Everything left, in one buffer (for tests and caches; calls stream instead).
    pub async fn collect(mut self) -> Result<Vec<i16>, SpeechError> {
        let mut all = Vec::new();
        while let Some(chunk) = self.next().await {
            all.extend(chunk?);
        }
        Ok(all)
    }
}

/// A text-to-speech provider that streams.
pub trait StreamingTts: Send + Sync {
    fn name(&self) -> &'static str;
    /// Starts synthesizing `text`; returns once the provider has accepted the request, with
    /// audio flowing. `rate` is the call's rate, for providers that can produce it directly.
    fn stream<'a>(
        &'a self,
        text: &'a str,
        rate: u32,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<PcmStream, SpeechError>>;
}

/// Turns a byte stream of 16-bit little-endian PCM (after `skip_wav_header`, a WAV) into a
/// [`PcmStream`], with at most `idle` between reads.
fn spawn_pcm<S, E>(provider: &'static str, body: S, rate: u32, wav: bool, idle: Duration) -> PcmStream
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    let task = tokio::spawn(async move {
        let mut body = std::pin::pin!(body);
        let mut splitter = PcmSplitter::new(wav);
        loop {
            let next = match tokio::time::timeout(idle, body.next()).await {
                Err(_) => Err(SpeechError::Timeout { provider, after: idle }),
                Ok(None) => {
                    if let Err(message) = splitter.finish() {
                        let _ = tx.send(Err(SpeechError::Invalid { provider, message })).await;
                    }
                    return;
                }
                Ok(Some(Err(e))) => Err(SpeechError::Unreachable { provider, message: e.to_string() }),
                Ok(Some(Ok(bytes))) => {
                    splitter.push(&bytes).map_err(|message| SpeechError::Invalid { provider, message })
                }
            };
            match next {
                Ok(samples) if samples.is_empty() => {}
                Ok(samples) => {
                    if tx.send(Ok(samples)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    PcmStream { provider, chunks: rx, rate, resampler: None, finished: false, task }
}

/// Splits a byte stream into whole 16-bit samples, skipping a WAV header first when asked.
#[derive(Debug, Default)]
pub struct PcmSplitter {
    /// Still looking for the WAV `data` chunk.
    header: bool,
    buffer: Vec<u8>,
    odd: Option<u8>,
}

/// A WAV header longer than this is not one.
const MAX_HEADER: usize = 4096;

impl PcmSplitter {
    pub fn new(wav: bool) -> PcmSplitter {
        PcmSplitter { header: wav, ..Default::default() }
    }

    /// The samples `bytes` completes.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<i16>, String> {
        let mut bytes = bytes;
        let owned;
        if self.header {
            self.buffer.extend_from_slice(bytes);
            let Some(start) = wav_data_offset(&self.buffer)? else {
                if self.buffer.len() > MAX_HEADER {
                    return Err(format!("no WAV data chunk in the first {MAX_HEADER} bytes"));
                }
                return Ok(Vec::new());
            };
            self.header = false;
            owned = self.buffer.split_off(start);
            self.buffer.clear();
            bytes = &owned;
        }
        let mut out = Vec::with_capacity(bytes.len() / 2 + 1);
        let mut rest = bytes;
        if let Some(low) = self.odd.take() {
            let Some((high, tail)) = rest.split_first() else {
                self.odd = Some(low);
                return Ok(out);
            };
            out.push(i16::from_le_bytes([low, *high]));
            rest = tail;
        }
        let pairs = rest.chunks_exact(2);
        self.odd = pairs.remainder().first().copied();
        out.extend(pairs.map(|b| i16::from_le_bytes([b[0], b[1]])));
        Ok(out)
    }

    /// The end: a WAV that never reached its data is an error.
    pub fn finish(&mut self) -> Result<(), String> {
        if self.header {
            return Err("the audio ended inside its WAV header".into());
        }
        Ok(())
    }
}

/// Where the `data` chunk's samples start, once the header is complete; `None` while it is not.
fn wav_data_offset(bytes: &[u8]) -> Result<Option<usize>, String> {
    if bytes.len() < 12 {
        return Ok(None);
    }
    if &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("expected a WAV stream (RIFF/WAVE)".into());
    }
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        if &bytes[at..at + 4] == b"data" {
            return Ok(Some(at + 8));
        }
        at = at.saturating_add(8).saturating_add(size + (size & 1));
    }
    Ok(None)
}

impl StreamingTts for OpenAiTts {
    fn name(&self) -> &'static str {
        "openai-tts"
    }

    fn stream<'a>(
        &'a self,
        text: &'a str,
        _rate: u32,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<PcmStream, SpeechError>> {
        Box::pin(async move {
            let url = format!("{}/audio/speech", self.url.trim_end_matches('/'));
            let body =
                serde_json::json!({"model": self.model, "input": text, "voice": self.voice, "response_format": "pcm"});
            let response = send(StreamingTts::name(self), self.policy, deadline, || {
                let builder = self.client.post(&url).json(&body);
                if self.api_key.is_empty() { builder } else { builder.bearer_auth(&self.api_key) }
            })
            .await?;
            // Some servers answer `pcm` with a WAV anyway: read what came.
            let wav = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.contains("wav"));
            Ok(spawn_pcm(StreamingTts::name(self), response.bytes_stream(), OPENAI_PCM_RATE, wav, self.policy.timeout))
        })
    }
}

impl StreamingTts for ElevenLabsTts {
    fn name(&self) -> &'static str {
        "elevenlabs"
    }

    fn stream<'a>(
        &'a self,
        text: &'a str,
        rate: u32,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<PcmStream, SpeechError>> {
        Box::pin(async move {
            // ElevenLabs makes telephone rates itself: no resampling for 8 or 16 kHz calls.
            let pcm_rate = if rate <= 8000 { 8000 } else { 16000 };
            let url = format!("{}/text-to-speech/{}/stream", self.url.trim_end_matches('/'), self.voice);
            let body = serde_json::json!({"text": text, "model_id": self.model});
            let format = format!("pcm_{pcm_rate}");
            let response = send(StreamingTts::name(self), self.policy, deadline, || {
                self.client
                    .post(&url)
                    .query(&[("output_format", format.as_str())])
                    .header("xi-api-key", &self.api_key)
                    .json(&body)
            })
            .await?;
            Ok(spawn_pcm(StreamingTts::name(self), response.bytes_stream(), pcm_rate, false, self.policy.timeout))
        })
    }
}

impl StreamingTts for EspeakTts {
    fn name(&self) -> &'static str {
        "espeak-ng"
    }

    fn stream<'a>(
        &'a self,
        text: &'a str,
        _rate: u32,
        _deadline: Instant,
    ) -> BoxFuture<'a, Result<PcmStream, SpeechError>> {
        Box::pin(async move {
            let provider = StreamingTts::name(self);
            let mut child = tokio::process::Command::new(&self.program)
                .args(["--stdin", "--stdout", "-v", &self.voice, "-s", &self.speed.to_string()])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                // Dropping the stream (a barge-in) kills it.
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| SpeechError::Failed {
                    provider,
                    message: format!("cannot run {}: {e} (install the espeak-ng package)", self.program),
                })?;
            let mut stdin = child.stdin.take().expect("piped stdin");
            let mut stdout = child.stdout.take().expect("piped stdout");
            // Text goes in on stdin, never on the command line; a newline ends it.
            let input = format!("{}\n", text.replace(['\n', '\r'], " "));
            let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
            let idle = self.timeout;
            tokio::spawn(async move {
                // The child lives in this task: when the reader below stops (the stream was
                // dropped) the task ends and the child is killed.
                let _child = child;
                if let Err(e) = stdin.write_all(input.as_bytes()).await {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                drop(stdin);
                let mut buffer = vec![0u8; 4096];
                loop {
                    match stdout.read(&mut buffer).await {
                        Ok(0) => return,
                        Ok(n) => {
                            if tx.send(Ok(Bytes::copy_from_slice(&buffer[..n]))).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
            });
            let body = tokio_stream_from(rx);
            Ok(spawn_pcm(provider, body, ESPEAK_RATE, true, idle))
        })
    }
}

/// An mpsc receiver as a stream.
fn tokio_stream_from<T: Send + 'static>(rx: mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm_splits_on_any_boundary() {
        let samples: Vec<i16> = (0..100).map(|i| i * 301 - 15000).collect();
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        for chunk in [1, 3, 7, 64] {
            let mut splitter = PcmSplitter::new(false);
            let mut out = Vec::new();
            for piece in bytes.chunks(chunk) {
                out.extend(splitter.push(piece).unwrap());
            }
            assert_eq!(out, samples, "chunks of {chunk}");
        }
        // A WAV header (here with an extra LIST chunk) is skipped wherever the reads split it.
        let mut wav = super::super::audio::encode_wav_at(&samples, 22050);
        wav.splice(36..36, [b"LIST".as_slice(), &4u32.to_le_bytes(), b"abcd"].concat());
        for chunk in [1, 5, 40, 1000] {
            let mut splitter = PcmSplitter::new(true);
            let mut out = Vec::new();
            for piece in wav.chunks(chunk) {
                out.extend(splitter.push(piece).unwrap());
            }
            splitter.finish().unwrap();
            assert_eq!(out, samples, "WAV in chunks of {chunk}");
        }
        assert!(PcmSplitter::new(true).push(b"not a wav header at all").is_err());
        let mut cut = PcmSplitter::new(true);
        cut.push(b"RIFF").unwrap();
        assert!(cut.finish().is_err());
    }

    #[tokio::test]
    async fn espeak_streams_and_is_killed_when_dropped() {
        let espeak = EspeakTts {
            program: "espeak-ng".into(),
            voice: "en-us".into(),
            speed: 165,
            timeout: Duration::from_secs(10),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = espeak.stream("Hello there, this is a test.", 16000, deadline).await.unwrap();
        let stream = stream.to_rate(16000).unwrap();
        assert_eq!(stream.rate(), 16000);
        let samples = stream.collect().await.unwrap();
        // About 1.5 s of speech at 16 kHz.
        assert!((12_000..64_000).contains(&samples.len()), "{}", samples.len());
        assert!(samples.iter().any(|s| s.unsigned_abs() > 1000), "speech, not silence");
        // A long text, dropped after the first chunk: the stream ends at once.
        let mut long = espeak.stream(&"This sentence goes on and on. ".repeat(50), 8000, deadline).await.unwrap();
        assert!(!long.next().await.unwrap().unwrap().is_empty());
        drop(long);
        let missing = EspeakTts { program: "/nonexistent/espeak".into(), ..espeak };
        let err = missing.stream("x", 8000, deadline).await.unwrap_err();
        assert!(err.to_string().contains("install the espeak-ng package"), "{err}");
    }
}
