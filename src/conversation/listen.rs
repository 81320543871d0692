//! Listening to a live call: the caller's channel snooped through ARI and relayed to every
//! supervisor listening, as 16-bit PCM over their WebSocket (`GET /v1/calls/{id}/listen`).
//!
//! The first listener of a call sets up its [`Tap`]: `POST /channels/{caller}/snoop`
//! (`spy=both`, so both sides of the call are heard, `whisper=none`), a mixing bridge, and an
//! external media channel (chan_websocket, `slin16`, asterai connecting as for the streaming
//! path, [`crate::media::websocket`]) in the bridge with the snoop channel. Its frames go to a
//! broadcast channel that every listener of the call reads: a listener that cannot keep up
//! loses frames (its receiver lags), and never delays the call or the other listeners. The
//! AGI path's calls are ARI channels of the same Asterisk, so both paths can be listened to
//! when ARI is configured. When the last listener leaves, or the call ends, the tap's channels
//! and bridge are removed.
//!
//! The snoop and media channels enter the application with the argument `asterai-media`, which
//! the tracker leaves alone ([`crate::ari::MEDIA_CHANNEL_TAG`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use super::live::LiveCall;
use crate::ari::{AriClient, AriError, ExternalMedia, MEDIA_CHANNEL_TAG, Snoop};
use crate::media::websocket::{self, WebSocketOptions};
use crate::media::{Codec, ControlFormat, MediaEvent};

/// Frames kept for a listener that falls behind before it starts losing them (1.3 s).
pub const LISTENER_QUEUE: usize = 64;
/// A listener whose socket takes longer than this to take one frame is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the tap's channels may take to come up.
const SET_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// The format listeners get.
pub const LISTEN_CODEC: Codec = Codec::Slin16;

/// How to tap calls: ARI's client and the application the tap's channels enter (`ari.app`).
#[derive(Clone)]
pub struct ListenSetup {
    pub client: AriClient,
    pub app: String,
}

/// One frame of the call's audio for listeners: 16-bit little-endian mono PCM.
#[derive(Debug, Clone)]
pub struct Frame {
    pub pcm: bytes::Bytes,
    /// When asterai received it (for the relay's latency).
    pub at: Instant,
}

/// A call's audio, fanned out to its listeners.
pub struct Tap {
    /// Taken (so listeners see the end) when the tap stops.
    frames: Mutex<Option<broadcast::Sender<Frame>>>,
    /// Sample rate of the frames.
    pub rate: u32,
    listeners: Mutex<usize>,
    /// Cancelled when the last listener leaves: the tap is taken down.
    stop: CancellationToken,
}

/// A listener's hold on a tap: the frames, and the tap taken down when the last one drops.
pub struct Listener {
    pub frames: broadcast::Receiver<Frame>,
    pub tap: Arc<Tap>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut listeners = self.tap.listeners.lock().unwrap_or_else(|e| e.into_inner());
        *listeners = listeners.saturating_sub(1);
        if *listeners == 0 {
            self.tap.stop.cancel();
        }
    }
}

impl Tap {
    /// A tap fed by `frames` (samples at `rate`); `ended` stops it, and `cleanup` runs when it
    /// stops (for any reason). Returns the tap and its first listener.
    pub fn start(
        rate: u32,
        mut frames: mpsc::Receiver<Vec<i16>>,
        ended: CancellationToken,
        cleanup: impl Future<Output = ()> + Send + 'static,
    ) -> Listener {
        let (sender, receiver) = broadcast::channel(LISTENER_QUEUE);
        let tap = Arc::new(Tap {
            frames: Mutex::new(Some(sender.clone())),
            rate,
            listeners: Mutex::new(1),
            stop: CancellationToken::new(),
        });
        let stop = tap.stop.clone();
        let running = tap.clone();
        tokio::spawn(async move {
            let mut bytes = Vec::with_capacity(1280);
            loop {
                let samples = tokio::select! {
                    samples = frames.recv() => match samples {
                        Some(samples) => samples,
                        None => break,
                    },
                    _ = stop.cancelled() => break,
                    _ = ended.cancelled() => break,
                };
                let at = Instant::now();
                bytes.clear();
                for sample in &samples {
                    bytes.extend_from_slice(&sample.to_le_bytes());
                }
                // No listener left is not an error: the stop token follows.
                let _ = sender.send(Frame { pcm: bytes::Bytes::copy_from_slice(&bytes), at });
            }
            stop.cancel();
            // Listeners see the channel close once every sender is gone.
            running.frames.lock().unwrap_or_else(|e| e.into_inner()).take();
            drop(running);
            drop(sender);
            cleanup.await;
        });
        Listener { frames: receiver, tap }
    }

