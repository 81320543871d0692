//! A fake chan_websocket (server mode) built from the captures in
//! `fixtures/asterisk/media/ws-*.txt`: the media URL `/media/<connection_id>` (404 with
//! Asterisk's HTML page for an unknown id, 409 for a second connection), MEDIA_START in plain
//! text or JSON exactly as Asterisk writes it, a playback queue of at most 1,000 frames played
//! one per tick (MEDIA_XOFF at 900, MEDIA_XON at 800, frames past 1,000 dropped), binary messages
//! cut into frames (a remainder dropped), MARK_MEDIA reported when reached, FLUSH_MEDIA emptying
//! the queue and its marks, GET_STATUS, REPORT_QUEUE_DRAINED, text over 128 bytes ignored,
//! HANGUP answered with close 1000, DTMF_END, and close codes on demand.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

pub const QUEUE_MAX: usize = 1000;
pub const XOFF: usize = 900;
pub const XON: usize = 800;

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// JSON control messages (`f(json)`), else plain text.
    pub json: bool,
    /// `ulaw` or `slin16` (or `slin`).
    pub format: &'static str,
    /// How often one queued frame is played (20 ms in real life; shorter to run tests faster).
    pub tick: Duration,
    /// Frames the caller's side "says" right after MEDIA_START.
    pub inbound: Vec<Vec<u8>>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions { json: true, format: "ulaw", tick: Duration::from_millis(20), inbound: Vec::new() }
    }
}

/// What the fake saw and did.
#[derive(Default, Clone)]
pub struct Seen {
    pub connections: usize,
    /// The `Sec-WebSocket-Protocol` the client offered.
    pub protocol: Option<String>,
    /// Frames played, in order (each the bytes of one frame).
    pub played: Vec<Vec<u8>>,
    /// Frames received (played, queued or dropped).
    pub received: usize,
    /// Frames dropped because the queue was full.
    pub dropped: usize,
    /// Bytes dropped as a remainder shorter than a frame.
    pub remainder_dropped: usize,
    /// The longest the queue got.
    pub max_queue: usize,
    pub xoffs: usize,
    pub xons: usize,
    /// Text messages received, as sent.
    pub commands: Vec<String>,
    pub marks_processed: Vec<String>,
    pub flushes: usize,
    /// Frames the last flush dropped.
    pub flushed_frames: usize,
    pub closed: bool,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen")
            .field("connections", &self.connections)
            .field("played", &self.played.len())
            .field("dropped", &self.dropped)
            .field("remainder_dropped", &self.remainder_dropped)
            .field("max_queue", &self.max_queue)
            .field("xoffs", &self.xoffs)
            .field("xons", &self.xons)
            .field("commands", &self.commands)
            .field("marks_processed", &self.marks_processed)
            .field("flushes", &self.flushes)
            .field("closed", &self.closed)
            .finish()
    }
}

enum Queued {
    Frame(Vec<u8>),
    Mark(String),
}

/// Something the test makes the fake do.
pub enum Action {
    Dtmf(char),
    Audio(Vec<u8>),
    Text(String),
    Close(u16),
}

pub struct FakeChanWebsocket {
    pub addr: SocketAddr,
    pub connection_id: String,
    pub channel_id: String,
    seen: Arc<Mutex<Seen>>,
    actions: mpsc::UnboundedSender<Action>,
    _task: tokio::task::JoinHandle<()>,
}

impl FakeChanWebsocket {
    pub async fn start(options: FakeOptions) -> FakeChanWebsocket {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connection_id = uuid::Uuid::new_v4().to_string();
        let channel_id = "fake-ws-channel".to_owned();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let (actions, actions_rx) = mpsc::unbounded_channel();
        let task =
            tokio::spawn(serve(listener, options, connection_id.clone(), channel_id.clone(), seen.clone(), actions_rx));
        FakeChanWebsocket { addr, connection_id, channel_id, seen, actions, _task: task }
    }

