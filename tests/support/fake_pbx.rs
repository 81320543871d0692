//! A fake Asterisk for the streaming media path, programmable and cheap enough for hundreds of
//! calls at once (`scripts/bench-stream` runs it beside the release daemon; the streaming tests
//! run it beside the conversations in-process).
//!
//! One port serves what asterai reaches on a real Asterisk's HTTP server:
//! * ARI REST under `/ari`: `asterisk/info` (22.10.1), `asterisk/modules/{chan_websocket,
//!   chan_audiosocket}.so`, the live channel list, `answer`, channel variables (get and set),
//!   `continue`, `redirect`, `dtmf`, `DELETE` of a channel, bridges (create, add/remove
//!   channels, destroy) and `POST /channels/externalMedia` (server-mode chan_websocket: the
//!   answer carries `MEDIA_WEBSOCKET_CONNECTION_ID`, then the media channel's `StasisStart`).
//! * The event WebSocket `/ari/events?app=…`, with `StasisStart`, `StasisEnd`,
//!   `ChannelHangupRequest` and `ChannelDestroyed` in Asterisk's JSON shapes.
//! * chan_websocket's media WebSocket `/media/<connection id>`: `MEDIA_START` (JSON control),
//!   the caller's speech as 20 ms binary frames in real time (nothing while the caller is silent,
//!   as chan_websocket does), the agent's frames played on a playout clock (one frame per 20 ms),
//!   `MARK_MEDIA` answered with `MEDIA_MARK_PROCESSED` when playback reaches it, `FLUSH_MEDIA`,
//!   `HANGUP`.
//!
//! Each caller follows a [`Step`] script once its channel is bridged with a media channel, and
//! the fake keeps a [`CallLog`] of what the caller heard and when: agent frames (late ones: a
//! frame that arrived after the caller's playback had run dry within an answer), flushes, marks,
//! the variables asterai set, and how the channel left (hang-up, `continue`, `redirect`).
//!
//! Self-contained (no `super::`), so `examples/bench_stream.rs` includes it with `#[path]`.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// One 20 ms frame of 16 kHz slin16.
pub const FRAME: Duration = Duration::from_millis(20);
const FRAME_SAMPLES: usize = 320;
/// A gap in the agent's audio shorter than this is inside one answer (a late frame), longer is
/// between answers.
const ANSWER_GAP: Duration = Duration::from_millis(400);

/// What a caller does, in order, once its channel is bridged.
#[derive(Debug, Clone)]
pub enum Step {
    /// Speak these 16 kHz samples in real time, 20 ms per frame.
    Say(Arc<Vec<i16>>),
    /// Speak once the agent's audio is playing (and has played for `after`): talking over it.
    SayOver {
        after: Duration,
        samples: Arc<Vec<i16>>,
    },
    /// Wait until the agent's audio has played for this long without a break.
    AwaitPlaying(Duration),
    /// Wait until the agent is heard, then until it has been silent for this long.
    AwaitAnswer(Duration),
    /// Wait until the agent has been silent for this long (the agent may already be silent).
    AwaitQuiet(Duration),
    Pause(Duration),
    Dtmf(char),
    /// The caller hangs up.
    HangUp,
}

/// What happened on one call, as the caller's side saw it.
#[derive(Clone, Default)]
pub struct CallLog {
    pub bridged_at: Option<Instant>,
    /// Each utterance: (first frame sent, last frame sent).
    pub said: Vec<(Instant, Instant)>,
    /// Utterances spoken over the agent: their first frame.
    pub talked_over: Vec<Instant>,
    /// Utterances spoken over the agent: how late this side sent the frames of the first
    /// 300 ms (the ones a barge-in is decided on) at worst, by its own real-time clock.
    pub talked_over_lag: Vec<Duration>,
    /// Arrival of every agent frame.
    pub agent_frames: Vec<Instant>,
    /// Frames that arrived after playback had run dry inside an answer (a gap the caller hears).
    pub late_frames: u64,
    /// How long each late frame was late.
    pub lateness: Vec<Duration>,
    /// |inter-arrival − 20 ms| of frames inside an answer after its first 25 (the lead).
    pub jitter: Vec<Duration>,
    pub flushes: Vec<Instant>,
    pub marks: Vec<String>,
    pub commands: Vec<String>,
    /// Variables asterai set on the caller's channel.
    pub vars: BTreeMap<String, String>,
    /// How the caller's channel left: `hangup` (asterai's DELETE), `continue`, `redirect
    /// <endpoint>`, `caller hung up`.
    pub ended: Option<String>,
    pub media_closed: bool,
    pub script_done: bool,
    /// Until when the agent's audio queued so far plays.
    play_clock: Option<Instant>,
    /// When playback last ran dry with nothing queued.
    dry_at: Option<Instant>,
    spurt: usize,
}

