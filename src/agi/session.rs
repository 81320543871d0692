//! [`AgiSession`]: one call's FastAGI connection, with the rules real Asterisk imposes.
//!
//! * **One command in flight.** Asterisk answers only the first of several commands written
//!   together, and a command written during playback stops the playback without a reply. `send`
//!   holds the writer until the reply is in; a second caller waits its turn. If a caller gives up
//!   on a reply (its future is dropped), the next command still waits for that reply to arrive
//!   and discards it, so replies never get out of step with commands.
//! * **HANGUP at any line boundary.** A reader runs beside the handler for the whole session.
//!   It applies every frame that arrived in one read before anyone sees the results, so a reply
//!   and a `HANGUP` that came together are seen together.
//! * **Dead channel.** After `HANGUP` only the commands in Asterisk's dead-safe table are sent;
//!   the rest fail at once with [`AgiError::ChannelDead`].
//! * **Closing.** Asterisk keeps the socket open after a hang-up and destroys the channel only
//!   when the script closes it. The server closes the session when its handler returns.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use super::codec::{AgiCodec, CodecError, Frame};
use super::command::{Command, Wait};
use super::env::AgiEnv;
use super::error::AgiError;
use super::reply::Reply;

/// A live FastAGI session. Cheap to clone; all clones share one connection.
#[derive(Clone)]
pub struct AgiSession {
    inner: Arc<Inner>,
}

struct Inner {
    env: AgiEnv,
    peer: SocketAddr,
    writer: tokio::sync::Mutex<Option<OwnedWriteHalf>>,
    state: Mutex<State>,
    changed: Notify,
    reply_grace: Duration,
    wrap_up: CancellationToken,
}

#[derive(Default)]
struct State {
    /// A command was written and its reply has not arrived.
    in_flight: bool,
    /// The sender of the in-flight command stopped waiting; its reply is to be dropped.
    abandoned: bool,
    reply: Option<Reply>,
    hung_up: bool,
    closed: Option<String>,
    /// Set when the session ended because something went wrong (protocol error, socket error,
    /// no reply in time) rather than by a normal close from either side.
    fault: bool,
}

impl State {
    fn close(&mut self, reason: impl Into<String>) {
        if self.closed.is_none() {
            self.closed = Some(reason.into());
        }
    }

    fn fail(&mut self, reason: impl Into<String>) {
        if self.closed.is_none() {
            self.closed = Some(reason.into());
            self.fault = true;
        }
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere never leaves State half-updated: every update is a few field writes.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn close(&self, reason: impl Into<String>) {
        self.state().close(reason);
        self.changed.notify_waiters();
    }

    fn fail(&self, reason: impl Into<String>) {
        self.state().fail(reason);
        self.changed.notify_waiters();
    }

    /// Waits until `check` returns `Some`, re-checking after every state change.
    async fn wait_for<T>(&self, mut check: impl FnMut(&mut State) -> Option<T>) -> T {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(value) = check(&mut self.state()) {
                return value;
            }
            notified.await;
        }
    }
}

/// Marks the in-flight command abandoned if its sender stops waiting.
struct InFlight<'a> {
    inner: &'a Inner,
    writing: bool,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.inner.state();
        if self.writing {
            // Part of the line may be on the wire; nothing sent after it could be trusted.
            state.fail("a command was abandoned while being written");
        } else if state.in_flight {
            state.abandoned = true;
        }
        state.reply = None;
        drop(state);
        self.inner.changed.notify_waiters();
    }
}

impl AgiSession {
    /// Starts a session on a connection whose environment block has been read. `buf` holds any
    /// bytes already read past the environment. Returns the session and the reader that must be
    /// polled alongside whoever uses the session (see [`super::server::drive`]).
    pub fn start(
        stream: TcpStream,
        env: AgiEnv,
        buf: BytesMut,
        codec: AgiCodec,
        peer: SocketAddr,
        reply_grace: Duration,
        wrap_up: CancellationToken,
    ) -> (AgiSession, SessionReader) {
        let (read, write) = stream.into_split();
        let inner = Arc::new(Inner {
            env,
            peer,
            writer: tokio::sync::Mutex::new(Some(write)),
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            reply_grace,
            wrap_up,
        });
        // The environment block grew the buffer; replies need far less.
        let buf = if buf.capacity() > READ_BUFFER && buf.len() < READ_BUFFER {
            let mut small = BytesMut::with_capacity(READ_BUFFER);
            small.extend_from_slice(&buf);
            small
        } else {
            buf
        };
        let reader = SessionReader { half: read, buf, codec, inner: inner.clone() };
        (AgiSession { inner }, reader)
    }

    /// The `agi_*` variables Asterisk sent at the start.
    pub fn env(&self) -> &AgiEnv {
        &self.inner.env
    }

