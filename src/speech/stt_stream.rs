//! Speech-to-text for the streaming path: one caller turn at a time, fed frame by frame.
//!
//! A [`TurnStt`] receives every caller frame of a turn ([`TurnStt::audio`]), hears about the
//! voice activity detector's short pause and resumption, and gives the turn's transcript when
//! the turn ends ([`TurnStt::finish`]). Two kinds:
//!
//! * [`UtteranceStt`], for every OpenAI-compatible server (OpenAI, Groq, self-hosted Whisper)
//!   and any [`SpeechToText`]: the utterance is posted as a WAV the moment the turn ends. And
//!   sooner: at the short pause (~200 ms of silence) the audio so far is sent speculatively; if
//!   the caller does not go on, that answer is the turn's, so transcription overlaps the rest of
//!   the endpoint wait (`stream.endpoint_silence`); if the caller goes on, it is dropped.
//! * [`DeepgramSession`], Deepgram live: audio streams over a WebSocket (`wss://…/v1/listen`
//!   with `encoding=linear16&sample_rate=…&interim_results=true&endpointing=…`) as it comes;
//!   `Results` messages carry interim and final transcripts; at the end of a turn a `Finalize`
//!   flushes what Deepgram still holds, and the finals of the turn make its transcript.
//!   `KeepAlive` holds the connection open while the caller is silent; `CloseStream` ends it.
//! * [`LiveTurn`], what a streaming call uses with `stt.provider = "deepgram"`: one Deepgram
//!   live connection per turn, opened when the turn's transcriber is made (as the previous turn
//!   ends, so it is up before the caller speaks again), the turn's audio kept until it is; if the
//!   connection fails, the turn's audio is posted to Deepgram's pre-recorded endpoint instead.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use super::audio;
use super::stt::{SpeechToText, SttRequest};
use super::{BoxFuture, SpeechError};

/// What the caller said in one turn.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnTranscript {
    pub text: String,
    pub confidence: Option<f64>,
    /// The speculative request's answer was used (it started at the short pause).
    pub speculative: bool,
}

/// Speech-to-text for the turns of one call.
pub trait TurnStt: Send {
    fn name(&self) -> &'static str;
    /// A frame of the caller's audio in the current turn, at the call's rate.
    fn audio(&mut self, samples: &[i16]);
    /// The caller paused briefly (the VAD's short pause): a chance to transcribe early.
    fn short_pause(&mut self);
    /// The caller went on after the short pause.
    fn resumed(&mut self);
    /// The turn ended: its transcript. The next turn starts empty.
    fn finish(&mut self, deadline: Instant) -> BoxFuture<'_, Result<TurnTranscript, SpeechError>>;
    /// Forget the current turn (nothing to transcribe).
    fn cancel(&mut self);
    /// The provider's latest guess for the current turn, when it gives one.
    fn interim(&mut self) -> Option<String> {
        None
    }
}

/// Longest utterance kept: 60 s. Audio past it is not transcribed.
const MAX_UTTERANCE: Duration = Duration::from_secs(60);

type Pending = tokio::task::JoinHandle<Result<super::stt::Transcript, SpeechError>>;

/// The utterance posted whole, with speculative transcription at the short pause.
pub struct UtteranceStt {
    stt: Arc<dyn SpeechToText>,
    rate: u32,
    buffer: Vec<i16>,
    /// The speculative request, and how many samples it covers.
    speculative: Option<(usize, Pending)>,
    /// How long a speculative request may take.
    speculative_budget: Duration,
}

impl UtteranceStt {
    /// Transcribes with `stt`, audio at `rate`.
    pub fn new(stt: Arc<dyn SpeechToText>, rate: u32) -> UtteranceStt {
        UtteranceStt { stt, rate, buffer: Vec::new(), speculative: None, speculative_budget: Duration::from_secs(10) }
    }

