//! The streaming media path: the caller's audio in, the agent's audio out, frame by frame,
//! through an ARI external media channel bridged with the caller. No AI and no store here; the
//! conversation drives a [`MediaSession`] and sees only "frames in, frames out, flush, mark,
//! DTMF, hang-up", whichever transport carries them.
//!
//! * [`websocket`]: chan_websocket (Asterisk 22.6+), asterai connecting to Asterisk's
//!   `/media/<connection_id>` (the module docs say why that direction). Control messages
//!   ([`control`]) in JSON (22.8+) or plain text.
//! * [`audiosocket`]: the fallback for Asterisk versions without chan_websocket: a TCP listener
//!   of asterai's that accepts only the UUIDs it announced.
//! * [`outbound`]: the agent's audio queue, cut into frames, paced against the caller's
//!   playout clock, honouring MEDIA_XOFF/MEDIA_XON, with marks and flush.
//! * [`format`]: ulaw / slin / slin16, µ-law coding and frame sizes.
//!
//! A call on this path (the conversation core wires it): ARI answers the caller, creates a
//! mixing bridge and `POST /channels/externalMedia` ([`crate::ari::ExternalMedia`]); asterai
//! connects ([`websocket::connect`]) or Asterisk does ([`audiosocket::AudioSocketServer`]), both
//! channels go into the bridge, and from then on [`MediaSession::recv`] yields the caller's
//! frames while [`MediaSender`] plays the agent.

use std::fmt;

use tokio::sync::mpsc;

pub mod audiosocket;
pub mod control;
pub mod format;
pub mod outbound;
pub mod websocket;

pub use control::{Command, ControlFormat, MediaStart, Status};
pub use format::{Codec, MediaFormat};
pub use outbound::{Flushed, MediaSender, SenderStats};

/// Why the media path failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("cannot connect to the media socket {url}: {message}")]
    Connect { url: String, message: String },
    #[error("media session did not start: {0}")]
    Handshake(String),
    #[error("media session closed: {0}")]
    Closed(String),
    #[error("{0}")]
    Invalid(String),
}

/// Which transport carries a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    AudioSocket,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::WebSocket => "websocket",
            Transport::AudioSocket => "audiosocket",
        })
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer hung the media channel up (AudioSocket's hang-up message).
    Hangup,
    /// A WebSocket close frame: 1000 after HANGUP or an ARI DELETE of the channel, 1009 for a
    /// message over 65,535 bytes.
    Closed {
        code: Option<u16>,
        reason: String,
    },
    /// The connection ended without a word (AudioSocket after an ARI DELETE).
    Eof,
    Error(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Hangup => f.write_str("the media channel hung up"),
            CloseReason::Closed { code: Some(code), reason } if !reason.is_empty() => {
                write!(f, "closed by Asterisk (code {code}: {reason})")
            }
            CloseReason::Closed { code: Some(code), .. } => write!(f, "closed by Asterisk (code {code})"),
            CloseReason::Closed { code: None, .. } => f.write_str("closed by Asterisk"),
            CloseReason::Eof => f.write_str("the media connection ended"),
            CloseReason::Error(e) => write!(f, "media connection failed: {e}"),
        }
    }
}

/// What the caller's side of a session delivers, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// One frame of the caller's audio, as samples at the session's rate (usually 20 ms; the
    /// last frame of a prompt is shorter). Frames come only while the caller's side makes sound.
    Audio(Vec<i16>),
    /// A DTMF digit the caller pressed (`0-9`, `*`, `#`, `A-D`).
    Dtmf(char),
    /// The caller has heard everything sent before [`MediaSender::mark`]`(id)`.
    MarkProcessed(String),
    /// chan_websocket's playback queue ran empty (after REPORT_QUEUE_DRAINED).
    QueueDrained,
    /// chan_websocket's answer to GET_STATUS.
    Status(Status),
    /// Asterisk reported an error about a command; the session goes on.
    Error(String),
    /// The session is over; nothing follows.
    Closed(CloseReason),
}

/// Aborts the session's tasks when the session is dropped.
pub(crate) struct TaskGuard(pub(crate) Vec<tokio::task::JoinHandle<()>>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// One call's media connection. Dropping it closes the connection.
pub struct MediaSession {
    pub(crate) transport: Transport,
    pub(crate) format: MediaFormat,
    /// chan_websocket's channel id (from MEDIA_START).
    pub(crate) channel_id: Option<String>,
    pub(crate) start: Option<MediaStart>,
    pub(crate) uuid: Option<uuid::Uuid>,
    pub(crate) events: mpsc::Receiver<MediaEvent>,
    pub(crate) sender: MediaSender,
    pub(crate) _tasks: TaskGuard,
}

impl fmt::Debug for MediaSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaSession")
            .field("transport", &self.transport)
            .field("format", &self.format)
            .field("channel_id", &self.channel_id)
            .finish()
    }
}

impl MediaSession {
    /// The next event; `None` after [`MediaEvent::Closed`].
    pub async fn recv(&mut self) -> Option<MediaEvent> {
        self.events.recv().await
    }

    /// Events received and not read yet: how far the session's reader is behind (each caller
    /// frame is 20 ms).
    pub fn backlog(&self) -> usize {
        self.events.len()
    }

    /// The agent's side: audio, marks, flush, hang-up. Clone it into the tasks that speak.
    pub fn sender(&self) -> MediaSender {
        self.sender.clone()
    }

    /// The codec and frame size of both directions.
    pub fn format(&self) -> MediaFormat {
        self.format
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// chan_websocket's MEDIA_START (its channel id and variables); `None` on AudioSocket.
    pub fn media_start(&self) -> Option<&MediaStart> {
        self.start.as_ref()
    }

    /// The ARI id of the WebSocket channel, when chan_websocket said.
    pub fn channel_id(&self) -> Option<&str> {
        self.channel_id.as_deref()
    }

    /// The AudioSocket UUID of the session; `None` on chan_websocket.
    pub fn uuid(&self) -> Option<uuid::Uuid> {
        self.uuid
    }

    /// Hangs up the media channel and waits for the connection to end (at most `timeout`).
    pub async fn close(mut self, timeout: std::time::Duration) {
        self.sender.hangup().await;
        let _ = tokio::time::timeout(timeout, async {
            while let Some(event) = self.events.recv().await {
                if matches!(event, MediaEvent::Closed(_)) {
                    break;
                }
            }
        })
        .await;
    }
}