    /// A new listener, unless the tap is being taken down.
    pub fn join(self: &Arc<Tap>) -> Option<Listener> {
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let frames = self.frames.lock().unwrap_or_else(|e| e.into_inner()).as_ref()?.subscribe();
        if self.stop.is_cancelled() {
            return None;
        }
        *listeners += 1;
        Some(Listener { frames, tap: self.clone() })
    }

    /// Listeners now.
    pub fn listeners(&self) -> usize {
        *self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts listening to `call`: joins its tap, or sets one up through ARI. The error says what
/// Asterisk refused.
pub async fn listen(call: &LiveCall, setup: &ListenSetup) -> Result<Listener, String> {
    let mut slot = call.tap.lock().await;
    if let Some(listener) = slot.as_ref().and_then(|tap| tap.join()) {
        return Ok(listener);
    }
    let listener = set_up(call, setup).await?;
    *slot = Some(listener.tap.clone());
    Ok(listener)
}

/// The snoop channel, bridge and media channel of a new tap.
async fn set_up(call: &LiveCall, setup: &ListenSetup) -> Result<Listener, String> {
    let client = &setup.client;
    let id = uuid::Uuid::new_v4();
    let snoop_id = format!("asterai-snoop-{id}");
    let snoop = Snoop {
        app: setup.app.clone(),
        spy: "both".into(),
        whisper: "none".into(),
        app_args: vec![MEDIA_CHANNEL_TAG.to_owned()],
        snoop_id: Some(snoop_id.clone()),
    };
    client.snoop(&call.channel_id, &snoop).await.map_err(|e| format!("cannot snoop on the caller's channel: {e}"))?;
    let bridge = format!("asterai-listen-{id}");
    let media_id = format!("{}listen-{id}", super::stream::MEDIA_CHANNEL_PREFIX);
    let taken_down = {
        let (client, snoop_id, media_id, bridge) = (client.clone(), snoop_id.clone(), media_id.clone(), bridge.clone());
        async move {
            let _ = client.hangup(&snoop_id, None).await;
            let _ = client.hangup(&media_id, None).await;
            let _ = client.destroy_bridge(&bridge).await;
        }
    };
    match connect(client, &setup.app, &snoop_id, &bridge, &media_id, "asterai-listen", LISTEN_CODEC).await {
        Ok(mut session) => {
            let (tx, rx) = mpsc::channel(LISTENER_QUEUE);
            let rate = session.format().rate();
            let listener = Tap::start(rate, rx, call.ended().child_token(), taken_down);
            // The session's frames into the tap; a full queue drops the frame, never waits.
            let stop = listener.tap.stop.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        event = session.recv() => match event {
                            Some(MediaEvent::Audio(samples)) => {
                                let _ = tx.try_send(samples);
                            }
                            None | Some(MediaEvent::Closed(_)) => break,
                            Some(_) => {}
                        },
                        _ = stop.cancelled() => break,
                    }
                }
                drop(tx);
                session.close(Duration::from_secs(1)).await;
            });
            tracing::info!(call_id = %call.call_id, "listening: the caller's channel is snooped");
            Ok(listener)
        }
        Err(e) => {
            taken_down.await;
            Err(e)
        }
    }
}

/// Creates the bridge (named `name`) and the media channel, connects, and bridges the media
/// channel with the snoop channel (listening here, barging in [`super::barge`]).
pub(super) async fn connect(
    client: &AriClient,
    app: &str,
    snoop_id: &str,
    bridge: &str,
    media_id: &str,
    name: &str,
    codec: Codec,
) -> Result<crate::media::MediaSession, String> {
    client
        .create_bridge("mixing", Some(bridge), Some(name))
        .await
        .map_err(|e| format!("cannot create the bridge: {e}"))?;
    let session = open_media(client, app, media_id, codec).await?;
    join_bridge(client, bridge, &[snoop_id, media_id])
        .await
        .map_err(|e| format!("cannot bridge the snoop channel with the media channel: {e}"))?;
    Ok(session)
}

/// Creates the external media channel `media_id` (chan_websocket, in `codec`) and connects to
/// it.
pub(super) async fn open_media(
    client: &AriClient,
    app: &str,
    media_id: &str,
    codec: Codec,
) -> Result<crate::media::MediaSession, String> {
    let mut media = ExternalMedia::websocket_server(app, codec.name(), false);
    media.channel_id = Some(media_id.to_owned());
    let created = client.external_media(&media).await.map_err(|e| format!("externalMedia: {e}"))?;
    let connection_id = created
        .channelvars
        .as_ref()
        .and_then(|vars| vars.get("MEDIA_WEBSOCKET_CONNECTION_ID"))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| media_id.to_owned());
    let url = client.settings().media_url(&connection_id).map_err(|e| e.to_string())?;
    let options = WebSocketOptions {
        control: ControlFormat::PlainText,
        connect_timeout: SET_UP_TIMEOUT,
        tls: client.tls(),
        ..WebSocketOptions::default()
    };
    websocket::connect(&url, options).await.map_err(|e| e.to_string())
}