    /// The audio of the current turn so far.
    pub fn buffered(&self) -> &[i16] {
        &self.buffer
    }

    fn transcribe(&self, samples: &[i16], deadline: Instant) -> Pending {
        let stt = self.stt.clone();
        let wav = bytes::Bytes::from(audio::encode_wav_at(samples, self.rate));
        tokio::spawn(async move {
            let path = PathBuf::from("stream-utterance.wav");
            stt.transcribe(SttRequest { wav, path: &path, deadline }).await
        })
    }

    fn drop_speculative(&mut self) {
        if let Some((_, task)) = self.speculative.take() {
            task.abort();
        }
    }
}

impl Drop for UtteranceStt {
    fn drop(&mut self) {
        self.drop_speculative();
    }
}

fn joined(
    provider: &'static str,
    result: Result<Result<super::stt::Transcript, SpeechError>, tokio::task::JoinError>,
) -> Result<super::stt::Transcript, SpeechError> {
    result.map_err(|e| SpeechError::Failed { provider, message: format!("transcription task failed: {e}") })?
}

impl TurnStt for UtteranceStt {
    fn name(&self) -> &'static str {
        self.stt.name()
    }

    fn audio(&mut self, samples: &[i16]) {
        let max = MAX_UTTERANCE.as_secs() as usize * self.rate as usize;
        let room = max.saturating_sub(self.buffer.len());
        self.buffer.extend_from_slice(&samples[..samples.len().min(room)]);
    }

    fn short_pause(&mut self) {
        self.drop_speculative();
        if !self.buffer.is_empty() {
            let pending = self.transcribe(&self.buffer, Instant::now() + self.speculative_budget);
            self.speculative = Some((self.buffer.len(), pending));
        }
    }

    fn resumed(&mut self) {
        // The caller went on: what was sent is only the start of the utterance.
        self.drop_speculative();
    }

    fn finish(&mut self, deadline: Instant) -> BoxFuture<'_, Result<TurnTranscript, SpeechError>> {
        Box::pin(async move {
            let provider = self.stt.name();
            let buffer = std::mem::take(&mut self.buffer);
            // No resumption since the short pause: the audio after it is the endpoint's
            // silence, and the speculative answer is the turn's.
            if let Some((_, pending)) = self.speculative.take() {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, pending).await {
                    Ok(result) => match joined(provider, result) {
                        Ok(t) => {
                            return Ok(TurnTranscript { text: t.text, confidence: t.confidence, speculative: true });
                        }
                        Err(e) => tracing::debug!("speculative transcription failed, transcribing again: {e}"),
                    },
                    Err(_) => return Err(SpeechError::Timeout { provider, after: left }),
                }
            }
            if buffer.is_empty() {
                return Ok(TurnTranscript { text: String::new(), confidence: None, speculative: false });
            }
            let t = joined(provider, self.transcribe(&buffer, deadline).await)?;
            Ok(TurnTranscript { text: t.text, confidence: t.confidence, speculative: false })
        })
    }

    fn cancel(&mut self) {
        self.drop_speculative();
        self.buffer.clear();
    }
}

/// Deepgram live transcription settings.
#[derive(Debug, Clone)]
pub struct DeepgramLive {
    /// Base URL up to `/v1` (`https://api.deepgram.com/v1`); `https` becomes `wss`.
    pub url: String,
    pub api_key: String,
    pub model: String,
    pub language: Option<String>,
    /// Deepgram's own endpointing (silence before `speech_final`).
    pub endpointing: Duration,
    pub connect_timeout: Duration,
    /// How long to wait for Deepgram's answer to `Finalize`.
    pub finalize_wait: Duration,
}

/// One result of Deepgram live.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveResult {
    /// A transcript of audio that may still change.
    Interim { text: String, end: f64 },
    /// A final transcript of audio up to `end` seconds into the stream.
    Final { text: String, confidence: Option<f64>, end: f64, speech_final: bool, from_finalize: bool },
    /// The connection ended (with why).
    Closed(String),
}