    /// The address Asterisk connected from.
    pub fn peer(&self) -> SocketAddr {
        self.inner.peer
    }

    /// Sends one command and waits for its reply.
    ///
    /// The line is built and checked before anything is sent. `510`, `511` and `520` become
    /// [`AgiError::UnknownCommand`], [`AgiError::NotPermitted`] and [`AgiError::Usage`]; a `200`
    /// reply is interpreted by the command. Commands that Asterisk refuses on a dead channel fail
    /// with [`AgiError::ChannelDead`] without being sent once `HANGUP` has arrived.
    pub async fn send<C: Command>(&self, command: C) -> Result<C::Output, AgiError> {
        let line = command.line()?.finish()?;
        let name = command.name();
        let inner = &*self.inner;
        let mut writer = inner.writer.lock().await;
        // A previous sender may have given up on its reply; that reply must arrive first.
        inner.wait_for(|state| (!state.in_flight || state.closed.is_some()).then_some(())).await;
        {
            let mut state = inner.state();
            if let Some(reason) = &state.closed {
                return Err(AgiError::Closed { reason: reason.clone() });
            }
            if state.hung_up && !command.dead_safe() {
                return Err(AgiError::ChannelDead { command: name.into_owned() });
            }
            state.in_flight = true;
            state.abandoned = false;
            state.reply = None;
        }
        let mut guard = InFlight { inner, writing: true, done: false };
        let Some(half) = writer.as_mut() else {
            guard.done = true;
            inner.close("the daemon closed the session");
            return Err(AgiError::Closed { reason: "the daemon closed the session".into() });
        };
        tracing::trace!(command = %line.trim_end(), "sending");
        if let Err(e) = half.write_all(line.as_bytes()).await {
            guard.done = true;
            inner.fail(format!("write failed: {e}"));
            return Err(AgiError::Io(e));
        }
        guard.writing = false;

        let reply = inner.wait_for(|state| match state.reply.take() {
            Some(reply) => Some(Ok(reply)),
            None => state.closed.as_ref().map(|reason| {
                Err(AgiError::Closed { reason: format!("{reason} (while waiting for the reply to {name})") })
            }),
        });
        let limit = match command.wait() {
            Wait::Immediate => Some(inner.reply_grace),
            Wait::Within(time) => Some(time.saturating_add(inner.reply_grace)),
            Wait::Unbounded => None,
        };
        let reply = match limit {
            None => reply.await,
            Some(limit) => match tokio::time::timeout(limit, reply).await {
                Ok(reply) => reply,
                Err(_) => {
                    guard.done = true;
                    inner.fail(format!("no reply to {name} within {limit:?}"));
                    return Err(AgiError::Timeout { command: name.into_owned(), after: limit });
                }
            },
        };
        guard.done = true;
        drop(writer);
        let reply = reply?;
        tracing::trace!(%reply, "reply");
        match reply.code {
            510 => Err(AgiError::UnknownCommand { command: name.into_owned() }),
            511 => Err(AgiError::NotPermitted { command: name.into_owned() }),
            520 => Err(AgiError::Usage { command: name.into_owned(), usage: reply.text }),
            _ => command.parse(reply),
        }
    }

    /// True once Asterisk has sent `HANGUP`.
    pub fn is_hung_up(&self) -> bool {
        self.inner.state().hung_up
    }

    /// True once the connection is over, whoever ended it.
    pub fn is_closed(&self) -> bool {
        self.inner.state().closed.is_some()
    }

    /// Why the session is closed, if it is.
    pub fn close_reason(&self) -> Option<String> {
        self.inner.state().closed.clone()
    }

    /// Why the session broke, if it ended through a fault (protocol error, socket error, no reply
    /// in time) rather than a normal close.
    pub fn fault(&self) -> Option<String> {
        let state = self.inner.state();
        if state.fault { state.closed.clone() } else { None }
    }

    /// Resolves when the channel hangs up or the connection ends, whichever comes first.
    pub async fn hung_up(&self) {
        self.inner.wait_for(|state| (state.hung_up || state.closed.is_some()).then_some(())).await;
    }

    /// Resolves when the connection is over.
    pub async fn closed(&self) {
        self.inner.wait_for(|state| state.closed.is_some().then_some(())).await;
    }

    /// A token cancelled when the daemon's drain grace period is over and sessions must end.
    pub fn wrap_up(&self) -> &CancellationToken {
        &self.inner.wrap_up
    }

    /// Ends the session: half-closes the socket so Asterisk sees the script end and destroys the
    /// channel. Further sends fail with [`AgiError::Closed`].
    pub async fn close(&self) {
        let mut writer = self.inner.writer.lock().await;
        if let Some(mut half) = writer.take() {
            let _ = half.shutdown().await;
        }
        self.inner.close("the daemon closed the session");
    }
}

