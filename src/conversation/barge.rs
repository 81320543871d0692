//! Barging in on a live call: a supervisor's microphone, sent by the page as 16-bit PCM over
//! its WebSocket (`GET /v1/calls/{id}/barge`), is heard by the caller and by the AI.
//!
//! asterai creates an external media channel (chan_websocket, `slin16`, connecting as for
//! listening, [`super::listen::open_media`]) and writes the page's audio into it:
//! * **A streaming call:** the channel joins the call's mixing bridge. The bridge mixes the
//!   supervisor into what the caller hears and into what the agent's media channel gets: the
//!   AI hears the supervisor as it hears the caller (its voice detection stops the agent's audio
//!   as a caller's speech would). A whisper would not do here: Asterisk mixes a whisper into the
//!   frames it writes to the channel, and a bridge writes none while nobody in it talks.
//! * **An AGI call** (no bridge): `POST /channels/{caller}/snoop` with `spy=none` and
//!   `whisper=both`, and a mixing bridge of the snoop channel and the media channel. The snoop
//!   channel whispers the supervisor into both directions of the caller's channel: **out**, the
//!   caller hears it, mixed into the frames Asterisk writes to the caller, of which there are
//!   none during `RECORD FILE` unless `transmit_silence = yes` is set in asterisk.conf (barging
//!   on the AGI path needs it); **in**, the AI's recording holds it.
//!
//! While the supervisor's voice is heard (a frame above [`VOICE_RMS`], and [`VOICE_HANGOVER`]
//! after the last one) the conversation core starts no answer ([`super::live::LiveCall`]), on
//! both paths alike; the model is told that a supervisor is on the line.
//!
//! **A call taken over** keeps the supervisor's part of the conversation: the relay cuts their
//! audio into utterances (from a voiced frame, with [`PREROLL`] before it, to [`VOICE_HANGOVER`]
//! after the last voiced one, at most [`MAX_UTTERANCE`]; the give-back ends one too) and has the
//! call's agent's speech-to-text transcribe each (a WAV at the barge's rate) in a task of its
//! own; the lines wait on the [`super::live::LiveCall`] until the core stores them as turns of
//! the supervisor's (see [`super::core`]). The AI's ear hears the supervisor mixed into the line
//! (the bridge on a streaming call, the whisper into the AGI recording), so while the call is
//! taken over what it hears while the supervisor's voice is heard is taken for silence, on both
//! paths: the caller's side of the transcript never holds the supervisor's words. A plain barge
//! (not taken over) changes nothing there: the AI hears the supervisor as it hears the caller.
//!
//! One supervisor barges at a time. The audio is paced by Asterisk (chan_websocket re-times
//! what it gets); a page that sends faster than real time has what runs more than [`MAX_LEAD`]
//! ahead dropped, so the caller never hears the supervisor late.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use super::listen::{ListenSetup, connect, join_bridge, open_media};
use super::live::{AiState, BargeGuard, LiveCall, LiveError, SupervisorLine};
use crate::ari::{MEDIA_CHANNEL_TAG, Snoop};
use crate::media::{Codec, MediaEvent, MediaSender};
use crate::speech::audio;
use crate::speech::stt::SttRequest;

/// A frame whose RMS is above this (about -38 dBFS) is the supervisor's voice.
pub const VOICE_RMS: f64 = 400.0;
/// The supervisor counts as speaking until this long after their last voiced frame.
pub const VOICE_HANGOVER: Duration = Duration::from_millis(800);
/// Audio queued for Asterisk beyond this is dropped (the page runs ahead of real time).
pub const MAX_LEAD: Duration = Duration::from_secs(1);
/// The largest binary message the page may send (one second of 16 kHz PCM).
pub const MAX_MESSAGE_BYTES: usize = 32_000;
/// The supervisor's audio kept from before their voice rose, so the transcript has the first
/// syllable.
pub const PREROLL: Duration = Duration::from_millis(300);
/// The longest utterance of the supervisor's transcribed in one piece; a longer one is cut.
pub const MAX_UTTERANCE: Duration = Duration::from_secs(30);
/// How long the transcription of one utterance of the supervisor's may take.
const STT_TIMEOUT: Duration = Duration::from_secs(15);

/// Removes a barge's channels from Asterisk.
type TakeDown = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Why a barge could not start.
#[derive(Debug, thiserror::Error)]
pub enum BargeError {
    /// Another supervisor barges in already.
    #[error("{0}")]
    Busy(String),
    /// Asterisk refused the snoop, the bridge or the media channel.
    #[error("{0}")]
    Asterisk(String),
}

/// A barge set up: where the supervisor's audio goes.
pub struct Barge {
    sender: MediaSender,
    /// The media channel's sample rate (what the page must send).
    pub rate: u32,
    guard: BargeGuard,
    /// Cancelled when the media channel closed: the barge cannot go on.
    closed: CancellationToken,
    /// Cancelled when the barge ends: the channels are taken down.
    stop: CancellationToken,
}

