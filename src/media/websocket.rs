//! A chan_websocket media session (Asterisk 22.6+), as the WebSocket *client* of Asterisk's own
//! HTTP server: `connection_type=server` in ARI's terms.
//!
//! Why asterai connects rather than waits for Asterisk (`connection_type=client`):
//! * nothing to configure on the Asterisk side: no `websocket_client.conf` entry naming asterai's
//!   address, which would differ per daemon in a fleet and per test;
//! * no new listener in asterai, so nothing more to secure or open in a firewall: the media goes
//!   over the ARI HTTP port that asterai already reaches (`ws://host:8088/media/<id>`);
//! * the connection id is a fresh UUID from Asterisk, unguessable, so only the ARI client that
//!   created the channel knows where to connect (the media URL needs no credentials);
//! * the channel stays `Down` until asterai connects and answers as it does, so a failed
//!   connection leaves no half-open call (Asterisk destroys it after ~30 s).
//!
//! One task reads (caller audio, DTMF, marks, XOFF/XON, errors, close), one writes (paced
//! frames, marks, commands). [`connect`] returns once MEDIA_START has arrived, with the format
//! Asterisk chose. Dropping the [`MediaSession`] stops both tasks and closes the socket.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use super::control::{self, Command, ControlFormat, Event, MediaStart};
use super::outbound::{Control, Item, MediaSender, Outbound, Pacer};
use super::{CloseReason, MediaError, MediaEvent, MediaSession, TaskGuard, Transport};

/// Audio kept ahead of the caller's playback (see [`super::outbound`]): 25 frames, far below
/// chan_websocket's XOFF level of 900.
pub const LEAD: Duration = Duration::from_millis(500);

/// Largest message accepted from Asterisk: a frame is at most a few KiB (slin192 at 20 ms is
/// 7,680 bytes); anything larger is not audio.
const MAX_MESSAGE: usize = 64 << 10;

/// How to connect.
#[derive(Debug, Clone)]
pub struct WebSocketOptions {
    /// How control messages are written; must match the channel's `transport_data=f(…)`
    /// (events are read in either format).
    pub control: ControlFormat,
    /// Time allowed for the connection and MEDIA_START.
    pub connect_timeout: Duration,
    /// Audio kept ahead of playback.
    pub lead: Duration,
    /// For `wss://`: the certificate authorities of `ari.ca_file` (None: the public web roots).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Default for WebSocketOptions {
    fn default() -> Self {
        WebSocketOptions {
            control: ControlFormat::Json,
            connect_timeout: Duration::from_secs(5),
            lead: LEAD,
            tls: None,
        }
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to the media URL of a server-mode WebSocket channel
/// (`ws://host:port/media/<MEDIA_WEBSOCKET_CONNECTION_ID>`) and waits for MEDIA_START.
pub async fn connect(url: &str, options: WebSocketOptions) -> Result<MediaSession, MediaError> {
    let connect_error = |message: String| MediaError::Connect { url: url.to_owned(), message };
    let mut request = url.into_client_request().map_err(|e| connect_error(e.to_string()))?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", tungstenite::http::HeaderValue::from_static("media"));
    let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_MESSAGE));
    let connector = options.tls.clone().map(tokio_tungstenite::Connector::Rustls);
    let connecting = tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector);
    let (mut socket, _) = match tokio::time::timeout(options.connect_timeout, connecting).await {
        Err(_) => return Err(connect_error(format!("no answer within {:?}", options.connect_timeout))),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status();
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            let body = crate::ari::AriError::from_response(status.as_u16(), Some("text/html"), body.as_bytes());
            return Err(connect_error(format!("Asterisk answered {status}: {}", body.message())));
        }
        Ok(Err(e)) => return Err(connect_error(e.to_string())),
        Ok(Ok(connected)) => connected,
    };
    let deadline = Instant::now() + options.connect_timeout;
    let start = loop {
        let message = match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => {
                return Err(MediaError::Handshake(format!("no MEDIA_START within {:?}", options.connect_timeout)));
            }
            Ok(None) => return Err(MediaError::Handshake("the connection closed before MEDIA_START".into())),
            Ok(Some(Err(e))) => return Err(MediaError::Handshake(format!("before MEDIA_START: {e}"))),
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(text) => match control::parse_event(&text) {
                Event::MediaStart(start) => break start,
                other => {
                    return Err(MediaError::Handshake(format!("expected MEDIA_START first, got {other:?}")));
                }
            },
            Message::Close(frame) => {
                return Err(MediaError::Handshake(format!("closed before MEDIA_START: {frame:?}")));
            }
            // Pings are answered by tungstenite; nothing else may come first.
            Message::Ping(_) | Message::Pong(_) => {}
            other => return Err(MediaError::Handshake(format!("expected MEDIA_START first, got {other:?}"))),
        }
    };
    let format = start.media_format().map_err(MediaError::Handshake)?;
    Ok(spawn_session(socket, start, format, options))
}

fn spawn_session(
    socket: Socket,
    start: MediaStart,
    format: super::MediaFormat,
    options: WebSocketOptions,
) -> MediaSession {
    let (sink, stream) = socket.split();
    let (events_tx, events) = mpsc::channel(256);
    let (control_tx, control_rx) = mpsc::channel(32);
    let (xoff_tx, xoff_rx) = watch::channel(false);
    let outbound = Outbound::new(format);
    let reader = tokio::spawn(read(stream, format, events_tx.clone(), xoff_tx, outbound.clone()));
    let writer = tokio::spawn(write(sink, outbound.clone(), control_rx, xoff_rx, options, events_tx));
    MediaSession {
        transport: Transport::WebSocket,
        format,
        channel_id: Some(start.channel_id.clone()),
        start: Some(start),
        uuid: None,
        events,
        sender: MediaSender { outbound, control: control_tx },
        _tasks: TaskGuard(vec![reader, writer]),
    }
}

