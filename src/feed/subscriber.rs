//! One supervisor's WebSocket: replay, then live delivery, with a bounded queue and a heartbeat.
//!
//! * **Resume.** The client subscribes to the hub *before* the replay of `id > since` is read
//!   from the store, and an event is sent only if its id is above the last one sent. Events
//!   written during the replay come either from the replay or from the queue, never twice.
//! * **Slow clients.** Live events wait in a queue of `feed.client_queue` events. When it is
//!   full while the client's socket is not draining, the hub drops the client (see
//!   [`super::hub`]), which is closed with code [`CLOSE_SLOW`] and reason
//!   `slow_client last_id=<n>`: `<n>` is the last event written to the socket, so resuming with
//!   `since=<n>` loses nothing. Nothing a client does slows the hub, calls or other clients. A
//!   client that reads nothing for `feed.write_timeout` is dropped without a close frame (it
//!   is not reading one either); it resumes after the last whole event it received.
//! * **Heartbeat.** A ping every `feed.ping_interval`; a client that has not answered the
//!   previous ping by the next one is closed with [`CLOSE_HEARTBEAT`].
//! * **Filters.** The client may send `{"filter": {"call_id": "…", "campaign": 3, "types":
//!   ["conversation_turn"]}}` at any time (`{"filter": null}` clears it); the server answers
//!   `{"type": "feed.filter", …}`. Malformed messages get `{"type": "feed.error", …}`; frames that
//!   break the WebSocket protocol end the connection with the RFC's close code.
//! * After the replay the server sends `{"type": "feed.ready", "org": …, "last_id": …}`.
//! * Ids are the organization's own sequence ([`crate::store::Event`]), so `since`, `last_id`
//!   and the close reasons say nothing about other organizations.
//! * **Closing.** After a close frame of its own (slow client, heartbeat, shutdown, protocol
//!   error) the server half-closes and keeps reading, discarding, until the client closes too
//!   (bounded): a socket closed with unread data resets the connection, and the client would
//!   lose what it had not read yet, the close frame and its last id included.
//!
//! The WebSocket protocol (RFC 6455) is tokio-tungstenite's, over hyper's upgraded connection.
//! It reads client frames strictly: masked, no extension bits, control frames whole and at most
//! 125 bytes, messages within `feed.max_message_bytes`, close frames with a code a peer may send
//! and a UTF-8 reason. A client that breaks the protocol is closed with the code the RFC names
//! (1002, 1007 for invalid UTF-8, 1009 for a message over the limit); it answers pings, and a
//! client's close, itself.
//!
//! Two tasks per connection: the writer (replay, live events, pings, close) and the reader
//! (filters, pongs, the client's close). Both go through one tungstenite connection, split in
//! two; the reader's own writes are tungstenite's answers to pings and closes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use super::filter::Filter;
use super::hub::{Hub, Stop, StopReason, Subscription};
use crate::store::{SkipReason, Skipped, Store};

/// Close code: the client's queue overflowed. The reason is `slow_client last_id=<n>`.
pub const CLOSE_SLOW: u16 = 4001;
/// Close code: the client did not answer a ping in time. Reason `heartbeat_timeout last_id=<n>`.
pub const CLOSE_HEARTBEAT: u16 = 4002;
/// Close code: the daemon is shutting down (WebSocket "going away"). Reason `shutdown last_id=<n>`.
pub const CLOSE_SHUTDOWN: u16 = 1001;

/// Most hub batches written with one write.
const BATCHES: usize = 16;
/// Events read per replay query.
const REPLAY_PAGE: i64 = 500;
/// How long a connection that broke the protocol is drained, at most, before it is dropped: it
/// ends sooner when the client closes, sends nothing for [`LINGER_IDLE`], or has sent
/// [`LINGER_BYTES`].
pub const LINGER: Duration = Duration::from_secs(30);
/// See [`LINGER`].
pub const LINGER_IDLE: Duration = Duration::from_secs(5);
/// See [`LINGER`].
pub const LINGER_BYTES: usize = 64 << 20;
/// tungstenite's read buffer per connection. Clients send small messages (filters, pongs), and
/// tungstenite zero-fills up to this much on every read (128 KiB by default).
const READ_BUFFER: usize = 4 * 1024;