impl Drop for Barge {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts `supervisor`'s barge on `call`: reserves the line, then the snoop channel, bridge and
/// media channel. Nothing is left in Asterisk when it fails.
pub async fn barge(call: &Arc<LiveCall>, setup: &ListenSetup, supervisor: &str) -> Result<Barge, BargeError> {
    let mut guard = call.begin_barge(supervisor).map_err(|e| match e {
        LiveError::Invalid(m) | LiveError::Unavailable(m) => BargeError::Busy(m),
    })?;
    let client = &setup.client;
    let id = uuid::Uuid::new_v4();
    let media_id = format!("{}barge-{id}", super::stream::MEDIA_CHANNEL_PREFIX);
    let (session, taken_down) = match call.bridge() {
        // A streaming call: the supervisor's media channel joins its bridge.
        Some(bridge) => {
            let taken_down: TakeDown = {
                let (client, media_id) = (client.clone(), media_id.clone());
                Box::pin(async move {
                    let _ = client.hangup(&media_id, None).await;
                })
            };
            let joined = async {
                let session = open_media(client, &setup.app, &media_id, Codec::Slin16).await?;
                join_bridge(client, bridge, &[media_id.as_str()])
                    .await
                    .map_err(|e| format!("cannot join the call's bridge: {e}"))?;
                Ok::<_, String>(session)
            };
            match joined.await {
                Ok(session) => (session, taken_down),
                Err(e) => {
                    taken_down.await;
                    return Err(BargeError::Asterisk(e));
                }
            }
        }
        // An AGI call: a snoop channel whispers into the caller's channel.
        None => {
            let snoop_id = format!("asterai-snoop-{id}");
            let snoop = Snoop {
                app: setup.app.clone(),
                spy: "none".into(),
                whisper: "both".into(),
                app_args: vec![MEDIA_CHANNEL_TAG.to_owned()],
                snoop_id: Some(snoop_id.clone()),
            };
            client
                .snoop(&call.channel_id, &snoop)
                .await
                .map_err(|e| BargeError::Asterisk(format!("cannot whisper into the caller's channel: {e}")))?;
            let bridge = format!("asterai-barge-{id}");
            let taken_down: TakeDown = {
                let (client, snoop_id, media_id, bridge) =
                    (client.clone(), snoop_id.clone(), media_id.clone(), bridge.clone());
                Box::pin(async move {
                    let _ = client.hangup(&snoop_id, None).await;
                    let _ = client.hangup(&media_id, None).await;
                    let _ = client.destroy_bridge(&bridge).await;
                })
            };
            // 8 kHz: the whisper goes into a narrowband channel (the set-up the real-Asterisk
            // test checks).
            match connect(client, &setup.app, &snoop_id, &bridge, &media_id, "asterai-barge", Codec::Slin).await {
                Ok(session) => (session, taken_down),
                Err(e) => {
                    taken_down.await;
                    return Err(BargeError::Asterisk(e));
                }
            }
        }
    };
    let mut session = session;
    let sender = session.sender();
    let rate = session.format().rate();
    let (closed, stop) = (CancellationToken::new(), CancellationToken::new());
    let ended = call.ended().clone();
    {
        let (closed, stop) = (closed.clone(), stop.clone());
        // The media channel's own frames (the snoop channel hears nothing: spy=none) are read
        // and dropped, so its socket never backs up; the channels go when the barge ends.
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = session.recv() => match event {
                        None | Some(MediaEvent::Closed(_)) => break,
                        Some(_) => {}
                    },
                    _ = stop.cancelled() => break,
                    _ = ended.cancelled() => break,
                }
            }
            closed.cancel();
            session.close(Duration::from_secs(1)).await;
            taken_down.await;
        });
    }
    guard.joined();
    tracing::info!(call_id = %call.call_id, %supervisor, "barging in: the supervisor's audio is whispered into the call");
    Ok(Barge { sender, rate, guard, closed, stop })
}

/// The RMS of 16-bit samples.
fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|s| (*s as f64) * (*s as f64)).sum::<f64>() / samples.len() as f64).sqrt()
}

