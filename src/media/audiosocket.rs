//! The AudioSocket fallback, for an Asterisk without chan_websocket (20.x and 21.x before it
//! was added): ARI `externalMedia` with `encapsulation=audiosocket`, `transport=tcp`,
//! `external_host=<this listener>` and `data=<a UUID>`; Asterisk connects to asterai when it
//! creates the channel and first sends that UUID.
//!
//! The protocol (`res/res_audiosocket.c`; captured in `fixtures/asterisk/media/as-*.txt`): each
//! message is a kind byte, a 16-bit big-endian length and the payload. `0x00` hang-up, `0x01`
//! the UUID (16 bytes), `0x03` one DTMF digit (22.4+), `0x10` slin at 8 kHz, `0x12` slin16
//! (22.7+), `0xff` an error. Asterisk never sends a hang-up of its own: when the caller hangs up
//! nothing arrives, and deleting the channel closes the connection.
//!
//! The [`AudioSocketServer`] accepts only the UUIDs asterai announced with
//! [`AudioSocketServer::expect`]; any other connection gets a hang-up message and is closed, so
//! a stray or hostile peer can neither inject audio nor hold a socket open. AudioSocket has no
//! playback queue to flush and no marks: asterai paces its own output in real time (two frames
//! ahead), a flush simply stops sending, and a mark is reported when the audio before it has
//! been played by that clock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::format::{Codec, MediaFormat};
use super::outbound::{Control, Item, MediaSender, Outbound, Pacer};
use super::{CloseReason, MediaError, MediaEvent, MediaSession, TaskGuard, Transport};

pub const KIND_HANGUP: u8 = 0x00;
pub const KIND_UUID: u8 = 0x01;
pub const KIND_DTMF: u8 = 0x03;
pub const KIND_ERROR: u8 = 0xff;

/// Audio sent ahead of real time: it cannot be taken back, so only enough to ride out jitter.
pub const LEAD: Duration = Duration::from_millis(40);

/// Time a new connection has to send its UUID.
const UUID_TIMEOUT: Duration = Duration::from_secs(5);

/// One AudioSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: u8,
    pub payload: Vec<u8>,
}

impl Message {
    /// The bytes on the wire. A payload over 65,535 bytes cannot be framed.
    pub fn encode(&self) -> Result<Vec<u8>, MediaError> {
        let len = u16::try_from(self.payload.len()).map_err(|_| {
            MediaError::Invalid(format!("an AudioSocket payload of {} bytes; at most 65535", self.payload.len()))
        })?;
        let mut out = Vec::with_capacity(3 + self.payload.len());
        out.push(self.kind);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.payload);
        Ok(out)
    }

    pub fn hangup() -> Message {
        Message { kind: KIND_HANGUP, payload: Vec::new() }
    }
}

/// Reads one message; `Ok(None)` at a clean end of stream before a header.
pub async fn read_message<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Option<Message>> {
    let mut header = [0u8; 3];
    match reader.read_exact(&mut header[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    reader.read_exact(&mut header[1..]).await?;
    let len = u16::from_be_bytes([header[1], header[2]]) as usize;
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    Ok(Some(Message { kind: header[0], payload }))
}

type Waiting = HashMap<Uuid, (Codec, oneshot::Sender<MediaSession>)>;

/// The listener Asterisk's AudioSocket channels connect to (`stream.audiosocket_listen`).
pub struct AudioSocketServer {
    addr: SocketAddr,
    waiting: Arc<Mutex<Waiting>>,
    stop: CancellationToken,
}

impl Drop for AudioSocketServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A connection asterai announced and waits for.
pub struct Expected {
    uuid: Uuid,
    waiting: Arc<Mutex<Waiting>>,
    session: oneshot::Receiver<MediaSession>,
}

impl Expected {
    /// The UUID to pass as externalMedia's `data`.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// Waits for Asterisk to connect with the UUID.
    pub async fn connected(mut self, timeout: Duration) -> Result<MediaSession, MediaError> {
        match tokio::time::timeout(timeout, &mut self.session).await {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(_)) => Err(MediaError::Closed("the AudioSocket listener stopped".into())),
            Err(_) => {
                Err(MediaError::Handshake(format!("Asterisk did not connect with {} within {timeout:?}", self.uuid)))
            }
        }
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.uuid);
    }
}