async fn read(
    mut stream: futures_util::stream::SplitStream<Socket>,
    format: super::MediaFormat,
    events: mpsc::Sender<MediaEvent>,
    xoff: watch::Sender<bool>,
    outbound: Arc<Outbound>,
) {
    let reason = loop {
        let message = match stream.next().await {
            None => break CloseReason::Eof,
            Some(Err(e)) => break CloseReason::Error(e.to_string()),
            Some(Ok(message)) => message,
        };
        let event = match message {
            Message::Binary(bytes) => MediaEvent::Audio(format.codec.decode(&bytes)),
            Message::Text(text) => match control::parse_event(&text) {
                Event::MediaXoff => {
                    outbound.record(|s| s.xoffs += 1);
                    let _ = xoff.send(true);
                    continue;
                }
                Event::MediaXon => {
                    let _ = xoff.send(false);
                    continue;
                }
                Event::MarkProcessed(id) => MediaEvent::MarkProcessed(id),
                Event::QueueDrained => MediaEvent::QueueDrained,
                Event::DtmfEnd(digit) => MediaEvent::Dtmf(digit),
                Event::Error(text) => {
                    tracing::warn!("chan_websocket reported an error: {text}");
                    MediaEvent::Error(text)
                }
                Event::Status(status) => MediaEvent::Status(status),
                Event::MediaStart(_) | Event::BufferingCompleted(_) => continue,
                Event::Unknown(text) => {
                    tracing::debug!("chan_websocket sent a message asterai does not know: {text}");
                    continue;
                }
            },
            Message::Close(frame) => {
                let (code, reason) =
                    frame.map_or((None, String::new()), |f| (Some(u16::from(f.code)), f.reason.to_string()));
                break CloseReason::Closed { code, reason };
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        if events.send(event).await.is_err() {
            // Nobody listens any more: the session was dropped.
            return;
        }
    };
    outbound.close(&reason.to_string());
    let _ = events.send(MediaEvent::Closed(reason)).await;
}

async fn write(
    mut sink: futures_util::stream::SplitSink<Socket, Message>,
    outbound: Arc<Outbound>,
    mut control: mpsc::Receiver<Control>,
    mut xoff: watch::Receiver<bool>,
    options: WebSocketOptions,
    events: mpsc::Sender<MediaEvent>,
) {
    let format = options.control;
    let mut pacer = Pacer::new(Duration::from_millis(20), options.lead);
    let text = |command: &Command| command.encode(format).map(|t| Message::Text(t.into()));
    let failed = |e: tungstenite::Error| CloseReason::Error(format!("cannot write to the media socket: {e}"));
    let result: Result<(), CloseReason> = async {
        loop {
            let paused = *xoff.borrow();
            let ready_at = pacer.ready_at(Instant::now());
            tokio::select! {
                biased;
                command = control.recv() => match command {
                    None => return Ok(()),
                    Some(Control::Flush(done)) => {
                        sink.send(text(&Command::FlushMedia).expect("a fixed command")).await.map_err(failed)?;
                        pacer.reset();
                        outbound.set_playing_until(None);
                        let _ = done.send(());
                    }
                    Some(Control::Hangup(done)) => {
                        let _ = sink.send(text(&Command::Hangup).expect("a fixed command")).await;
                        outbound.close("asterai hung up the media channel");
                        let _ = done.send(());
                    }
                    Some(Control::Command(command)) => match text(&command) {
                        Ok(message) => sink.send(message).await.map_err(failed)?,
                        Err(e) => tracing::warn!("not sent to chan_websocket: {e}"),
                    },
                },
                changed = xoff.changed(), if paused => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                _ = outbound.wait_for_items(), if !paused && !outbound.has_items() => {
                    if outbound.is_closed() {
                        return Ok(());
                    }
                }
                _ = tokio::time::sleep_until(ready_at), if !paused && outbound.has_items() => {
                    match outbound.pop() {
                        // Emptied by a flush since the writer looked, or closed.
                        None if outbound.is_closed() => return Ok(()),
                        None => {}
                        Some(Item::Frame { bytes, queued_at }) => {
                            sink.send(Message::Binary(bytes)).await.map_err(failed)?;
                            let late = pacer.sent(Instant::now(), queued_at);
                            outbound.set_playing_until(pacer.playing_until());
                            outbound.record(|s| {
                                s.frames_sent += 1;
                                s.late_frames += late as u64;
                            });
                        }
                        Some(Item::Mark(id)) => match text(&Command::MarkMedia(id)) {
                            Ok(message) => {
                                sink.send(message).await.map_err(failed)?;
                                outbound.record(|s| s.marks_sent += 1);
                            }
                            Err(e) => tracing::warn!("mark not sent: {e}"),
                        },
                    }
                }
            }
        }
    }
    .await;
    if let Err(reason) = result {
        outbound.close(&reason.to_string());
        let _ = events.send(MediaEvent::Closed(reason)).await;
    }
    // A normal close when the session is dropped or hung up.
    let _ = sink
        .send(Message::Close(Some(tungstenite::protocol::CloseFrame { code: CloseCode::Normal, reason: "".into() })))
        .await;
}