/// Relays the supervisor's audio from their WebSocket into the call until the call ends (close
/// 1000), the daemon stops (1001), the supervisor closes, or the page breaks the protocol: a
/// text message (1003), a binary message of an odd length (1007) or over
/// [`MAX_MESSAGE_BYTES`] (1009). The first message is the server's, text:
/// `{"type": "barge.start", "rate": 16000, "format": "s16le", "channels": 1}` (8000 on an AGI
/// call); then the page
/// sends binary messages of 16-bit little-endian mono PCM at that rate. Returns why it ended.
pub async fn relay<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    barge: &mut Barge,
    call: &Arc<LiveCall>,
    shutdown: &CancellationToken,
) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let start = serde_json::json!({
        "type": "barge.start",
        "call_id": call.call_id,
        "rate": barge.rate,
        "format": "s16le",
        "channels": 1,
    });
    if ws.send(Message::Text(start.to_string().into())).await.is_err() {
        return "the supervisor left".into();
    }
    let close =
        |code: CloseCode, reason: &str| Message::Close(Some(CloseFrame { code, reason: reason.to_owned().into() }));
    let frame = barge.sender.format().frame_duration();
    let mut quiet_at: Option<Instant> = None;
    let ended = call.ended().clone();
    let closed = barge.closed.clone();
    let mut state = call.watch_state();
    let mut words = Words::new(call.clone(), barge.guard.supervisor(), barge.rate);
    let why = loop {
        let hangover = async {
            match quiet_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Binary(pcm))) => {
                    if pcm.len() % 2 != 0 {
                        let reason = "expected 16-bit samples: a binary message of an even length";
                        let _ = ws.send(close(CloseCode::Invalid, reason)).await;
                        break format!("the page sent a malformed frame ({} bytes)", pcm.len());
                    }
                    let samples: Vec<i16> = pcm.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
                    if samples.is_empty() {
                        continue;
                    }
                    let voiced = rms(&samples) > VOICE_RMS;
                    if voiced {
                        barge.guard.speaking(true);
                        quiet_at = Some(Instant::now() + VOICE_HANGOVER);
                    }
                    if call.state() == AiState::TakenOver {
                        words.push(&samples, voiced);
                    } else {
                        words.end();
                    }
                    if barge.sender.unplayed() > MAX_LEAD + frame {
                        metrics::counter!("asterai_barge_frames_dropped_total").increment(1);
                        continue;
                    }
                    if let Err(e) = barge.sender.send_audio(&samples).await {
                        let _ = ws.send(close(CloseCode::Error, "the call's audio channel closed")).await;
                        break format!("the barge's media channel closed: {e}");
                    }
                }
                Some(Ok(Message::Text(_))) => {
                    let _ = ws.send(close(CloseCode::Unsupported, "expected binary messages of 16-bit PCM")).await;
                    break "the page sent a text message".into();
                }
                Some(Ok(Message::Close(_))) | None => break "the supervisor left".into(),
                Some(Ok(_)) => {}
                Some(Err(WsError::Capacity(e))) => {
                    let reason = format!("a message over {MAX_MESSAGE_BYTES} bytes");
                    let _ = ws.send(close(CloseCode::Size, &reason)).await;
                    break format!("the page sent {reason} ({e})");
                }
                Some(Err(_)) => break "the supervisor left".into(),
            },
            _ = hangover => {
                barge.guard.speaking(false);
                quiet_at = None;
                words.end();
            }
            // Given back (or paused): an utterance under way ends here, before the core stores
            // the give-back.
            Ok(()) = state.changed() => {
                if *state.borrow_and_update() != AiState::TakenOver {
                    words.end();
                }
            }
            _ = ended.cancelled() => {
                let _ = ws.send(close(CloseCode::Normal, "the call ended")).await;
                break "the call ended".into();
            }
            _ = closed.cancelled() => {
                let _ = ws.send(close(CloseCode::Error, "Asterisk ended the barge's channel")).await;
                break "Asterisk ended the barge's channel".into();
            }
            _ = shutdown.cancelled() => {
                let _ = ws.send(close(CloseCode::Away, "asterai is stopping")).await;
                break "asterai is stopping".into();
            }
        }
    };
    barge.guard.speaking(false);
    words.end();
    why
}

/// The supervisor's words while the call is taken over: their audio cut into utterances, each
/// transcribed in a task of its own and queued on the call for the core.
struct Words {
    call: Arc<LiveCall>,
    supervisor: String,
    rate: u32,
    /// The last [`PREROLL`] of audio, while no utterance is under way.
    preroll: VecDeque<i16>,
    /// The utterance under way: when it began, and its audio.
    current: Option<(Instant, Vec<i16>)>,
}

impl Words {
    fn new(call: Arc<LiveCall>, supervisor: &str, rate: u32) -> Words {
        Words { call, supervisor: supervisor.to_owned(), rate, preroll: VecDeque::new(), current: None }
    }

    fn samples(&self, duration: Duration) -> usize {
        (duration.as_millis() as usize) * self.rate as usize / 1000
    }