impl AudioSocketServer {
    /// Listens on `addr` (loopback by default: Asterisk connects from the same host).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<AudioSocketServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let waiting: Arc<Mutex<Waiting>> = Arc::default();
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, waiting.clone(), stop.clone()));
        tracing::info!(%addr, "AudioSocket listener ready");
        Ok(AudioSocketServer { addr, waiting, stop })
    }

    /// Where Asterisk connects: externalMedia's `external_host`.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Announces a connection: a new UUID to create the channel with, and the session once
    /// Asterisk connects with it. Only `slin` and `slin16` travel over AudioSocket.
    pub fn expect(&self, codec: Codec) -> Result<Expected, MediaError> {
        if codec.audiosocket_kind().is_none() {
            return Err(MediaError::Invalid(format!("AudioSocket carries slin or slin16, not {codec}")));
        }
        let uuid = Uuid::new_v4();
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(uuid, (codec, tx));
        Ok(Expected { uuid, waiting: self.waiting.clone(), session: rx })
    }
}

async fn accept(listener: TcpListener, waiting: Arc<Mutex<Waiting>>, stop: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("AudioSocket accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let waiting = waiting.clone();
        tokio::spawn(async move {
            if let Err(reason) = handshake(stream, peer, &waiting).await {
                tracing::warn!(%peer, "AudioSocket connection refused: {reason}");
            }
        });
    }
}

async fn handshake(mut stream: TcpStream, peer: SocketAddr, waiting: &Mutex<Waiting>) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let first = match tokio::time::timeout(UUID_TIMEOUT, read_message(&mut stream)).await {
        Err(_) => return Err(format!("no UUID message within {UUID_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(format!("reading the UUID message: {e}")),
        Ok(Ok(None)) => return Err("closed before sending its UUID".into()),
        Ok(Ok(Some(message))) => message,
    };
    let refuse = |mut stream: TcpStream, reason: String| async move {
        let _ = stream.write_all(&Message::hangup().encode().expect("an empty payload")).await;
        let _ = stream.shutdown().await;
        Err(reason)
    };
    if first.kind != KIND_UUID || first.payload.len() != 16 {
        return refuse(
            stream,
            format!(
                "expected a UUID message (kind 0x01, 16 bytes) first, got kind {:#04x} with {} bytes",
                first.kind,
                first.payload.len()
            ),
        )
        .await;
    }
    let uuid = Uuid::from_slice(&first.payload).expect("16 bytes");
    let Some((codec, deliver)) = waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&uuid) else {
        return refuse(stream, format!("unknown UUID {uuid} (no call announced it)")).await;
    };
    let session = spawn_session(stream, uuid, codec);
    tracing::debug!(%peer, %uuid, "AudioSocket connected");
    if deliver.send(session).is_err() {
        // The call stopped waiting in the meantime; dropping the session closes the socket.
        return Err(format!("{uuid}: the call stopped waiting"));
    }
    Ok(())
}

/// A session over an accepted AudioSocket connection (after its UUID message).
pub fn spawn_session<S>(stream: S, uuid: Uuid, codec: Codec) -> MediaSession
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let format = MediaFormat::new(codec);
    let (read_half, write_half) = tokio::io::split(stream);
    let (events_tx, events) = mpsc::channel(256);
    let (control_tx, control_rx) = mpsc::channel(32);
    let outbound = Outbound::new(format);
    let reader = tokio::spawn(read(read_half, format, events_tx.clone(), outbound.clone()));
    let writer = tokio::spawn(write(write_half, format, outbound.clone(), control_rx, events_tx));
    MediaSession {
        transport: Transport::AudioSocket,
        format,
        channel_id: None,
        start: None,
        uuid: Some(uuid),
        events,
        sender: MediaSender { outbound, control: control_tx },
        _tasks: TaskGuard(vec![reader, writer]),
    }
}

async fn read<R: AsyncRead + Unpin>(
    mut reader: R,
    format: MediaFormat,
    events: mpsc::Sender<MediaEvent>,
    outbound: Arc<Outbound>,
) {
    let reason = loop {
        let message = match read_message(&mut reader).await {
            Ok(None) => break CloseReason::Eof,
            Err(e) => break CloseReason::Error(e.to_string()),
            Ok(Some(message)) => message,
        };
        let event = match message.kind {
            KIND_HANGUP => break CloseReason::Hangup,
            KIND_UUID => continue,
            KIND_DTMF => match message.payload.first() {
                Some(digit) if digit.is_ascii_graphic() => MediaEvent::Dtmf(*digit as char),
                _ => continue,
            },
            KIND_ERROR => {
                let code = message.payload.first().copied().unwrap_or(0);
                tracing::warn!("AudioSocket reported error code {code:#04x}");
                MediaEvent::Error(format!("AudioSocket error code {code:#04x}"))
            }
            kind => match Codec::from_audiosocket_kind(kind) {
                Some(codec) if codec == format.codec => MediaEvent::Audio(codec.decode(&message.payload)),
                Some(codec) => {
                    tracing::warn!("AudioSocket sent {codec} audio on a {} session; ignored", format.codec);
                    continue;
                }
                None => {
                    tracing::debug!("AudioSocket message of unknown kind {kind:#04x} ignored");
                    continue;
                }
            },
        };
        if events.send(event).await.is_err() {
            return;
        }
    };
    outbound.close(&reason.to_string());
    let _ = events.send(MediaEvent::Closed(reason)).await;
}