/// Parses a Deepgram live message: `Results` into a [`LiveResult`]; `Metadata`,
/// `SpeechStarted`, `UtteranceEnd` and others into `None`.
pub fn parse_live(text: &str) -> Result<Option<LiveResult>, String> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if json["type"].as_str() != Some("Results") {
        if let Some(error) = json["err_msg"].as_str().or_else(|| json["description"].as_str()) {
            return Err(error.to_owned());
        }
        return Ok(None);
    }
    let best = &json["channel"]["alternatives"][0];
    let text =
        best["transcript"].as_str().ok_or("Results without channel.alternatives[0].transcript")?.trim().to_owned();
    let end = json["start"].as_f64().unwrap_or(0.0) + json["duration"].as_f64().unwrap_or(0.0);
    Ok(Some(if json["is_final"].as_bool().unwrap_or(false) {
        LiveResult::Final {
            text,
            confidence: best["confidence"].as_f64(),
            end,
            speech_final: json["speech_final"].as_bool().unwrap_or(false),
            from_finalize: json["from_finalize"].as_bool().unwrap_or(false),
        }
    } else {
        LiveResult::Interim { text, end }
    }))
}

enum Outgoing {
    Audio(Vec<u8>),
    Finalize,
}

/// Seconds between KeepAlive messages while no audio flows (Deepgram closes after ~10 s).
const KEEPALIVE: Duration = Duration::from_secs(4);

/// A Deepgram live connection for one call.
pub struct DeepgramSession {
    outgoing: mpsc::Sender<Outgoing>,
    results: mpsc::Receiver<LiveResult>,
    rate: u32,
    /// Seconds of audio sent so far.
    sent: f64,
    /// Where the current turn began, in stream seconds: results ending before it belong to an
    /// earlier turn.
    turn_start: f64,
    finals: Vec<(String, Option<f64>)>,
    interim: Option<String>,
    closed: Option<String>,
    finalize_wait: Duration,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for DeepgramSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeepgramSession").field("rate", &self.rate).field("sent", &self.sent).finish()
    }
}

