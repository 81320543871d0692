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
//! Two tasks per connection: the writer (replay, live events, pings, close) and the reader
//! (filters, pongs, the client's close). The writer alone touches the socket's write side.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::hub::{Hub, Stop, StopReason, Subscription};
use super::ws::{self, FrameReader, Incoming, ReadError};
use crate::store::{Event, EventKind, Store};

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

/// Settings of every client connection.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub ping_interval: Duration,
    pub queue: usize,
    pub write_timeout: Duration,
    /// Largest message a client may send.
    pub max_message_bytes: usize,
}

/// What a client may narrow its feed to. Absent fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<EventKind>>,
}

impl Filter {
    pub fn matches(&self, event: &Event) -> bool {
        self.call_id.as_ref().is_none_or(|id| event.call_id.as_ref() == Some(id))
            && self.campaign.is_none_or(|c| event.campaign == Some(c))
            && self.types.as_ref().is_none_or(|types| types.contains(&event.kind))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientMessage {
    filter: Option<Filter>,
}

/// Who is connected and from where they resume.
pub struct ClientStart {
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
) -> Result<(ClientStart, Subscription), String> {
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
    Ok((ClientStart { org_id, org_slug, after }, subscription))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    SlowClient,
    Heartbeat,
    Shutdown,
    ClientGone,
    WriteFailed,
}

impl From<StopReason> for Ending {
    fn from(reason: StopReason) -> Self {
        match reason {
            StopReason::SlowClient => Ending::SlowClient,
            StopReason::Shutdown => Ending::Shutdown,
            StopReason::ClientGone => Ending::ClientGone,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn text(value: serde_json::Value) -> Bytes {
    ws::frame(ws::OP_TEXT, value.to_string().as_bytes())
}

/// Serves one upgraded connection (see [`start`]) until the client leaves, falls behind, stops
/// answering, or the daemon stops (`shutdown` is checked when the client connects; afterwards
/// [`Hub::shutdown`] stops it).
pub async fn serve<S>(
    io: S,
    start: ClientStart,
    subscription: Subscription,
    store: Store,
    config: ClientConfig,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    metrics::gauge!("asterai_feed_clients").increment(1.0);
    metrics::counter!("asterai_feed_connections_total").increment(1);
    if shutdown.is_cancelled() {
        subscription.stop.stop(StopReason::Shutdown);
    }
    let stop = subscription.stop.clone();
    let (read_half, write_half) = tokio::io::split(io);
    let (control_tx, control_rx) = mpsc::channel(16);
    let last_pong = Arc::new(Mutex::new(Instant::now()));
    // The reader is a task of its own: in the writer's task it would be polled, and would try a
    // socket read, for every event sent.
    let reader = FrameReader::new(read_half, Bytes::new(), config.max_message_bytes);
    let done = CancellationToken::new();
    let reader = tokio::spawn(read(
        reader,
        subscription.filter.clone(),
        control_tx,
        last_pong.clone(),
        stop.clone(),
        done.clone(),
        config.write_timeout,
    ));
    let blocked = subscription.blocked.clone();
    let mut writer =
        Writer { io: write_half, config: &config, last_sent: 0, start: &start, scratch: BytesMut::new(), blocked };
    let ending = writer.run(&store, subscription, control_rx, last_pong).await;
    stop.stop(StopReason::ClientGone);
    // The socket closes when both halves are gone. After a close frame the reader keeps it open,
    // reading and discarding, until the client has closed too: closing with the client's pongs
    // or close reply unread would reset the connection and throw away what the client has not
    // read yet (the last events, the close frame with its last id). A client that takes nothing
    // (a failed write) is dropped at once.
    let mut reader = reader;
    if ending == Ending::WriteFailed {
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
async fn read<R: AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    filter: Arc<Mutex<Filter>>,
    control: mpsc::Sender<Bytes>,
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
                reader.linger(write_timeout, write_timeout + LINGER, LINGER_BYTES).await;
                return;
            }
            next = reader.next() => next,
        };
        let reply = match next {
            Ok(Some(Incoming::Text(message))) => match serde_json::from_str::<ClientMessage>(&message) {
                Ok(ClientMessage { filter: new }) => {
                    let new = new.unwrap_or_default();
                    *lock(&filter) = new.clone();
                    text(json!({"type": "feed.filter", "filter": new}))
                }
                Err(e) => {
                    text(json!({"type": "feed.error", "message": format!("expected {{\"filter\": {{…}}}}: {e}")}))
                }
            },
            Ok(Some(Incoming::Binary(_))) => {
                text(json!({"type": "feed.error", "message": "binary messages are not supported; send JSON text"}))
            }
            Ok(Some(Incoming::Ping(payload))) => ws::frame(ws::OP_PONG, &payload),
            Ok(Some(Incoming::Pong)) => {
                *lock(&last_pong) = Instant::now();
                continue;
            }
            Ok(Some(Incoming::Close(code))) => {
                // Answer the close handshake, then end.
                let _ = control.try_send(ws::close_frame(code.unwrap_or(1000), ""));
                break;
            }
            Ok(None) => break,
            Err(ReadError::Protocol(e)) => {
                tracing::debug!("feed: client broke the WebSocket protocol: {e}");
                let _ = control.try_send(ws::close_frame(e.code, e.reason));
                stop.stop(StopReason::ClientGone);
                reader.linger(LINGER_IDLE, LINGER, LINGER_BYTES).await;
                return;
            }
            Err(ReadError::Io(e)) => {
                tracing::debug!("feed: reading from the client failed: {e}");
                break;
            }
        };
        let _ = control.try_send(reply);
    }
    stop.stop(StopReason::ClientGone);
}

struct Writer<'a, W> {
    io: W,
    config: &'a ClientConfig,
    /// The id of the last event written to the socket.
    last_sent: i64,
    start: &'a ClientStart,
    /// Where several frames are joined into one write.
    scratch: BytesMut,
    /// Set while the socket does not take what is written (the hub's test of a slow client).
    blocked: Arc<AtomicBool>,
}

impl<W: AsyncWrite + Unpin> Writer<'_, W> {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), Ending> {
        let written =
            tokio::time::timeout(self.config.write_timeout, write_all_flagged(&mut self.io, bytes, &self.blocked));
        let result = written.await;
        self.blocked.store(false, Ordering::Release);
        match result {
            Ok(Ok(())) => Ok(()),
            _ => Err(Ending::WriteFailed),
        }
    }