/// Settings of every subscriber's connection (`[feed]` in the config).
#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    pub ping_interval: Duration,
    pub queue: usize,
    pub write_timeout: Duration,
    /// Largest message a client may send.
    pub max_message_bytes: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientMessage {
    filter: Option<Filter>,
}

/// Who is connected and from where they resume.
pub struct SubscriberStart {
    pub org_id: i64,
    pub org_slug: String,
    /// Events with a greater id are delivered: the client's `since`, or the last stored event
    /// when the client connected.
    pub after: i64,
}

/// Subscribes a client and fixes where its feed starts. Call it before answering the upgrade,
/// so that every event stored after the client sees `101 Switching Protocols` reaches it.
///
/// Without `since`, the feed starts after the organization's last event: read from the store,
/// else (the database is unreachable) from what this daemon's hub handed out last. An error
/// says that neither is known; the client should retry.
pub async fn start(
    hub: &Arc<Hub>,
    store: &Store,
    org_id: i64,
    org_slug: String,
    since: Option<i64>,
    filter: Filter,
    queue: usize,
) -> Result<(SubscriberStart, Subscription), String> {
    let subscription = hub.subscribe(org_id, filter, queue);
    let after = match since {
        Some(since) => since,
        None => match store.last_event_id(org_id).await {
            Ok(last) => last,
            Err(e) => match hub.last_event_id(org_id) {
                Some(last) => {
                    tracing::warn!(
                        "feed: cannot read the event log for a new client: {e}; starting after the last event handed out"
                    );
                    last
                }
                None => return Err(format!("cannot tell where the feed starts, the database is unavailable: {e}")),
            },
        },
    };
    Ok((SubscriberStart { org_id, org_slug, after }, subscription))
}

/// Why a subscriber's connection ended: decides its close frame (if any) and how long the
/// reader may linger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disconnect {
    SlowClient,
    Heartbeat,
    Shutdown,
    ClientGone,
    WriteFailed,
}

impl From<StopReason> for Disconnect {
    fn from(reason: StopReason) -> Self {
        match reason {
            StopReason::SlowClient => Disconnect::SlowClient,
            StopReason::Shutdown => Disconnect::Shutdown,
            StopReason::ClientGone => Disconnect::ClientGone,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn text(value: serde_json::Value) -> Message {
    Message::Text(value.to_string().into())
}

/// A close frame with a status code and a reason (cut to fit the 125-byte control limit).
fn close(code: CloseCode, reason: &str) -> Message {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    Message::Close(Some(CloseFrame { code, reason: reason[..cut].into() }))
}

/// The close code and reason for a client that broke the protocol, as RFC 6455 names them;
/// `None` when the client just left or the socket failed.
fn violation(e: &WsError) -> Option<(CloseCode, String)> {
    match e {
        WsError::Capacity(_) => Some((CloseCode::Size, "message over the size limit".into())),
        WsError::Utf8(_) => Some((CloseCode::Invalid, "text is not valid UTF-8".into())),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(e) => Some((CloseCode::Protocol, e.to_string())),
        _ => None,
    }
}

/// The upgraded connection under tungstenite, shared with the subscriber: after a protocol error
/// the reader drains it raw (tungstenite reads nothing more after an error, and what the client
/// still sends must be read, not reset), and the writer half-closes it at the end. A write the
/// socket does not take sets `blocked`, the hub's test of a slow client.
struct Shared<S> {
    io: Arc<Mutex<S>>,
    blocked: Arc<AtomicBool>,
}

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared { io: self.io.clone(), blocked: self.blocked.clone() }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Shared<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *lock(&self.io)).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Shared<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut *lock(&self.io)).poll_write(cx, buf);
        if written.is_pending() {
            self.blocked.store(true, Ordering::Release);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *lock(&self.io)).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *lock(&self.io)).poll_shutdown(cx)
    }
}

type Socket<S> = WebSocketStream<Shared<S>>;