impl Drop for DeepgramSession {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl DeepgramLive {
    /// The `wss://…/listen?…` URL for audio at `rate`.
    pub fn url(&self, rate: u32) -> String {
        let base = self.url.trim().trim_end_matches('/');
        let base = match base.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}"),
            Some(("http", rest)) => format!("ws://{rest}"),
            _ => base.to_owned(),
        };
        let mut url = format!(
            "{base}/listen?model={}&encoding=linear16&sample_rate={rate}&channels=1&interim_results=true&endpointing={}&smart_format=true",
            self.model,
            self.endpointing.as_millis()
        );
        if let Some(language) = &self.language {
            url.push_str(&format!("&language={language}"));
        }
        url
    }

    /// Opens the live connection.
    pub async fn connect(&self, rate: u32) -> Result<DeepgramSession, SpeechError> {
        let provider = "deepgram-live";
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = self.url(rate);
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| SpeechError::Invalid { provider, message: format!("bad URL: {e}") })?;
        let auth = format!("Token {}", self.api_key).parse().map_err(|_| SpeechError::Invalid {
            provider,
            message: "the API key is not a valid header value".into(),
        })?;
        request.headers_mut().insert("Authorization", auth);
        let socket = match tokio::time::timeout(self.connect_timeout, tokio_tungstenite::connect_async(request)).await {
            Err(_) => return Err(SpeechError::Timeout { provider, after: self.connect_timeout }),
            Ok(Err(tungstenite::Error::Http(response))) => {
                let status = response.status().as_u16();
                let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
                let message = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|j| j["err_msg"].as_str().map(str::to_owned))
                    .unwrap_or(body);
                return Err(SpeechError::Http { provider, status, message });
            }
            Ok(Err(e)) => return Err(SpeechError::Unreachable { provider, message: e.to_string() }),
            Ok(Ok((socket, _))) => socket,
        };
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut outgoing_rx) = mpsc::channel::<Outgoing>(256);
        let (results_tx, results) = mpsc::channel(256);
        let writer = tokio::spawn(async move {
            loop {
                let next = tokio::time::timeout(KEEPALIVE, outgoing_rx.recv()).await;
                let message = match next {
                    Err(_) => Message::Text(r#"{"type":"KeepAlive"}"#.into()),
                    Ok(None) => break,
                    Ok(Some(Outgoing::Audio(bytes))) => Message::Binary(bytes.into()),
                    Ok(Some(Outgoing::Finalize)) => Message::Text(r#"{"type":"Finalize"}"#.into()),
                };
                if sink.send(message).await.is_err() {
                    return;
                }
            }
            let _ = sink.send(Message::Text(r#"{"type":"CloseStream"}"#.into())).await;
        });
        let reader = tokio::spawn(async move {
            let reason = loop {
                match stream.next().await {
                    None => break "the connection ended".to_owned(),
                    Some(Err(e)) => break e.to_string(),
                    Some(Ok(Message::Text(text))) => match parse_live(&text) {
                        Ok(Some(result)) => {
                            if results_tx.send(result).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!("Deepgram live: {e}"),
                    },
                    Some(Ok(Message::Close(frame))) => {
                        break frame
                            .map_or("closed".to_owned(), |f| format!("closed ({}: {})", u16::from(f.code), f.reason));
                    }
                    Some(Ok(_)) => {}
                }
            };
            let _ = results_tx.send(LiveResult::Closed(reason)).await;
        });
        Ok(DeepgramSession {
            outgoing,
            results,
            rate,
            sent: 0.0,
            turn_start: 0.0,
            finals: Vec::new(),
            interim: None,
            closed: None,
            finalize_wait: self.finalize_wait,
            tasks: vec![writer, reader],
        })
    }
}

impl DeepgramSession {
    /// Ends the stream politely: the writer sends `CloseStream` once the audio queued is out.
    pub fn close(&mut self) {
        let (closed, _) = mpsc::channel(1);
        self.outgoing = closed;
    }

    /// Takes in the results that arrived, without waiting.
    fn drain(&mut self) {
        while let Ok(result) = self.results.try_recv() {
            self.take(result);
        }
    }

    /// Files one result; returns true for Deepgram's answer to `Finalize`.
    fn take(&mut self, result: LiveResult) -> bool {
        // 10 ms of slack: Deepgram's times are rounded.
        let current = |end: f64, start: f64| end > start + 0.01;
        match result {
            LiveResult::Interim { text, end } => {
                if current(end, self.turn_start) && !text.is_empty() {
                    self.interim = Some(text);
                }
                false
            }
            LiveResult::Final { text, confidence, end, from_finalize, .. } => {
                if current(end, self.turn_start) {
                    if !text.is_empty() {
                        self.finals.push((text, confidence));
                    }
                    self.interim = None;
                }
                from_finalize
            }
            LiveResult::Closed(reason) => {
                self.closed = Some(reason);
                true
            }
        }
    }
}

impl TurnStt for DeepgramSession {
    fn name(&self) -> &'static str {
        "deepgram-live"
    }

    fn audio(&mut self, samples: &[i16]) {
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        self.sent += samples.len() as f64 / self.rate as f64;
        if self.outgoing.try_send(Outgoing::Audio(bytes)).is_err() {
            tracing::warn!("Deepgram live is not keeping up; a frame was dropped");
        }
    }

    fn short_pause(&mut self) {}

    fn resumed(&mut self) {}

    fn finish(&mut self, deadline: Instant) -> BoxFuture<'_, Result<TurnTranscript, SpeechError>> {
        Box::pin(async move {
            let provider = "deepgram-live";
            self.drain();
            if self.closed.is_none() {
                let _ = self.outgoing.send(Outgoing::Finalize).await;
                // Deepgram answers Finalize with a result marked from_finalize when it held
                // audio; when it held none, no such result comes, so the wait is bounded.
                let until = deadline.min(Instant::now() + self.finalize_wait);
                while let Ok(Some(result)) = tokio::time::timeout_at(until, self.results.recv()).await {
                    if self.take(result) {
                        break;
                    }
                }
            }
            let finals = std::mem::take(&mut self.finals);
            let interim = self.interim.take();
            self.turn_start = self.sent;
            if finals.is_empty()
                && interim.is_none()
                && let Some(reason) = &self.closed
            {
                return Err(SpeechError::Unreachable { provider, message: format!("live connection lost: {reason}") });
            }
            let confidence = finals.iter().filter_map(|(_, c)| *c).reduce(f64::min);
            let mut text: Vec<String> = finals.into_iter().map(|(t, _)| t).collect();
            // Audio Deepgram had not finalized in time: its last guess is better than nothing.
            text.extend(interim);
            Ok(TurnTranscript { text: text.join(" "), confidence, speculative: false })
        })
    }

    fn cancel(&mut self) {
        self.drain();
        self.finals.clear();
        self.interim = None;
        self.turn_start = self.sent;
    }

    fn interim(&mut self) -> Option<String> {
        self.drain();
        let mut parts: Vec<&str> = self.finals.iter().map(|(t, _)| t.as_str()).collect();
        parts.extend(self.interim.as_deref());
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

/// Deepgram live for one caller turn (see the module docs): audio goes to the live connection
/// as it comes, and the same audio to an [`UtteranceStt`] of the pre-recorded endpoint, used
/// only if the live connection cannot be had or is lost without a word.
pub struct LiveTurn {
    connecting: Option<tokio::task::JoinHandle<Result<DeepgramSession, SpeechError>>>,
    session: Option<DeepgramSession>,
    /// Audio that came before the connection was up.
    waiting: Vec<i16>,
    failed: Option<SpeechError>,
    fallback: UtteranceStt,
}

impl LiveTurn {
    /// Starts connecting at once (needs a Tokio runtime); `stt` is the fallback.
    pub fn new(live: DeepgramLive, stt: Arc<dyn SpeechToText>, rate: u32) -> LiveTurn {
        let connecting = tokio::spawn(async move { live.connect(rate).await });
        LiveTurn {
            connecting: Some(connecting),
            session: None,
            waiting: Vec::new(),
            failed: None,
            fallback: UtteranceStt::new(stt, rate),
        }
    }

    /// Takes the connection if it is up (never waits).
    fn poll_connected(&mut self) {
        use futures_util::FutureExt as _;
        let Some(task) = self.connecting.as_mut() else { return };
        let Some(result) = task.now_or_never() else { return };
        self.connecting = None;
        self.connected(result);
    }

    fn connected(&mut self, result: Result<Result<DeepgramSession, SpeechError>, tokio::task::JoinError>) {
        match joined_live(result) {
            Ok(mut session) => {
                if !self.waiting.is_empty() {
                    session.audio(&std::mem::take(&mut self.waiting));
                }
                self.session = Some(session);
            }
            Err(e) => {
                tracing::warn!("Deepgram live is unavailable ({e}); this turn is posted to the pre-recorded endpoint");
                self.waiting = Vec::new();
                self.failed = Some(e);
            }
        }
    }
}

fn joined_live(
    result: Result<Result<DeepgramSession, SpeechError>, tokio::task::JoinError>,
) -> Result<DeepgramSession, SpeechError> {
    result
        .map_err(|e| SpeechError::Failed { provider: "deepgram-live", message: format!("connect task failed: {e}") })?
}

impl Drop for LiveTurn {
    fn drop(&mut self) {
        if let Some(task) = self.connecting.take() {
            task.abort();
        }
    }
}

impl TurnStt for LiveTurn {
    fn name(&self) -> &'static str {
        "deepgram-live"
    }

    fn audio(&mut self, samples: &[i16]) {
        self.fallback.audio(samples);
        self.poll_connected();
        if let Some(session) = &mut self.session {
            session.audio(samples);
        } else if self.connecting.is_some() {
            let max = MAX_UTTERANCE.as_secs() as usize * self.fallback.rate as usize;
            let room = max.saturating_sub(self.waiting.len());
            self.waiting.extend_from_slice(&samples[..samples.len().min(room)]);
        }
    }

    fn short_pause(&mut self) {}

    fn resumed(&mut self) {}

    fn finish(&mut self, deadline: Instant) -> BoxFuture<'_, Result<TurnTranscript, SpeechError>> {
        Box::pin(async move {
            if let Some(task) = self.connecting.take() {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, task).await {
                    Ok(result) => self.connected(result),
                    Err(_) => {
                        self.failed = Some(SpeechError::Timeout { provider: "deepgram-live", after: left });
                    }
                }
            }
            if let Some(session) = &mut self.session {
                match session.finish(deadline).await {
                    Ok(transcript) => {
                        session.close();
                        return Ok(transcript);
                    }
                    Err(e) => {
                        tracing::warn!("Deepgram live failed during the turn ({e}); posting the turn's audio instead");
                    }
                }
            }
            if let Some(e) = &self.failed {
                tracing::debug!("the turn is posted to the pre-recorded endpoint: Deepgram live failed ({e})");
            }
            self.fallback.finish(deadline).await
        })
    }

    fn cancel(&mut self) {
        self.waiting.clear();
        self.fallback.cancel();
        if let Some(session) = &mut self.session {
            session.cancel();
        }
    }

    fn interim(&mut self) -> Option<String> {
        self.session.as_mut().and_then(|s| s.interim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deepgram_results_in_their_documented_shape() {
        let interim = r#"{"type":"Results","channel_index":[0,1],"duration":1.2,"start":0.5,"is_final":false,"speech_final":false,"channel":{"alternatives":[{"transcript":"how much","confidence":0.8,"words":[]}]},"metadata":{"request_id":"r"}}"#;
        assert_eq!(parse_live(interim).unwrap(), Some(LiveResult::Interim { text: "how much".into(), end: 1.7 }));
        let fin = r#"{"type":"Results","duration":2.0,"start":0.5,"is_final":true,"speech_final":true,"from_finalize":true,"channel":{"alternatives":[{"transcript":"how much is it?","confidence":0.93}]}}"#;
        let Some(LiveResult::Final { text, confidence, end, speech_final, from_finalize }) = parse_live(fin).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (text.as_str(), confidence, end, speech_final, from_finalize),
            ("how much is it?", Some(0.93), 2.5, true, true)
        );
        assert_eq!(parse_live(r#"{"type":"Metadata","request_id":"x"}"#).unwrap(), None);
        assert_eq!(parse_live(r#"{"type":"UtteranceEnd","last_word_end":2.1}"#).unwrap(), None);
        assert!(parse_live("nope").is_err());
        assert!(parse_live(r#"{"type":"Results","channel":{}}"#).is_err());
        assert_eq!(
            parse_live(r#"{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials."}"#).unwrap_err(),
            "Invalid credentials."
        );
    }

    #[test]
    fn the_live_url() {
        let live = DeepgramLive {
            url: "https://api.deepgram.com/v1/".into(),
            api_key: "k".into(),
            model: "nova-3".into(),
            language: Some("en".into()),
            endpointing: Duration::from_millis(300),
            connect_timeout: Duration::from_secs(5),
            finalize_wait: Duration::from_secs(1),
        };
        assert_eq!(
            live.url(16000),
            "wss://api.deepgram.com/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000&channels=1&interim_results=true&endpointing=300&smart_format=true&language=en"
        );
    }
}