/// Adds `channels` to `bridge`. The channels enter the application a moment after ARI answers;
/// Asterisk refuses to bridge a channel before ("Channel not in Stasis application").
pub(super) async fn join_bridge(client: &AriClient, bridge: &str, channels: &[&str]) -> Result<(), AriError> {
    let deadline = Instant::now() + SET_UP_TIMEOUT;
    loop {
        match client.add_to_bridge(bridge, channels).await {
            Ok(()) => return Ok(()),
            Err(AriError::Conflict(_) | AriError::Unprocessable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Relays a listener's frames to its WebSocket until the call ends (close 1000), the daemon
/// stops (`shutdown`: 1001), the client leaves, or its socket stalls for [`WRITE_TIMEOUT`]. The
/// first message is text: `{"type": "listen.start", "rate": 16000, "format": "s16le", …}`; then
/// one binary message per frame. Returns why it ended.
pub async fn relay<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    listener: &mut Listener,
    call_id: &str,
    shutdown: &CancellationToken,
) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let start = serde_json::json!({
        "type": "listen.start",
        "call_id": call_id,
        "rate": listener.tap.rate,
        "format": "s16le",
        "channels": 1,
    });
    if ws.send(Message::Text(start.to_string().into())).await.is_err() {
        return "the listener left".into();
    }
    let close =
        |code: CloseCode, reason: &str| Message::Close(Some(CloseFrame { code, reason: reason.to_owned().into() }));
    loop {
        tokio::select! {
            frame = listener.frames.recv() => match frame {
                Ok(frame) => {
                    match tokio::time::timeout(WRITE_TIMEOUT, ws.send(Message::Binary(frame.pcm))).await {
                        Ok(Ok(())) => {
                            metrics::histogram!("asterai_listen_relay_seconds").record(frame.at.elapsed().as_secs_f64());
                        }
                        Ok(Err(_)) => return "the listener left".into(),
                        Err(_) => {
                            let _ = ws.send(close(CloseCode::Again, "the listener's connection is too slow")).await;
                            return "the listener's connection stalled".into();
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    metrics::counter!("asterai_listen_frames_dropped_total").increment(missed);
                }
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = ws.send(close(CloseCode::Normal, "the call ended")).await;
                    return "the call ended".into();
                }
            },
            message = ws.next() => match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return "the listener left".into(),
                Some(Ok(_)) => {}
            },
            _ = shutdown.cancelled() => {
                let _ = ws.send(close(CloseCode::Away, "asterai is stopping")).await;
                return "asterai is stopping".into();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listeners_share_frames_and_see_the_end_of_the_call() {
        let (tx, rx) = mpsc::channel(8);
        let ended = CancellationToken::new();
        let (cleaned, mut cleaned_rx) = mpsc::channel::<()>(1);
        let mut first = Tap::start(16_000, rx, ended.clone(), async move {
            let _ = cleaned.send(()).await;
        });
        let mut second = first.tap.join().expect("the tap runs");
        assert_eq!(first.tap.listeners(), 2);
        tx.send(vec![1, -2]).await.unwrap();
        for listener in [&mut first, &mut second] {
            let frame = listener.frames.recv().await.unwrap();
            assert_eq!(&frame.pcm[..], &[1, 0, 0xfe, 0xff]);
        }
        ended.cancel();
        for listener in [&mut first, &mut second] {
            assert!(matches!(listener.frames.recv().await, Err(broadcast::error::RecvError::Closed)));
        }
        cleaned_rx.recv().await.expect("the tap's channels are taken down");
        assert!(first.tap.join().is_none(), "a stopped tap takes no listener");
    }

    #[tokio::test]
    async fn the_last_listener_leaving_stops_the_tap() {
        let (_tx, rx) = mpsc::channel::<Vec<i16>>(8);
        let (cleaned, mut cleaned_rx) = mpsc::channel::<()>(1);
        let first = Tap::start(8_000, rx, CancellationToken::new(), async move {
            let _ = cleaned.send(()).await;
        });
        let second = first.tap.join().unwrap();
        drop(first);
        assert!(!second.tap.stop.is_cancelled(), "one listener is left");
        drop(second);
        cleaned_rx.recv().await.expect("taken down once nobody listens");
    }
}