async fn write<W: AsyncWrite + Unpin>(
    mut writer: W,
    format: MediaFormat,
    outbound: Arc<Outbound>,
    mut control: mpsc::Receiver<Control>,
    events: mpsc::Sender<MediaEvent>,
) {
    let kind = format.codec.audiosocket_kind().expect("checked when the session was announced");
    let mut pacer = Pacer::new(format.frame_duration(), LEAD);
    // Marks reached by the writer, reported when the audio before them has played.
    let mut marks: std::collections::VecDeque<(Instant, String)> = Default::default();
    let result: Result<(), CloseReason> = async {
        loop {
            let ready_at = pacer.ready_at(Instant::now());
            let next_mark = marks.front().map(|(at, _)| *at);
            tokio::select! {
                biased;
                command = control.recv() => match command {
                    None => return Ok(()),
                    Some(Control::Flush(done)) => {
                        // What was sent plays on (at most the lead); what was not is gone.
                        marks.clear();
                        pacer.reset();
                        outbound.set_playing_until(None);
                        let _ = done.send(());
                    }
                    Some(Control::Hangup(done)) => {
                        let _ = writer.write_all(&Message::hangup().encode().expect("empty")).await;
                        // Asterisk closes the connection on a hang-up; the FIN says asterai is done
                        // either way.
                        let _ = writer.shutdown().await;
                        outbound.close("asterai hung up the media channel");
                        let _ = done.send(());
                        return Ok(());
                    }
                    Some(Control::Command(command)) => {
                        tracing::debug!("{} has no AudioSocket equivalent; ignored", command.name());
                    }
                },
                _ = tokio::time::sleep_until(next_mark.unwrap_or_else(Instant::now)), if next_mark.is_some() => {
                    let (_, id) = marks.pop_front().expect("a mark is due");
                    if events.send(MediaEvent::MarkProcessed(id)).await.is_err() {
                        return Ok(());
                    }
                }
                _ = outbound.wait_for_items(), if !outbound.has_items() => {
                    if outbound.is_closed() {
                        return Ok(());
                    }
                }
                _ = tokio::time::sleep_until(ready_at), if outbound.has_items() => match outbound.pop() {
                    // Emptied by a flush since the writer looked, or closed.
                    None if outbound.is_closed() => return Ok(()),
                    None => {}
                    Some(Item::Frame { bytes, queued_at }) => {
                        let message = Message { kind, payload: bytes.to_vec() }.encode().expect("a frame fits");
                        writer.write_all(&message).await.map_err(|e| CloseReason::Error(format!("cannot write to AudioSocket: {e}")))?;
                        let late = pacer.sent(Instant::now(), queued_at);
                        outbound.set_playing_until(pacer.playing_until());
                        outbound.record(|s| {
                            s.frames_sent += 1;
                            s.late_frames += late as u64;
                        });
                    }
                    Some(Item::Mark(id)) => {
                        outbound.record(|s| s.marks_sent += 1);
                        marks.push_back((pacer.playing_until().unwrap_or_else(Instant::now), id));
                    }
                },
            }
        }
    }
    .await;
    if let Err(reason) = result {
        outbound.close(&reason.to_string());
        let _ = events.send(MediaEvent::Closed(reason)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_round_trip_like_the_capture() {
        // `12 02 80` + 640 bytes: slin16 audio, as captured.
        let message = Message { kind: 0x12, payload: vec![0; 640] };
        let bytes = message.encode().unwrap();
        assert_eq!(&bytes[..3], &[0x12, 0x02, 0x80]);
        let mut cursor = std::io::Cursor::new([bytes, vec![0x03, 0x00, 0x01, b'#']].concat());
        assert_eq!(read_message(&mut cursor).await.unwrap().unwrap(), message);
        assert_eq!(read_message(&mut cursor).await.unwrap().unwrap(), Message { kind: KIND_DTMF, payload: vec![b'#'] });
        assert_eq!(read_message(&mut cursor).await.unwrap(), None);
        // A header cut short is an error, not a clean end.
        let mut cut = std::io::Cursor::new(vec![0x10, 0x01]);
        assert!(read_message(&mut cut).await.is_err());
        assert!(Message { kind: 0x10, payload: vec![0; 70_000] }.encode().is_err());
        assert_eq!(Message::hangup().encode().unwrap(), vec![0, 0, 0]);
    }
}