    /// The media URL of the channel.
    pub fn url(&self) -> String {
        format!("ws://{}/media/{}", self.addr, self.connection_id)
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    pub fn act(&self, action: Action) {
        let _ = self.actions.send(action);
    }

    /// Waits (up to 60 s) until `check` holds.
    pub async fn wait_for(&self, what: &str, check: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let seen = self.seen();
            if check(&seen) {
                return seen;
            }
            assert!(tokio::time::Instant::now() < deadline, "fake chan_websocket: {what} never happened: {seen:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn html(status: StatusCode, title: &str, text: &str) -> ErrorResponse {
    let body = format!(
        "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\r\n<html><head>\r\n<title>{} {title}</title>\r\n</head><body>\r\n<h1>{title}</h1>\r\n<p>{text}</p>\r\n<hr />\r\n<address>Asterisk/22.10.1</address>\r\n</body></html>\r\n",
        status.as_u16()
    );
    let mut response = ErrorResponse::new(Some(body));
    *response.status_mut() = status;
    response.headers_mut().insert("Content-type", HeaderValue::from_static("text/html"));
    response
}

// The handshake callback's error type is tungstenite's (a whole HTTP response).
#[allow(clippy::result_large_err)]
async fn serve(
    listener: TcpListener,
    options: FakeOptions,
    connection_id: String,
    channel_id: String,
    seen: Arc<Mutex<Seen>>,
    actions: mpsc::UnboundedReceiver<Action>,
) {
    let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let actions = Arc::new(tokio::sync::Mutex::new(Some(actions)));
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        let (options, connection_id, channel_id, seen, connected, actions) = (
            options.clone(),
            connection_id.clone(),
            channel_id.clone(),
            seen.clone(),
            connected.clone(),
            actions.clone(),
        );
        tokio::spawn(async move {
            let expected = format!("/media/{connection_id}");
            let mut offered = None;
            let callback = |request: &Request, mut response: Response| {
                if request.uri().path() != expected {
                    return Err(html(StatusCode::NOT_FOUND, "Not found", "WebSocket instance not found"));
                }
                if connected.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    return Err(html(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "Another websocket connection exists for this connection id",
                    ));
                }
                if let Some(protocol) = request.headers().get("Sec-WebSocket-Protocol") {
                    offered = protocol.to_str().ok().map(str::to_owned);
                    if offered.as_deref().is_some_and(|p| p.split(',').any(|p| p.trim() == "media")) {
                        response.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("media"));
                    }
                }
                Ok(response)
            };
            let Ok(socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else { return };
            {
                let mut s = seen.lock().unwrap();
                s.connections += 1;
                s.protocol = offered;
            }
            let Some(mut actions) = actions.lock().await.take() else { return };
            run(socket, &options, &connection_id, &channel_id, &seen, &mut actions).await;
            seen.lock().unwrap().closed = true;
        });
    }
}

fn frame_size(format: &str) -> usize {
    match format {
        "ulaw" => 160,
        "slin" => 320,
        _ => 640,
    }
}

fn event(json: bool, channel_id: &str, name: &str, extra: &[(&str, &str)]) -> String {
    if json {
        let mut map = serde_json::Map::new();
        map.insert("event".into(), name.into());
        map.insert("channel_id".into(), channel_id.into());
        for (k, v) in extra {
            map.insert((*k).into(), (*v).into());
        }
        serde_json::Value::Object(map).to_string()
    } else if name == "MEDIA_MARK_PROCESSED" {
        format!("MEDIA_MARK_PROCESSED {}", extra[0].1)
    } else if name == "DTMF_END" {
        format!("DTMF_END digit:{} channel_id:{channel_id}", extra[0].1)
    } else {
        name.to_owned()
    }
}

async fn run(
    socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    options: &FakeOptions,
    connection_id: &str,
    channel_id: &str,
    seen: &Arc<Mutex<Seen>>,
    actions: &mut mpsc::UnboundedReceiver<Action>,
) {
    let (mut sink, mut stream) = socket.split();
    let size = frame_size(options.format);
    let json = options.json;
    let start = if json {
        serde_json::json!({"event":"MEDIA_START","connection_id":connection_id,"channel":"WebSocket/INCOMING/0x7f0c700047b0","channel_id":channel_id,"format":options.format,"optimal_frame_size":size,"ptime":20,"channel_variables":{"MEDIA_WEBSOCKET_CONNECTION_ID":connection_id,"MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE":size.to_string()}}).to_string()
    } else {
        format!(
            "MEDIA_START connection_id:{connection_id} channel:WebSocket/INCOMING/0x7f0c780032b0 channel_id:{channel_id} format:{} optimal_frame_size:{size} ptime:20",
            options.format
        )
    };
    if sink.send(Message::Text(start.into())).await.is_err() {
        return;
    }
    for frame in &options.inbound {
        if sink.send(Message::Binary(frame.clone().into())).await.is_err() {
            return;
        }
    }
    let mut queue: VecDeque<Queued> = VecDeque::new();
    let mut frames = 0usize;
    let mut xoff = false;
    let mut report_drained = false;
    let mut tick = tokio::time::interval(options.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut out: Vec<Message> = Vec::new();
        tokio::select! {
            _ = tick.tick() => {
                // Marks at the head are reached now; then one frame plays.
                while let Some(Queued::Mark(_)) = queue.front() {
                    let Some(Queued::Mark(id)) = queue.pop_front() else { unreachable!() };
                    seen.lock().unwrap().marks_processed.push(id.clone());
                    out.push(Message::Text(event(json, channel_id, "MEDIA_MARK_PROCESSED", &[("correlation_id", &id)]).into()));
                }
                if let Some(Queued::Frame(frame)) = queue.pop_front() {
                    frames -= 1;
                    seen.lock().unwrap().played.push(frame);
                }
                // Marks are in the queue too: it is drained when nothing at all is left.
                if queue.is_empty() && report_drained {
                    report_drained = false;
                    out.push(Message::Text(event(json, channel_id, "QUEUE_DRAINED", &[]).into()));
                }
                if xoff && frames <= XON {
                    xoff = false;
                    seen.lock().unwrap().xons += 1;
                    out.push(Message::Text(event(json, channel_id, "MEDIA_XON", &[]).into()));
                }
            }
            action = actions.recv() => match action {
                None => return,
                Some(Action::Dtmf(digit)) => out.push(Message::Text(event(json, channel_id, "DTMF_END", &[("digit", &digit.to_string())]).into())),
                Some(Action::Audio(bytes)) => out.push(Message::Binary(bytes.into())),
                Some(Action::Text(text)) => out.push(Message::Text(text.into())),
                Some(Action::Close(code)) => {
                    let _ = sink.send(Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: "".into() }))).await;
                    return;
                }
            },
            message = stream.next() => {
                let Some(Ok(message)) = message else { return };
                match message {
                    Message::Binary(bytes) => {
                        seen.lock().unwrap().received += bytes.len() / size;
                        if frames >= QUEUE_MAX {
                            seen.lock().unwrap().dropped += bytes.len() / size;
                        } else {
                            let chunks = bytes.chunks_exact(size);
                            seen.lock().unwrap().remainder_dropped += chunks.remainder().len();
                            for chunk in chunks {
                                queue.push_back(Queued::Frame(chunk.to_vec()));
                                frames += 1;
                            }
                            let mut s = seen.lock().unwrap();
                            s.max_queue = s.max_queue.max(frames);
                            if frames >= XOFF && !xoff {
                                xoff = true;
                                s.xoffs += 1;
                                out.push(Message::Text(event(json, channel_id, "MEDIA_XOFF", &[]).into()));
                            }
                        }
                    }
                    Message::Text(text) => {
                        seen.lock().unwrap().commands.push(text.to_string());
                        if text.len() > 128 {
                            continue;
                        }
                        let (command, data) = if json {
                            let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
                                out.push(Message::Text(event(true, channel_id, "ERROR", &[("error_text", "Unable to parse JSON command")]).into()));
                                flush_out(&mut sink, out).await;
                                continue;
                            };
                            (value["command"].as_str().unwrap_or_default().to_owned(), value["correlation_id"].as_str().map(str::to_owned))
                        } else {
                            let (c, d) = text.split_once(' ').map_or((text.to_string(), None), |(c, d)| (c.to_owned(), Some(d.to_owned())));
                            (c, d)
                        };
                        match command.as_str() {
                            "FLUSH_MEDIA" => {
                                let dropped = frames;
                                queue.clear();
                                frames = 0;
                                let mut s = seen.lock().unwrap();
                                s.flushes += 1;
                                s.flushed_frames = dropped;
                            }
                            "MARK_MEDIA" => queue.push_back(Queued::Mark(data.unwrap_or_default())),
                            "REPORT_QUEUE_DRAINED" => report_drained = true,
                            "GET_STATUS" => {
                                let status = if json {
                                    serde_json::json!({"event":"STATUS","channel_id":channel_id,"queue_length":frames,"xon_level":XON,"xoff_level":XOFF,"queue_full":frames >= QUEUE_MAX,"bulk_media":false,"media_paused":false}).to_string()
                                } else {
                                    format!("STATUS channel_id:{channel_id} queue_length:{frames} xon_level:{XON} xoff_level:{XOFF} queue_full:{} bulk_media:false media_paused:false", frames >= QUEUE_MAX)
                                };
                                out.push(Message::Text(status.into()));
                            }
                            "HANGUP" => {
                                let _ = sink.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))).await;
                                return;
                            }
                            _ => {}
                        }
                    }
                    Message::Close(_) => return,
                    _ => {}
                }
            }
        }
        if !flush_out(&mut sink, out).await {
            return;
        }
    }
}

async fn flush_out<S: futures_util::Sink<Message> + Unpin>(sink: &mut S, out: Vec<Message>) -> bool {
    for message in out {
        if sink.send(message).await.is_err() {
            return false;
        }
    }
    true
}