    async fn run(
        &mut self,
        store: &Store,
        mut subscription: Subscription,
        mut control: mpsc::Receiver<Bytes>,
        last_pong: Arc<Mutex<Instant>>,
    ) -> Ending {
        let ending =
            self.deliver(store, &mut subscription, &mut control, last_pong).await.err().unwrap_or(Ending::ClientGone);
        // Replies the reader queued (a pong, the echo of the client's close, a protocol-error
        // close) go out first.
        control.close();
        while let Ok(frame) = control.try_recv() {
            if self.write(&frame).await.is_err() {
                break;
            }
        }
        let reason = |label: &str| format!("{label} last_id={}", self.last_sent);
        let frame = match ending {
            Ending::SlowClient => Some((CLOSE_SLOW, reason("slow_client"))),
            Ending::Heartbeat => Some((CLOSE_HEARTBEAT, reason("heartbeat_timeout"))),
            Ending::Shutdown => Some((CLOSE_SHUTDOWN, reason("shutdown"))),
            Ending::ClientGone | Ending::WriteFailed => None,
        };
        // The close frame waits behind what the client has not read yet: it gets as long as any
        // write (a client that drains receives the last id; one that reads nothing is dropped).
        if let Some((code, reason)) = frame {
            let _ = self.write(&ws::close_frame(code, &reason)).await;
        }
        let _ = tokio::time::timeout(self.config.write_timeout, self.io.shutdown()).await;
        if ending == Ending::Heartbeat {
            metrics::counter!("asterai_feed_heartbeat_timeouts_total").increment(1);
        }
        ending
    }