impl std::fmt::Debug for CallLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallLog")
            .field("bridged", &self.bridged_at.is_some())
            .field("utterances", &self.said.len())
            .field("talked_over", &self.talked_over.len())
            .field("agent_frames", &self.agent_frames.len())
            .field("late_frames", &self.late_frames)
            .field("flushes", &self.flushes.len())
            .field("marks", &self.marks)
            .field("commands", &self.commands)
            .field("vars", &self.vars)
            .field("ended", &self.ended)
            .field("media_closed", &self.media_closed)
            .field("script_done", &self.script_done)
            .finish()
    }
}

impl CallLog {
    /// The agent is audible now.
    pub fn agent_playing(&self, now: Instant) -> bool {
        self.play_clock.is_some_and(|until| until > now)
    }

    /// voice to voice per utterance: its last frame → the first agent frame after it.
    pub fn voice_to_voice(&self) -> Vec<Duration> {
        self.said.iter().filter_map(|(_, end)| self.agent_frames.iter().find(|f| *f > end).map(|f| *f - *end)).collect()
    }

    /// Speech over the agent → the FLUSH_MEDIA that stopped it.
    pub fn barge_in(&self) -> Vec<Duration> {
        self.talked_over
            .iter()
            .filter_map(|onset| self.flushes.iter().find(|f| *f >= onset).map(|f| *f - *onset))
            .collect()
    }
}

#[derive(Default)]
struct Inner {
    /// Caller channel id → its script, log and channel JSON.
    calls: HashMap<String, CallState>,
    /// Media channel id → its connection id and caller (once bridged).
    media: HashMap<String, MediaState>,
    /// Connection id → media channel id.
    connections: HashMap<String, String>,
    bridges: HashMap<String, Vec<String>>,
    sockets: Vec<mpsc::UnboundedSender<String>>,
    /// REST requests seen: "METHOD path".
    requests: Vec<String>,
}

struct CallState {
    channel: Value,
    script: Option<Vec<Step>>,
    log: Arc<Mutex<CallLog>>,
    live: bool,
}

struct MediaState {
    channel: Value,
    caller: Option<String>,
    /// The media socket's outbox (control messages and caller frames), once connected.
    outbox: Option<mpsc::UnboundedSender<Message>>,
    log: Option<Arc<Mutex<CallLog>>>,
    connected: Arc<Notify>,
}

struct Shared {
    app: String,
    inner: Mutex<Inner>,
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, event: Value) {
        let text = event.to_string();
        self.lock().sockets.retain(|s| s.send(text.clone()).is_ok());
    }
}