    /// A frame of the supervisor's audio (`voiced`: above [`VOICE_RMS`]).
    fn push(&mut self, samples: &[i16], voiced: bool) {
        let max = self.samples(MAX_UTTERANCE);
        match &mut self.current {
            Some((_, audio)) => {
                audio.extend_from_slice(samples);
                if audio.len() >= max {
                    self.end();
                }
            }
            None if voiced => {
                let now = Instant::now();
                let preroll = Duration::from_millis(self.preroll.len() as u64 * 1000 / self.rate.max(1) as u64);
                let mut audio: Vec<i16> = self.preroll.drain(..).collect();
                audio.extend_from_slice(samples);
                self.current = Some((now.checked_sub(preroll).unwrap_or(now), audio));
                self.call.supervisor_utterance(true);
            }
            None => {
                self.preroll.extend(samples);
                let keep = self.samples(PREROLL);
                if self.preroll.len() > keep {
                    let extra = self.preroll.len() - keep;
                    self.preroll.drain(..extra);
                }
            }
        }
    }

    /// Ends the utterance under way, if any, and has it transcribed.
    fn end(&mut self) {
        self.preroll.clear();
        let Some((started, samples)) = self.current.take() else { return };
        // Nobody is left to store it once the call ended.
        let Some(stt) = self.call.stt().filter(|_| !self.call.ended().is_cancelled()) else {
            self.call.supervisor_utterance(false);
            return;
        };
        // Counted as transcribing before it stops counting as open: the core waiting for the
        // supervisor's last words never sees neither.
        self.call.supervisor_transcribing();
        self.call.supervisor_utterance(false);
        let (call, supervisor, rate) = (self.call.clone(), self.supervisor.clone(), self.rate);
        tokio::spawn(async move {
            let wav = bytes::Bytes::from(audio::encode_wav_at(&samples, rate));
            let path = std::path::PathBuf::from("barge-utterance.wav");
            let request = SttRequest { wav, path: &path, deadline: Instant::now() + STT_TIMEOUT };
            let line = match tokio::time::timeout(STT_TIMEOUT, stt.transcribe(request)).await {
                Ok(Ok(transcript)) if !transcript.text.trim().is_empty() => {
                    Some(SupervisorLine { supervisor, started, text: transcript.text.trim().to_owned() })
                }
                Ok(Ok(_)) => None,
                Ok(Err(e)) => {
                    tracing::warn!(call_id = %call.call_id, "the supervisor's words could not be transcribed: {e}");
                    None
                }
                Err(_) => {
                    tracing::warn!(call_id = %call.call_id, "the supervisor's words were not transcribed within {STT_TIMEOUT:?}");
                    None
                }
            };
            call.supervisor_said(line);
        });
    }
}

/// The WebSocket settings of a barge: messages of at most [`MAX_MESSAGE_BYTES`].
pub fn socket_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voice_is_told_from_silence() {
        assert_eq!(rms(&[]), 0.0);
        assert!(rms(&[0; 320]) < VOICE_RMS);
        let tone: Vec<i16> = (0..320).map(|i| ((i as f64 * 0.39).sin() * 8000.0) as i16).collect();
        assert!(rms(&tone) > VOICE_RMS);
    }

    /// Transcribes a WAV as its length in samples.
    struct Count;

    impl crate::speech::stt::SpeechToText for Count {
        fn name(&self) -> &'static str {
            "count"
        }

        fn transcribe<'a>(
            &'a self,
            request: SttRequest<'a>,
        ) -> crate::speech::BoxFuture<'a, Result<crate::speech::stt::Transcript, crate::speech::SpeechError>> {
            Box::pin(async move {
                let samples = audio::decode_wav(&request.wav).unwrap();
                Ok(crate::speech::stt::Transcript { text: samples.len().to_string(), confidence: None })
            })
        }
    }

    #[tokio::test]
    async fn the_supervisors_voice_is_cut_into_utterances_with_a_preroll() {
        let calls = super::super::live::LiveCalls::new(None);
        let registration = calls.register("c1", 1, "chan", "agi");
        let call = registration.call().clone();
        call.set_stt(Arc::new(Count));
        let mut words = Words::new(call.clone(), "alice", 8000);
        let quiet = [0i16; 160];
        for _ in 0..50 {
            words.push(&quiet, false);
        }
        words.push(&quiet, true);
        for _ in 0..9 {
            words.push(&quiet, false);
        }
        words.end();
        // Longer than MAX_UTTERANCE: cut.
        let second = vec![0i16; 8000];
        for i in 0..31 {
            words.push(&second, i == 0);
        }
        words.end();
        let lines = call.take_supervisor_lines(Instant::now(), true, Duration::from_secs(10)).await;
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        // 300 ms of preroll and ten frames; then 30 s, and the last second alone (after the cut,
        // a voiceless frame starts nothing).
        assert_eq!(texts, ["4000", "240000"], "{lines:?}");
        assert!(lines.iter().all(|l| l.supervisor == "alice"));
    }
}