/// Reads frames from Asterisk for the session's whole life. Poll it in the same task as the
/// session's user, with [`super::server::Drive`] or [`SessionReader::run`]; it ends when the
/// connection does.
pub struct SessionReader {
    half: OwnedReadHalf,
    buf: BytesMut,
    codec: AgiCodec,
    inner: Arc<Inner>,
}

/// The reader keeps a small buffer for replies (most are under 40 bytes); the environment block
/// may have grown it. A daemon holds one per live call.
const READ_BUFFER: usize = 128;

impl SessionReader {
    /// Reads and applies frames until the connection ends or breaks.
    pub async fn run(mut self) {
        std::future::poll_fn(|cx| self.poll_run(cx)).await
    }

    /// One step of [`SessionReader::run`]: applies what has arrived, reads more, and returns
    /// `Ready` once the connection is over.
    pub fn poll_run(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        use std::task::Poll;
        loop {
            let batch = self.drain(false);
            if self.apply(batch) {
                return Poll::Ready(());
            }
            if self.buf.capacity() - self.buf.len() < 32 {
                self.buf.reserve(READ_BUFFER);
            }
            match tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut self.half), cx, &mut self.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    let batch = self.drain(true);
                    self.apply(batch);
                    self.inner.close("Asterisk closed the connection");
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    self.inner.fail(format!("read failed: {e}"));
                    return Poll::Ready(());
                }
            }
        }
    }

    /// Every complete frame in the buffer, and the error that stopped decoding, if any. At the
    /// end of the stream a partial line left over is an error.
    fn drain(&mut self, eof: bool) -> (Vec<Frame>, Option<CodecError>) {
        let mut frames = Vec::new();
        loop {
            let next = if eof { self.codec.decode_eof(&mut self.buf) } else { self.codec.decode(&mut self.buf) };
            match next {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => return (frames, None),
                Err(e) => return (frames, Some(e)),
            }
        }
    }

    /// Applies a batch of frames under one lock, then wakes waiters once. Returns true when the
    /// session is over.
    fn apply(&self, (frames, error): (Vec<Frame>, Option<CodecError>)) -> bool {
        if frames.is_empty() && error.is_none() {
            return self.inner.state().closed.is_some();
        }
        let mut state = self.inner.state();
        for frame in frames {
            match frame {
                Frame::Hangup => {
                    if !state.hung_up {
                        tracing::debug!("HANGUP: the channel hung up");
                    }
                    state.hung_up = true;
                }
                Frame::Reply(reply) if reply.code == 100 => {
                    tracing::trace!(%reply, "interim reply");
                }
                Frame::Reply(reply) => {
                    if !state.in_flight {
                        state.fail(format!("Asterisk sent a reply with no command in flight: {:?}", reply.to_string()));
                    } else if state.abandoned {
                        state.in_flight = false;
                        state.abandoned = false;
                    } else {
                        state.in_flight = false;
                        state.reply = Some(reply);
                    }
                }
                Frame::EnvLine(_) | Frame::EnvEnd => state.fail("environment line after the environment block"),
            }
        }
        if let Some(error) = error {
            state.fail(format!("protocol error: {error}"));
        }
        let closed = state.closed.is_some();
        drop(state);
        self.inner.changed.notify_waiters();
        closed
    }
}

/// Why a connection that sent nothing at all was closed: a TCP health check or port probe, not
/// an Asterisk that failed.
pub const CLOSED_BEFORE_ENV: &str = "connection closed before any environment variable";

/// Reads the environment block. Returns the environment and the codec, now expecting replies.
pub async fn read_env(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    codec: &mut AgiCodec,
    max_vars: usize,
) -> Result<AgiEnv, AgiError> {
    let mut env = AgiEnv::default();
    loop {
        while let Some(frame) = codec.decode(buf)? {
            match frame {
                Frame::EnvLine(line) => {
                    if env.len() >= max_vars {
                        return Err(AgiError::Closed {
                            reason: format!("more than {max_vars} agi_ variables in the environment block"),
                        });
                    }
                    env.push(line.key(), line.value());
                }
                Frame::EnvEnd => {
                    env.shrink();
                    return Ok(env);
                }
                other => {
                    return Err(AgiError::Closed { reason: format!("unexpected {other:?} in the environment block") });
                }
            }
        }
        if buf.capacity() - buf.len() < 128 {
            buf.reserve(1024);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(AgiError::Closed {
                reason: if env.is_empty() && buf.is_empty() {
                    CLOSED_BEFORE_ENV.into()
                } else {
                    format!(
                        "connection closed after {} environment variables, before the empty line that ends them",
                        env.len()
                    )
                },
            });
        }
    }
}