/// The fake. Dropping it stops nothing that matters (its tasks end with the runtime).
pub struct FakePbx {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

fn channel_json(id: &str, name: &str, state: &str, number: &str) -> Value {
    json!({"id": id, "name": name, "state": state, "protocol_id": "",
        "caller": {"name": "", "number": number}, "connected": {"name": "", "number": ""},
        "accountcode": "", "dialplan": {"context": "default", "exten": "s", "priority": 1,
        "app_name": "Stasis", "app_data": ""}, "creationtime": "2026-12-01T12:00:00.000+0000", "language": "en"})
}

fn timestamp() -> String {
    "2026-12-01T12:00:00.000+0000".to_owned()
}

impl FakePbx {
    pub async fn start(app: &str) -> FakePbx {
        let shared = Arc::new(Shared { app: app.to_owned(), inner: Mutex::default(), changed: Notify::new() });
        // REST on an inner port; the public port peeks at each connection and hands WebSocket
        // upgrades to tungstenite, the rest to the REST server.
        let rest = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rest_addr = rest.local_addr().unwrap();
        let router = Router::new().fallback(rest_handler).with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(rest, router).await;
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let front = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let _ = stream.set_nodelay(true);
                tokio::spawn(dispatch(front.clone(), stream, rest_addr));
            }
        });
        FakePbx { addr, shared }
    }

    /// ARI's base URL (`ari.url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits (up to 60 s) until an event WebSocket is open.
    pub async fn wait_connected(&self) {
        self.wait_until("an ARI event connection", |inner| !inner.sockets.is_empty()).await;
    }

    async fn wait_until(&self, what: &str, check: impl Fn(&Inner) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let notified = self.shared.changed.notified();
            if check(&self.shared.lock()) {
                return;
            }
            assert!(Instant::now() < deadline, "fake PBX: {what} never happened");
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }

    /// A caller enters `Stasis(<app>,<args>)` (already answered); it follows `script` once
    /// bridged with a media channel.
    pub fn call(&self, id: &str, args: &str, script: Vec<Step>) {
        let channel = channel_json(id, &format!("PJSIP/caller-{id}"), "Up", "5551230000");
        self.shared.lock().calls.insert(
            id.to_owned(),
            CallState { channel: channel.clone(), script: Some(script), log: Arc::default(), live: true },
        );
        self.shared.push(json!({"type": "StasisStart", "timestamp": timestamp(), "args": [args],
            "channel": channel, "application": self.shared.app}));
    }

    /// A snapshot of a call's log.
    pub fn log(&self, id: &str) -> CallLog {
        self.shared.lock().calls.get(id).map(|c| c.log.lock().unwrap().clone()).unwrap_or_default()
    }

    /// Waits (up to `patience`) until `check` holds for the call's log.
    pub async fn wait_log(
        &self,
        id: &str,
        what: &str,
        patience: Duration,
        check: impl Fn(&CallLog) -> bool,
    ) -> CallLog {
        let deadline = Instant::now() + patience;
        loop {
            let log = self.log(id);
            if check(&log) {
                return log;
            }
            assert!(Instant::now() < deadline, "fake PBX: {what} never happened on {id}: {log:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Channels alive in the fake Asterisk (callers in the application and media channels).
    pub fn live_channels(&self) -> Vec<String> {
        let inner = self.shared.lock();
        inner
            .calls
            .iter()
            .filter(|(_, c)| c.live)
            .map(|(id, _)| id.clone())
            .chain(inner.media.keys().cloned())
            .collect()
    }

    pub fn bridges(&self) -> usize {
        self.shared.lock().bridges.len()
    }

    /// REST requests seen, as "METHOD path".
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    /// The caller hangs up now (its channel ends; asterai hears it from the events only).
    pub fn hang_up(&self, id: &str) {
        caller_hung_up(&self.shared, id);
    }
}

fn caller_hung_up(shared: &Shared, id: &str) {
    let channel = {
        let mut inner = shared.lock();
        let Some(call) = inner.calls.get_mut(id) else { return };
        if !call.live {
            return;
        }
        call.live = false;
        let mut log = call.log.lock().unwrap();
        log.ended.get_or_insert_with(|| "caller hung up".into());
        call.channel.clone()
    };
    shared.push(json!({"type": "ChannelHangupRequest", "timestamp": timestamp(), "cause": 16, "channel": channel, "application": shared.app}));
    shared.push(json!({"type": "StasisEnd", "timestamp": timestamp(), "channel": channel, "application": shared.app}));
    shared.push(json!({"type": "ChannelDestroyed", "timestamp": timestamp(), "cause": 16, "cause_txt": "Normal Clearing", "channel": channel, "application": shared.app}));
    shared.changed.notify_waiters();
}

/// Reads the request line without consuming it, then serves the connection.
// The handshake callback's error type is tungstenite's (a whole HTTP response).
#[allow(clippy::result_large_err)]
async fn dispatch(shared: Arc<Shared>, stream: TcpStream, rest: SocketAddr) {
    let mut buf = [0u8; 1024];
    let head = loop {
        let Ok(n) = stream.peek(&mut buf).await else { return };
        if n == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.contains("\r\n") || n == buf.len() {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
    if path.starts_with("/ari/events") {
        let Ok(socket) = tokio_tungstenite::accept_async(stream).await else { return };
        events_socket(shared, socket).await;
    } else if let Some(connection) = path.strip_prefix("/media/") {
        let connection = connection.to_owned();
        let Ok(socket) = tokio_tungstenite::accept_hdr_async(
            stream,
            |_: &_, mut response: tokio_tungstenite::tungstenite::handshake::server::Response| {
                response.headers_mut().insert("Sec-WebSocket-Protocol", "media".parse().unwrap());
                Ok(response)
            },
        )
        .await
        else {
            return;
        };
        media_socket(shared, socket, connection).await;
    } else {
        let Ok(mut upstream) = TcpStream::connect(rest).await else { return };
        let mut stream = stream;
        let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
    }
}

async fn events_socket(shared: Arc<Shared>, socket: tokio_tungstenite::WebSocketStream<TcpStream>) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    shared.lock().sockets.push(tx);
    shared.changed.notify_waiters();
    loop {
        tokio::select! {
            text = rx.recv() => match text {
                Some(text) => if sink.send(Message::Text(text.into())).await.is_err() { return },
                None => return,
            },
            message = stream.next() => match message {
                Some(Ok(Message::Ping(p))) => { let _ = sink.send(Message::Pong(p)).await; }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
        }
    }
}

async fn media_socket(shared: Arc<Shared>, socket: tokio_tungstenite::WebSocketStream<TcpStream>, connection: String) {
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut out_rx) = mpsc::unbounded_channel::<Message>();
    let (media_id, connected) = {
        let mut inner = shared.lock();
        let Some(media_id) = inner.connections.get(&connection).cloned() else { return };
        let Some(media) = inner.media.get_mut(&media_id) else { return };
        media.outbox = Some(outbox.clone());
        (media_id, media.connected.clone())
    };
    connected.notify_waiters();
    let start = json!({"event": "MEDIA_START", "connection_id": connection, "channel": format!("WebSocket/INCOMING/{media_id}"),
        "channel_id": media_id, "format": "slin16", "optimal_frame_size": 640, "ptime": 20,
        "channel_variables": {"MEDIA_WEBSOCKET_CONNECTION_ID": connection, "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE": "640"}});
    if sink.send(Message::Text(start.to_string().into())).await.is_err() {
        return;
    }
    let log = || shared.lock().media.get(&media_id).and_then(|m| m.log.clone());
    loop {
        tokio::select! {
            out = out_rx.recv() => match out {
                Some(Message::Close(frame)) => { let _ = sink.send(Message::Close(frame)).await; break; }
                Some(message) => if sink.send(message).await.is_err() { break },
                None => break,
            },
            message = stream.next() => {
                let Some(Ok(message)) = message else { break };
                let now = Instant::now();
                match message {
                    Message::Binary(bytes) => {
                        let Some(log) = log() else { continue };
                        let mut log = log.lock().unwrap();
                        for _ in 0..(bytes.len() / (FRAME_SAMPLES * 2)).max(1) {
                            agent_frame(&mut log, now);
                        }
                    }
                    Message::Text(text) => {
                        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        let command = value["command"].as_str().unwrap_or_default().to_owned();
                        if command == "HANGUP" {
                            let _ = sink.send(Message::Close(None)).await;
                            break;
                        }
                        let Some(log) = log() else { continue };
                        text_command(&log, &command, &value, now, &outbox, &media_id);
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
        }
    }
    if let Some(log) = log() {
        log.lock().unwrap().media_closed = true;
    }
    shared.changed.notify_waiters();
}

/// A control message from asterai (HANGUP aside).
fn text_command(
    log: &Arc<Mutex<CallLog>>,
    command: &str,
    value: &Value,
    now: Instant,
    outbox: &mpsc::UnboundedSender<Message>,
    media_id: &str,
) {
    let mut l = log.lock().unwrap();
    l.commands.push(command.to_owned());
    match command {
        "FLUSH_MEDIA" => {
            l.flushes.push(now);
            if l.agent_playing(now) {
                l.play_clock = Some(now);
                l.dry_at = Some(now);
            }
        }
        "MARK_MEDIA" => {
            let id = value["correlation_id"].as_str().unwrap_or_default().to_owned();
            let at = l.play_clock.unwrap_or(now).max(now);
            let (log, outbox, media_id) = (log.clone(), outbox.clone(), media_id.to_owned());
            drop(l);
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                // A flush since drops the mark.
                let mut l = log.lock().unwrap();
                if l.flushes.last().is_some_and(|f| *f > now) {
                    return;
                }
                l.marks.push(id.clone());
                let event = json!({"event": "MEDIA_MARK_PROCESSED", "channel_id": media_id, "correlation_id": id});
                let _ = outbox.send(Message::Text(event.to_string().into()));
            });
        }
        _ => {}
    }
}

/// One agent frame arrived at `now`: it plays when the ones before it have.
fn agent_frame(log: &mut CallLog, now: Instant) {
    let previous = log.agent_frames.last().copied();
    log.agent_frames.push(now);
    match log.play_clock {
        Some(until) if until >= now => {
            log.spurt += 1;
            if log.spurt > 25
                && let Some(previous) = previous
            {
                let gap = now - previous;
                log.jitter.push(gap.abs_diff(FRAME));
            }
            log.play_clock = Some(until + FRAME);
        }
        Some(until) => {
            // Playback ran dry at `until`: inside an answer that is a late frame.
            let dry = now - until;
            if dry > FRAME && dry < ANSWER_GAP && log.dry_at != Some(until) {
                log.late_frames += 1;
                log.lateness.push(dry);
            }
            log.spurt = 1;
            log.play_clock = Some(now + FRAME);
        }
        None => {
            log.spurt = 1;
            log.play_clock = Some(now + FRAME);
        }
    }
}

/// Plays a caller's script on its media socket.
async fn run_script(
    shared: Arc<Shared>,
    caller: String,
    media_id: String,
    script: Vec<Step>,
    log: Arc<Mutex<CallLog>>,
) {
    // The media socket connects before the bridge, usually; wait for it.
    let outbox = loop {
        let (outbox, connected) = {
            let inner = shared.lock();
            let Some(media) = inner.media.get(&media_id) else { return };
            (media.outbox.clone(), media.connected.clone())
        };
        if let Some(outbox) = outbox {
            break outbox;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), connected.notified()).await;
    };
    let live = |shared: &Shared| shared.lock().calls.get(&caller).is_some_and(|c| c.live);
    for step in script {
        if !live(&shared) {
            return;
        }
        match step {
            Step::Say(samples) => say(&outbox, &samples, &log, false).await,
            Step::SayOver { after, samples } => {
                await_playing(&log, after, &shared, &caller).await;
                say(&outbox, &samples, &log, true).await;
            }
            Step::AwaitPlaying(after) => await_playing(&log, after, &shared, &caller).await,
            Step::AwaitAnswer(quiet) => {
                let asked = Instant::now();
                let deadline = asked + Duration::from_secs(30);
                loop {
                    let heard = log.lock().unwrap().agent_frames.last().is_some_and(|f| *f > asked);
                    if heard || Instant::now() > deadline || !live(&shared) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                await_quiet(&log, quiet, &shared, &caller).await;
            }
            Step::AwaitQuiet(quiet) => await_quiet(&log, quiet, &shared, &caller).await,
            Step::Pause(d) => tokio::time::sleep(d).await,
            Step::Dtmf(digit) => {
                let _ = outbox.send(Message::Text(
                    json!({"event": "DTMF_END", "channel_id": media_id, "digit": digit.to_string()}).to_string().into(),
                ));
            }
            Step::HangUp => {
                caller_hung_up(&shared, &caller);
                break;
            }
        }
    }
    log.lock().unwrap().script_done = true;
    shared.changed.notify_waiters();
}

/// Until the agent has played for `after` without a break (at most 30 s).
async fn await_playing(log: &Mutex<CallLog>, after: Duration, shared: &Shared, caller: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if log.lock().unwrap().agent_playing(now) {
            let start = *since.get_or_insert(now);
            if now - start >= after {
                return;
            }
        } else {
            since = None;
        }
        if now > deadline || !shared.lock().calls.get(caller).is_some_and(|c| c.live) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn await_quiet(log: &Mutex<CallLog>, quiet: Duration, shared: &Shared, caller: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = Instant::now();
        let until = log.lock().unwrap().play_clock;
        if until.is_none_or(|u| u + quiet <= now) || now > deadline {
            return;
        }
        if !shared.lock().calls.get(caller).is_some_and(|c| c.live) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn say(outbox: &mpsc::UnboundedSender<Message>, samples: &[i16], log: &Mutex<CallLog>, over: bool) {
    let mut next = Instant::now();
    let mut first = None;
    let mut lag = Duration::ZERO;
    for (i, chunk) in samples.chunks(FRAME_SAMPLES).enumerate() {
        tokio::time::sleep_until(next).await;
        if i < 15 {
            lag = lag.max(Instant::now().saturating_duration_since(next));
        }
        let mut bytes = Vec::with_capacity(FRAME_SAMPLES * 2);
        for s in chunk {
            bytes.extend_from_slice(&s.to_le_bytes());
        }
        bytes.resize(FRAME_SAMPLES * 2, 0);
        if outbox.send(Message::Binary(bytes.into())).is_err() {
            return;
        }
        let now = Instant::now();
        if first.is_none() {
            first = Some(now);
            if over {
                log.lock().unwrap().talked_over.push(now);
            }
        }
        next += FRAME;
    }
    if let Some(first) = first {
        let mut log = log.lock().unwrap();
        log.said.push((first, Instant::now()));
        if over {
            log.talked_over_lag.push(lag);
        }
    }
}

fn respond(status: u16, body: Option<Value>) -> Response {
    let builder =
        Response::builder().status(StatusCode::from_u16(status).unwrap()).header("Server", "Asterisk/22.10.1");
    match body {
        Some(body) => builder.header("Content-Type", "application/json").body(Body::from(body.to_string())).unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

fn query_of(request: &Request) -> BTreeMap<String, String> {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode =
                |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            (decode(k), decode(v))
        })
        .collect()
}

async fn rest_handler(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let query = query_of(&request);
    shared.lock().requests.push(format!("{method} {path}"));
    let parts: Vec<&str> = path.trim_start_matches("/ari/").split('/').collect();
    let not_found = |what: &str| respond(404, Some(json!({"message": format!("{what} not found")})));
    let response = match (method.as_str(), parts.as_slice()) {
        ("GET", ["asterisk", "info"]) => respond(
            200,
            Some(json!({"system": {"version": "22.10.1", "entity_id": "fa:ke:00:00:00:01"},
            "build": {"os": "Linux", "kernel": "6", "machine": "x86_64", "date": "2026-12-01"}})),
        ),
        ("GET", ["asterisk", "modules", name]) => match *name {
            "chan_websocket.so" | "chan_audiosocket.so" => respond(
                200,
                Some(
                    json!({"name": name, "description": "", "use_count": 0, "status": "Running", "support_level": "core"}),
                ),
            ),
            _ => not_found("Module"),
        },
        ("GET", ["channels"]) => {
            let inner = shared.lock();
            let list: Vec<Value> = inner.calls.values().filter(|c| c.live).map(|c| c.channel.clone()).collect();
            respond(200, Some(Value::Array(list)))
        }
        ("GET", ["applications"]) => respond(200, Some(json!([]))),
        ("POST", ["channels", "externalMedia"]) => external_media(&shared, &query),
        ("POST", ["channels", id, "answer" | "dtmf" | "ring"]) => {
            if live(&shared, id) {
                respond(204, None)
            } else {
                not_found("Channel")
            }
        }
        ("GET", ["channels", id, "variable"]) => {
            if !live(&shared, id) {
                not_found("Channel")
            } else if query.get("variable").map(String::as_str) == Some("CHANNEL(audionativeformat)") {
                respond(200, Some(json!({"value": "(slin16)"})))
            } else {
                let inner = shared.lock();
                let value = inner.calls.get(*id).and_then(|c| {
                    c.log
                        .lock()
                        .unwrap()
                        .vars
                        .get(query.get("variable").map(String::as_str).unwrap_or_default())
                        .cloned()
                });
                match value {
                    Some(value) => respond(200, Some(json!({"value": value}))),
                    None => not_found("Variable"),
                }
            }
        }
        ("POST", ["channels", id, "variable"]) => {
            let inner = shared.lock();
            match inner.calls.get(*id).filter(|c| c.live) {
                Some(call) => {
                    let (name, value) = (
                        query.get("variable").cloned().unwrap_or_default(),
                        query.get("value").cloned().unwrap_or_default(),
                    );
                    call.log.lock().unwrap().vars.insert(name, value);
                    respond(204, None)
                }
                None if inner.media.contains_key(*id) => respond(204, None),
                None => not_found("Channel"),
            }
        }
        ("POST", ["channels", id, verb @ ("continue" | "redirect")]) => {
            let ended = if *verb == "redirect" {
                format!("redirect {}", query.get("endpoint").cloned().unwrap_or_default())
            } else {
                "continue".into()
            };
            leave(&shared, id, &ended, false)
        }
        ("DELETE", ["channels", id]) => {
            let media = shared.lock().media.remove(*id);
            if let Some(media) = media {
                if let Some(outbox) = media.outbox {
                    let _ = outbox.send(Message::Close(None));
                }
                if let Some(log) = media.log {
                    log.lock().unwrap().media_closed = true;
                }
                let channel = media.channel;
                shared.push(json!({"type": "StasisEnd", "timestamp": timestamp(), "channel": channel, "application": shared.app}));
                shared.push(json!({"type": "ChannelDestroyed", "timestamp": timestamp(), "cause": 16, "cause_txt": "Normal Clearing", "channel": channel, "application": shared.app}));
                respond(204, None)
            } else {
                leave(&shared, id, "hangup", true)
            }
        }
        ("POST", ["bridges"]) => {
            let id = query.get("bridgeId").cloned().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            shared.lock().bridges.insert(id.clone(), Vec::new());
            respond(
                200,
                Some(
                    json!({"id": id, "technology": "simple_bridge", "bridge_type": "mixing", "bridge_class": "stasis",
                "creator": "Stasis", "name": query.get("name").cloned().unwrap_or_default(), "channels": [], "creationtime": timestamp(), "video_mode": "none"}),
                ),
            )
        }
        ("POST", ["bridges", id, "addChannel"]) => add_channel(&shared, id, &query),
        ("POST", ["bridges", id, "removeChannel"]) => {
            if shared.lock().bridges.contains_key(*id) {
                respond(204, None)
            } else {
                not_found("Bridge")
            }
        }
        ("DELETE", ["bridges", id]) => {
            if shared.lock().bridges.remove(*id).is_some() {
                respond(204, None)
            } else {
                not_found("Bridge")
            }
        }
        _ => respond(404, Some(json!({"message": "Resource not found"}))),
    };
    shared.changed.notify_waiters();
    response
}

fn live(shared: &Shared, id: &str) -> bool {
    let inner = shared.lock();
    inner.calls.get(id).is_some_and(|c| c.live) || inner.media.contains_key(id)
}

/// The caller's channel leaves the application: hung up by asterai, continued or redirected.
fn leave(shared: &Shared, id: &str, how: &str, destroyed: bool) -> Response {
    let channel = {
        let mut inner = shared.lock();
        let Some(call) = inner.calls.get_mut(id).filter(|c| c.live) else {
            return respond(404, Some(json!({"message": "Channel not found"})));
        };
        call.live = false;
        call.log.lock().unwrap().ended.get_or_insert_with(|| how.to_owned());
        call.channel.clone()
    };
    if destroyed {
        shared.push(json!({"type": "ChannelHangupRequest", "timestamp": timestamp(), "soft": true, "cause": 32, "channel": channel, "application": shared.app}));
    }
    shared.push(json!({"type": "StasisEnd", "timestamp": timestamp(), "channel": channel, "application": shared.app}));
    if destroyed {
        shared.push(json!({"type": "ChannelDestroyed", "timestamp": timestamp(), "cause": 16, "cause_txt": "Normal Clearing", "channel": channel, "application": shared.app}));
    }
    respond(204, None)
}

fn external_media(shared: &Arc<Shared>, query: &BTreeMap<String, String>) -> Response {
    if query.get("transport").map(String::as_str) != Some("websocket") {
        return respond(400, Some(json!({"message": "the fake PBX has only chan_websocket"})));
    }
    let id = query.get("channelId").cloned().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let connection = uuid::Uuid::new_v4().to_string();
    let mut channel = channel_json(&id, &format!("WebSocket/INCOMING/{id}"), "Down", "");
    channel["channelvars"] = json!({"MEDIA_WEBSOCKET_CONNECTION_ID": connection});
    {
        let mut inner = shared.lock();
        inner.connections.insert(connection, id.clone());
        inner.media.insert(
            id.clone(),
            MediaState {
                channel: channel.clone(),
                caller: None,
                outbox: None,
                log: None,
                connected: Arc::new(Notify::new()),
            },
        );
    }
    // Asterisk puts the channel into the application a moment after answering.
    let (shared, start) = (shared.clone(), channel.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut start = start;
        start["state"] = json!("Up");
        shared.push(json!({"type": "StasisStart", "timestamp": timestamp(), "args": [query_data()], "channel": start, "application": shared.app}));
    });
    respond(200, Some(channel))
}

fn query_data() -> &'static str {
    "asterai-media"
}

fn add_channel(shared: &Arc<Shared>, bridge: &str, query: &BTreeMap<String, String>) -> Response {
    let ids: Vec<String> = query.get("channel").map(|c| c.split(',').map(str::to_owned).collect()).unwrap_or_default();
    let mut inner = shared.lock();
    if !inner.bridges.contains_key(bridge) {
        return respond(404, Some(json!({"message": "Bridge not found"})));
    }
    let caller = ids.iter().find(|id| inner.calls.get(*id).is_some_and(|c| c.live)).cloned();
    let media_id = ids.iter().find(|id| inner.media.contains_key(*id)).cloned();
    if ids.iter().any(|id| !inner.calls.get(id).is_some_and(|c| c.live) && !inner.media.contains_key(id)) {
        return respond(422, Some(json!({"message": "Channel not in Stasis application"})));
    }
    inner.bridges.get_mut(bridge).unwrap().extend(ids.iter().cloned());
    if let (Some(caller), Some(media_id)) = (caller, media_id) {
        let call = inner.calls.get_mut(&caller).unwrap();
        let log = call.log.clone();
        let script = call.script.take();
        log.lock().unwrap().bridged_at = Some(Instant::now());
        let media = inner.media.get_mut(&media_id).unwrap();
        media.caller = Some(caller.clone());
        media.log = Some(log.clone());
        if let Some(script) = script {
            tokio::spawn(run_script(shared.clone(), caller, media_id, script, log));
        }
    }
    respond(204, None)
}

/// espeak-ng's speech as 16 kHz samples (espeak-ng must be installed).
pub fn espeak16(text: &str) -> Vec<i16> {
    let out = std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "170", "--stdout", text])
        .output()
        .expect("espeak-ng runs (scripts/test-deps installs it)");
    assert!(out.status.success(), "espeak-ng failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut bytes = out.stdout;
    // espeak-ng's --stdout header has placeholder lengths.
    let len = bytes.len() as u32;
    bytes[4..8].copy_from_slice(&(len - 8).to_le_bytes());
    bytes[40..44].copy_from_slice(&(len - 44).to_le_bytes());
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).expect("a WAV");
    let rate = reader.spec().sample_rate;
    let samples: Vec<f32> = reader.into_samples::<i16>().map_while(Result::ok).map(|s| s as f32 / 32768.0).collect();
    let out = asterai::speech::audio::resample(&samples, rate, 16000).expect("resampled");
    let mut samples: Vec<i16> = out.iter().map(|s| (s * 32767.0).round().clamp(-32768.0, 32767.0) as i16).collect();
    // espeak-ng ends with silence: the utterance ends on its last voiced sample, so its last
    // frame sent is the caller's last voiced frame (voice to voice is measured from it).
    let end = samples.iter().rposition(|s| s.unsigned_abs() > 500).map_or(0, |i| i + 1);
    samples.truncate(end);
    samples
}