    /// Replays, then delivers live events until something ends the connection.
    async fn deliver(
        &mut self,
        store: &Store,
        subscription: &mut Subscription,
        control: &mut mpsc::Receiver<Bytes>,
        last_pong: Arc<Mutex<Instant>>,
    ) -> Result<(), Ending> {
        self.last_sent = self.start.after;
        self.replay(store, subscription).await?;
        let ready = text(json!({"type": "feed.ready", "org": self.start.org_slug, "last_id": self.last_sent}));
        self.write(&ready).await?;

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
                    let Some(first) = next else { return Err(Ending::SlowClient) };
                    // Everything queued goes out in one write.
                    self.scratch.clear();
                    let mut single: Option<Bytes> = None;
                    let mut fed = 0u64;
                    let mut batches = 0;
                    let mut batch = Some(first);
                    while let Some(events) = batch.take() {
                        subscription.pending.fetch_sub(events.len(), std::sync::atomic::Ordering::AcqRel);
                        for published in events.iter() {
                            if published.event.id <= self.last_sent {
                                continue;
                            }
                            self.last_sent = published.event.id;
                            fed += 1;
                            match single.take() {
                                None if self.scratch.is_empty() => single = Some(published.frame.clone()),
                                None => self.scratch.extend_from_slice(&published.frame),
                                Some(previous) => {
                                    self.scratch.extend_from_slice(&previous);
                                    self.scratch.extend_from_slice(&published.frame);
                                }
                            }
                        }
                        batches += 1;
                        if batches < BATCHES {
                            batch = subscription.rx.try_recv().ok();
                        }
                    }
                    match single {
                        Some(frame) => self.write(&frame).await?,
                        None if !self.scratch.is_empty() => {
                            let joined = std::mem::take(&mut self.scratch);
                            let result = self.write(&joined).await;
                            self.scratch = joined;
                            result?;
                        }
                        None => {}
                    }
                    if fed > 0 {
                        sent.increment(fed);
                    }
                }
                reason = &mut stopped => return Err(reason.into()),
                Some(frame) = control.recv() => self.write(&frame).await?,
                _ = ping.tick() => {
                    if pinged_at.is_some_and(|at| *lock(&last_pong) < at) {
                        return Err(Ending::Heartbeat);
                    }
                    pinged_at = Some(Instant::now());
                    self.write(&ws::frame(ws::OP_PING, b"")).await?;
                }
            }
        }
    }

    /// Sends every stored event after `last_sent` that the filter matches, page by page.
    async fn replay(&mut self, store: &Store, subscription: &Subscription) -> Result<(), Ending> {
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
            for (id, kind) in &page.skipped {
                tracing::debug!(org = %self.start.org_slug, id, kind = %kind, "feed: replay skips an event of an unknown type");
            }
            let full = page.full;
            cursor = page.next;
            self.scratch.clear();
            let mut last = self.last_sent;
            for event in page.events {
                if !lock(&subscription.filter).matches(&event) {
                    continue;
                }
                let Ok(json) = serde_json::to_string(&event) else { continue };
                self.scratch.extend_from_slice(&ws::frame(ws::OP_TEXT, json.as_bytes()));
                last = event.id;
                replayed += 1;
            }
            if !self.scratch.is_empty() {
                let joined = std::mem::take(&mut self.scratch);
                let result = self.write(&joined).await;
                self.scratch = joined;
                result?;
                self.last_sent = last;
            }
            if !full {
                break;
            }
        }
        // Nothing more to replay: what was skipped (unknown types) is behind the client too.
        self.last_sent = self.last_sent.max(cursor);
        if replayed > 0 {
            metrics::counter!("asterai_feed_replayed_events_total").increment(replayed);
        }
        Ok(())
    }
}

/// `write_all`, noting in `blocked` whenever the socket does not take what is written (its send
/// buffer is full because the client is not reading fast enough).
async fn write_all_flagged<W: AsyncWrite + Unpin>(
    io: &mut W,
    bytes: &[u8],
    blocked: &AtomicBool,
) -> std::io::Result<()> {
    let mut written = 0;
    std::future::poll_fn(|cx| {
        while written < bytes.len() {
            match std::pin::Pin::new(&mut *io).poll_write(cx, &bytes[written..]) {
                std::task::Poll::Ready(Ok(0)) => {
                    return std::task::Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                std::task::Poll::Ready(Ok(n)) => written += n,
                std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => {
                    blocked.store(true, Ordering::Release);
                    return std::task::Poll::Pending;
                }
            }
        }
        std::task::Poll::Ready(Ok(()))
    })
    .await
}