/// Reads and discards what the client still sends, until it closes the connection, stays silent
/// for `idle`, or `limit` (time or bytes) is reached. Closing a socket with unread data makes
/// the kernel reset the connection, and a client still sending (a message over the limit, say)
/// would then get the reset instead of the close frame that says why.
async fn linger<R: AsyncRead + Unpin>(io: &mut R, idle: Duration, limit: Duration, max_bytes: usize) {
    let drain = async {
        let mut scratch = vec![0u8; 8 * 1024];
        let mut drained = 0usize;
        while drained < max_bytes {
            match tokio::time::timeout(idle, io.read(&mut scratch)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(limit, drain).await;
}

/// Serves one upgraded connection (see [`start`]) until the client leaves, falls behind, stops
/// answering, or the daemon stops (`shutdown` is checked when the client connects; afterwards
/// [`Hub::shutdown`] stops it).
pub async fn serve<S>(
    io: S,
    start: SubscriberStart,
    subscription: Subscription,
    store: Store,
    config: SubscriberConfig,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    metrics::gauge!("asterai_feed_clients").increment(1.0);
    metrics::counter!("asterai_feed_connections_total").increment(1);
    if shutdown.is_cancelled() {
        subscription.stop.stop(StopReason::Shutdown);
    }
    let stop = subscription.stop.clone();
    let blocked = subscription.blocked.clone();
    let raw = Shared { io: Arc::new(Mutex::new(io)), blocked: blocked.clone() };
    let limits = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes));
    let socket = WebSocketStream::from_raw_socket(raw.clone(), Role::Server, Some(limits)).await;
    let (sink, stream) = socket.split();
    let (control_tx, control_rx) = mpsc::channel(16);
    let last_pong = Arc::new(Mutex::new(Instant::now()));
    // The reader is a task of its own: in the writer's task it would be polled, and would try a
    // socket read, for every event sent.
    let done = CancellationToken::new();
    let reader = tokio::spawn(read(
        stream,
        raw.clone(),
        subscription.filter.clone(),
        control_tx,
        last_pong.clone(),
        stop.clone(),
        done.clone(),
        config.write_timeout,
    ));
    let mut writer = Writer { sink, raw, config: &config, last_sent: 0, start: &start, out: Vec::new(), blocked };
    let ending = writer.run(&store, subscription, control_rx, last_pong).await;
    stop.stop(StopReason::ClientGone);
    // The socket closes when both tasks are done with it. After a close frame the reader keeps
    // it open, reading and discarding, until the client has closed too: closing with the
    // client's pongs or close reply unread would reset the connection and throw away what the
    // client has not read yet (the last events, the close frame with its last id). A client
    // that takes nothing (a failed write) is dropped at once.
    let mut reader = reader;
    if ending == Disconnect::WriteFailed {
        reader.abort();
    } else {
        done.cancel();
        if tokio::time::timeout(config.write_timeout + LINGER + Duration::from_secs(1), &mut reader).await.is_err() {
            reader.abort();
        }
    }
    tracing::debug!(org = %start.org_slug, ?ending, last_id = writer.last_sent, "feed client disconnected");
    metrics::gauge!("asterai_feed_clients").decrement(1.0);
}

/// Reads what the client sends: filters, pings, pongs, close. Replies go through `control`;
/// the connection is stopped when the client leaves or breaks the protocol.
#[allow(clippy::too_many_arguments)]
async fn read<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: SplitStream<Socket<S>>,
    mut raw: Shared<S>,
    filter: Arc<Mutex<Filter>>,
    control: mpsc::Sender<Message>,
    last_pong: Arc<Mutex<Instant>>,
    stop: Arc<Stop>,
    done: CancellationToken,
    write_timeout: Duration,
) {
    loop {
        let next = tokio::select! {
            _ = done.cancelled() => {
                // The server closed: the client has up to write_timeout to take what is left and
                // answer; nothing it sends now matters.
                linger(&mut raw, write_timeout, write_timeout + LINGER, LINGER_BYTES).await;
                return;
            }
            next = stream.next() => next,
        };
        let reply = match next {
            Some(Ok(Message::Text(message))) => match serde_json::from_str::<ClientMessage>(&message) {
                Ok(ClientMessage { filter: new }) => {
                    let new = new.unwrap_or_default();
                    *lock(&filter) = new.clone();
                    text(json!({"type": "feed.filter", "filter": new}))
                }
                Err(e) => {
                    text(json!({"type": "feed.error", "message": format!("expected {{\"filter\": {{…}}}}: {e}")}))
                }
            },
            Some(Ok(Message::Binary(_))) => {
                text(json!({"type": "feed.error", "message": "binary messages are not supported; send JSON text"}))
            }
            // tungstenite has queued the pong; it goes out with the next read or write.
            Some(Ok(Message::Ping(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Pong(_))) => {
                *lock(&last_pong) = Instant::now();
                continue;
            }
            // tungstenite has queued the answer to the client's close (1002 for a code a peer
            // may not send); the writer flushes it as it ends.
            Some(Ok(Message::Close(_))) | None => break,
            Some(Err(e)) => match violation(&e) {
                Some((code, reason)) => {
                    tracing::debug!("feed: client broke the WebSocket protocol: {e}");
                    // The close first: the writer finds it before it sees the stop.
                    let _ = control.try_send(close(code, &reason));
                    stop.stop(StopReason::ClientGone);
                    linger(&mut raw, LINGER_IDLE, LINGER, LINGER_BYTES).await;
                    return;
                }
                None => {
                    tracing::debug!("feed: reading from the client failed: {e}");
                    break;
                }
            },
        };
        let _ = control.try_send(reply);
    }
    stop.stop(StopReason::ClientGone);
}

struct Writer<'a, S> {
    sink: SplitSink<Socket<S>, Message>,
    /// The socket under tungstenite, for the half-close at the end.
    raw: Shared<S>,
    config: &'a SubscriberConfig,
    /// The id of the last event written to the socket.
    last_sent: i64,
    start: &'a SubscriberStart,
    /// Messages sent together, with one flush.
    out: Vec<Message>,
    /// Set while the socket does not take what is written (the hub's test of a slow client).
    blocked: Arc<AtomicBool>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Writer<'_, S> {
    /// Sends what `out` holds (emptying it) with one flush, within `feed.write_timeout`.
    async fn flush_out(&mut self) -> Result<(), Disconnect> {
        let (sink, out) = (&mut self.sink, &mut self.out);
        let written = tokio::time::timeout(self.config.write_timeout, async {
            for message in out.drain(..) {
                sink.feed(message).await?;
            }
            sink.flush().await
        })
        .await;
        self.out.clear();
        self.blocked.store(false, Ordering::Release);
        match written {
            Ok(Ok(())) => Ok(()),
            // A close was sent or received: the connection is ending, the client is not stuck.
            Ok(Err(
                WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Protocol(ProtocolError::SendAfterClosing),
            )) => Err(Disconnect::ClientGone),
            _ => Err(Disconnect::WriteFailed),
        }
    }

    async fn write(&mut self, message: Message) -> Result<(), Disconnect> {
        self.out.push(message);
        self.flush_out().await
    }

    async fn run(
        &mut self,
        store: &Store,
        mut subscription: Subscription,
        mut control: mpsc::Receiver<Message>,
        last_pong: Arc<Mutex<Instant>>,
    ) -> Disconnect {
        let ending = self
            .deliver(store, &mut subscription, &mut control, last_pong)
            .await
            .err()
            .unwrap_or(Disconnect::ClientGone);
        if ending == Disconnect::WriteFailed {
            return ending;
        }
        // Replies the reader queued (a filter's answer, a protocol-error close) go out first.
        control.close();
        while let Ok(message) = control.try_recv() {
            self.out.push(message);
        }
        let reason = |label: &str| format!("{label} last_id={}", self.last_sent);
        let frame = match ending {
            Disconnect::SlowClient => Some((CloseCode::from(CLOSE_SLOW), reason("slow_client"))),
            Disconnect::Heartbeat => Some((CloseCode::from(CLOSE_HEARTBEAT), reason("heartbeat_timeout"))),
            Disconnect::Shutdown => Some((CloseCode::from(CLOSE_SHUTDOWN), reason("shutdown"))),
            Disconnect::ClientGone | Disconnect::WriteFailed => None,
        };
        // The close frame waits behind what the client has not read yet: it gets as long as any
        // write (a client that drains receives the last id; one that reads nothing is dropped).
        if let Some((code, reason)) = frame {
            self.out.push(close(code, &reason));
        }
        let written = self.flush_out().await;
        if written != Err(Disconnect::WriteFailed) {
            // What tungstenite queued itself (its answer to the client's close) if the above
            // stopped short of it.
            let _ = tokio::time::timeout(self.config.write_timeout, self.sink.flush()).await;
        }
        let _ = tokio::time::timeout(self.config.write_timeout, self.raw.shutdown()).await;
        if ending == Disconnect::Heartbeat {
            metrics::counter!("asterai_feed_heartbeat_timeouts_total").increment(1);
        }
        ending
    }

    /// Replays, then delivers live events until something ends the connection.
    async fn deliver(
        &mut self,
        store: &Store,
        subscription: &mut Subscription,
        control: &mut mpsc::Receiver<Message>,
        last_pong: Arc<Mutex<Instant>>,
    ) -> Result<(), Disconnect> {
        self.last_sent = self.start.after;
        self.replay(store, subscription).await?;
        let ready = text(json!({"type": "feed.ready", "org": self.start.org_slug, "last_id": self.last_sent}));
        self.write(ready).await?;

        let mut ping = tokio::time::interval(self.config.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let mut pinged_at: Option<Instant> = None;
        let sent = metrics::counter!("asterai_feed_messages_sent_total");
        let stop = subscription.stop.clone();
        let stopped = stop.stopped();
        tokio::pin!(stopped);
        loop {
            if let Some(reason) = stop.reason() {
                return Err(reason.into());
            }
            // Live events first: while they flow, nothing else needs polling for each one.
            tokio::select! {
                biased;
                next = subscription.rx.recv() => {
                    let Some(first) = next else { return Err(Disconnect::SlowClient) };
                    // Everything queued goes out with one flush.
                    let mut fed = 0u64;
                    let mut batches = 0;
                    let mut batch = Some(first);
                    while let Some(events) = batch.take() {
                        subscription.pending.fetch_sub(events.len(), Ordering::AcqRel);
                        for published in events.iter() {
                            if published.event.id <= self.last_sent {
                                continue;
                            }
                            self.last_sent = published.event.id;
                            fed += 1;
                            self.out.push(Message::Text(published.text.clone()));
                        }
                        batches += 1;
                        if batches < BATCHES {
                            batch = subscription.rx.try_recv().ok();
                        }
                    }
                    if !self.out.is_empty() {
                        self.flush_out().await?;
                    }
                    if fed > 0 {
                        sent.increment(fed);
                    }
                }
                reason = &mut stopped => return Err(reason.into()),
                Some(message) = control.recv() => {
                    // The reader's close for a protocol error ends the connection.
                    let closing = matches!(message, Message::Close(_));
                    self.write(message).await?;
                    if closing {
                        return Err(Disconnect::ClientGone);
                    }
                }
                _ = ping.tick() => {
                    if pinged_at.is_some_and(|at| *lock(&last_pong) < at) {
                        return Err(Disconnect::Heartbeat);
                    }
                    pinged_at = Some(Instant::now());
                    self.write(Message::Ping(Bytes::new())).await?;
                }
            }
        }
    }

    /// Sends every stored event after `last_sent` that the filter matches, page by page.
    async fn replay(&mut self, store: &Store, subscription: &Subscription) -> Result<(), Disconnect> {
        let mut replayed = 0u64;
        let mut cursor = self.last_sent;
        loop {
            if let Some(reason) = subscription.stop.reason() {
                return Err(reason.into());
            }
            let page = match store.events_after(self.start.org_id, cursor, REPLAY_PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(org = %self.start.org_slug, "feed: replay from the event log failed: {e}; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            for Skipped { id, kind, reason, .. } in &page.skipped {
                match reason {
                    SkipReason::UnknownType => tracing::debug!(
                        org = %self.start.org_slug,
                        id,
                        kind = %kind,
                        "feed: replay skips an event of an unknown type"
                    ),
                    // The hub warned only if it was running when the row came; a replay may be
                    // the first to meet it.
                    SkipReason::Malformed(cause) => tracing::warn!(
                        org = %self.start.org_slug,
                        id,
                        kind = %kind,
                        "feed: replay skips event {id} ({kind}), which cannot be read: {cause}"
                    ),
                }
            }
            let full = page.full;
            cursor = page.next;
            let mut last = self.last_sent;
            for event in page.events {
                if !lock(&subscription.filter).matches(&event) {
                    continue;
                }
                let Ok(json) = serde_json::to_string(&event) else { continue };
                self.out.push(Message::Text(json.into()));
                last = event.id;
                replayed += 1;
            }
            if !self.out.is_empty() {
                self.flush_out().await?;
                self.last_sent = last;
            }
            if !full {
                break;
            }
        }
        // Nothing more to replay: what was skipped is behind the client too.
        self.last_sent = self.last_sent.max(cursor);
        if replayed > 0 {
            metrics::counter!("asterai_feed_replayed_events_total").increment(replayed);
        }
        Ok(())
    }
}
