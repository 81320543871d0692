//! A fake Asterisk REST Interface built from the captures in
//! `tests/fixtures/asterisk/ari` (Asterisk 22.10.1).
//!
//! * REST: a request is answered with the captured response of the first unused exchange of an
//!   active scenario with the same method, path and query (status, headers, `body_text`
//!   verbatim, JSON or not). Ids are rewritten both ways: the captured channel id of an
//!   originate becomes the id the client asked for (`channelId`), everywhere it appears.
//! * Originates follow a queue of [`Plan`]s: the next `POST /ari/channels` is answered with the
//!   plan's captured exchange (or a canned error body), the channel becomes live, and the
//!   scenario's events from that exchange to the next originate are pushed over the WebSocket,
//!   rewritten to the new channel id and the client's application name.
//! * Events: `/ari/events?app=…` upgrades like Asterisk (401 with the captured JSON body for bad
//!   credentials, 400 with the captured HTML page without `app`). A connection with
//!   `subscribeAll=true` gets the scenario's `.subscribeAll.jsonl` lines, others the app's.
//! * What the captures do not cover is answered the way Asterisk documents it: the live channel
//!   list (`[]` as captured when empty), `continue`/`redirect`/`DELETE` of a live channel (204),
//!   of a missing one (the captured 404 "Channel not found"), an unknown resource (the captured
//!   404 "Resource not found").
//!
//! Tests can also drop every WebSocket, end channels behind the client's back, push derived
//! event lines, and force a response for a route.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;

/// The credentials of the captures (`ari:ari`).
pub const USER: &str = "ari";
pub const PASSWORD: &str = "ari";

/// How long tests wait for the fake to see something.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub fn ari_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/asterisk/ari")
}

/// One captured request and its response.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub seq: u64,
    pub note: Option<String>,
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub body: Option<String>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body_text: String,
    pub ws_before: usize,
    pub all_before: usize,
}

impl Exchange {
    pub fn is_originate(&self) -> bool {
        self.method == "POST" && self.path == "/ari/channels"
    }

    /// The id of the channel an originate made, from its captured response.
    pub fn channel_id(&self) -> Option<String> {
        let body: Value = serde_json::from_str(&self.body_text).ok()?;
        body["id"].as_str().map(str::to_owned)
    }

    pub fn content_type(&self) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.as_str())
    }
}

/// One capture: its exchanges and the event lines of both WebSockets.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub exchanges: Vec<Exchange>,
    /// `events/<name>.jsonl`: what the app (`ai-dialer`) received.
    pub events: Vec<String>,
    /// `events/<name>.subscribeAll.jsonl`: what `ai-monitor` with `subscribeAll=true` received.
    pub all_events: Vec<String>,
}

impl Scenario {
    pub fn load(name: &str) -> Scenario {
        let dir = ari_dir();
        let text = std::fs::read_to_string(dir.join("rest").join(format!("{name}.json")))
            .unwrap_or_else(|e| panic!("capture {name}: {e}"));
        let value: Value = serde_json::from_str(&text).unwrap();
        let exchanges =
            value["exchanges"].as_array().map(|list| list.iter().map(exchange).collect()).unwrap_or_default();
        let lines = |file: String| -> Vec<String> {
            std::fs::read_to_string(dir.join("events").join(file))
                .map(|t| t.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect())
                .unwrap_or_default()
        };
        Scenario {
            name: name.to_owned(),
            exchanges,
            events: lines(format!("{name}.jsonl")),
            all_events: lines(format!("{name}.subscribeAll.jsonl")),
        }
    }

    /// Every scenario with REST exchanges (all but `ws-handshake`, which has another shape).
    pub fn names() -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(ari_dir().join("rest"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".json")).map(str::to_owned))
            .filter(|n| n != "ws-handshake")
            .collect();
        names.sort();
        names
    }

    pub fn exchange(&self, seq: u64) -> &Exchange {
        self.exchanges.iter().find(|e| e.seq == seq).unwrap_or_else(|| panic!("{} has no exchange {seq}", self.name))
    }

    /// The event windows of an originate: from just before it to just before the next one.
    fn windows(&self, seq: u64) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let this = self.exchange(seq);
        // The next originate that made a channel: refused ones produced no events.
        let next = self.exchanges.iter().find(|e| e.seq > seq && e.is_originate() && e.status == 200);
        let ws_end = next.map_or(self.events.len(), |n| n.ws_before).min(self.events.len());
        let all_end = next.map_or(self.all_events.len(), |n| n.all_before).min(self.all_events.len());
        (this.ws_before.min(ws_end)..ws_end, this.all_before.min(all_end)..all_end)
    }
}

fn exchange(e: &Value) -> Exchange {
    let request = &e["request"];
    let response = &e["response"];
    let query = request["query"]
        .as_object()
        .map(|q| q.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default();
    let headers = response["headers"]
        .as_object()
        .map(|h| h.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default();
    Exchange {
        seq: e["seq"].as_u64().unwrap_or_default(),
        note: e["note"].as_str().map(str::to_owned),
        method: request["method"].as_str().unwrap_or_default().to_owned(),
        path: request["path"].as_str().unwrap_or_default().to_owned(),
        query,
        body: request["body"].as_str().map(str::to_owned),
        status: response["status"].as_u64().unwrap_or(500) as u16,
        headers,
        body_text: response["body_text"].as_str().unwrap_or_default().to_owned(),
        ws_before: e["ws_messages_before_request"].as_u64().unwrap_or_default() as usize,
        all_before: e["subscribeAll_messages_before_request"].as_u64().unwrap_or_default() as usize,
    }
}

/// A WebSocket handshake attempt of `ws-handshake.json`.
pub fn handshake(note: &str) -> Value {
    let text = std::fs::read_to_string(ari_dir().join("rest/ws-handshake.json")).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    value["attempts"].as_array().unwrap().iter().find(|a| a["note"] == note).cloned().unwrap()
}

/// A response body the fake sends instead of a capture's.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

impl Canned {
    /// Asterisk's HTML error page, as captured for a WebSocket upgrade without `app`, with
    /// another status and message.
    pub fn html(status: u16, reason: &str, message: &str) -> Canned {
        let page = handshake("no app parameter");
        let body = page["body_text"]
            .as_str()
            .unwrap()
            .replace("400 Bad Request", &format!("{status} {reason}"))
            .replace("<h1>Bad Request</h1>", &format!("<h1>{reason}</h1>"))
            .replace("HTTP request is missing param: [app]", message);
        Canned { status, content_type: Some("text/html".into()), body }
    }

    /// The captured HTML 400 itself.
    pub fn captured_html_400() -> Canned {
        let page = handshake("no app parameter");
        Canned {
            status: 400,
            content_type: Some("text/html".into()),
            body: page["body_text"].as_str().unwrap().to_owned(),
        }
    }

    pub fn text(status: u16, body: &str) -> Canned {
        Canned { status, content_type: Some("text/plain".into()), body: body.to_owned() }
    }

    /// A captured response, verbatim.
    pub fn from(exchange: &Exchange) -> Canned {
        Canned {
            status: exchange.status,
            content_type: exchange.content_type().map(str::to_owned),
            body: exchange.body_text.clone(),
        }
    }
}

/// What the next originate does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: String,
    /// The originate exchange replayed.
    pub seq: u64,
    /// Push only the first `n` events of the window now (the rest with [`FakeAri::release`]).
    pub events: Option<usize>,
    /// Answer with this instead of the capture; no channel is made and no event sent.
    pub response: Option<Canned>,
    /// Event lines pushed after the window (derived from captured ones).
    pub extra: Vec<String>,
    /// Leave the window out (for plans whose events the test pushes itself).
    pub no_window: bool,
}

impl Plan {
    pub fn replay(scenario: &str, seq: u64) -> Plan {
        Plan { scenario: scenario.into(), seq, events: None, response: None, extra: Vec::new(), no_window: false }
    }

    pub fn refuse(canned: Canned) -> Plan {
        Plan { response: Some(canned), ..Plan::replay("originate-stasis", 1) }
    }

    pub fn events(mut self, n: usize) -> Plan {
        self.events = Some(n);
        self
    }

    /// The window's events are replaced by `lines` (derived from the scenario's).
    pub fn instead(mut self, lines: Vec<String>) -> Plan {
        self.no_window = true;
        self.extra = lines;
        self
    }
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: HeaderMap,
    pub body: String,
    pub status: u16,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

enum WsCommand {
    Text(String),
    Close,
}

struct Socket {
    id: u64,
    app: String,
    subscribe_all: bool,
    tx: mpsc::UnboundedSender<WsCommand>,
}

/// Id rewriting for one scenario: captured id → the client's.
#[derive(Debug, Clone)]
struct Active {
    scenario: Arc<Scenario>,
    ids: Vec<(String, String)>,
    used: Vec<u64>,
}

impl Active {
    fn rewrite(&self, text: &str) -> String {
        self.ids.iter().fold(text.to_owned(), |t, (from, to)| t.replace(from.as_str(), to))
    }
}

#[derive(Default)]
struct Inner {
    requests: Vec<Seen>,
    sockets: Vec<Socket>,
    next_socket: u64,
    connections: u64,
    refused_upgrades: u64,
    channels: BTreeMap<String, Value>,
    plans: VecDeque<Plan>,
    /// What an originate does when no plan is queued.
    default_plan: Option<Plan>,
    active: Vec<Active>,
    /// Events held back by a plan, per channel id, already rewritten: (app lines, all lines).
    held: HashMap<String, (Vec<String>, Vec<String>)>,
    overrides: Vec<(Method, String, Canned)>,
    next_id: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    changed: Notify,
}

/// The fake ARI server.
pub struct FakeAri {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl FakeAri {
    pub async fn start() -> FakeAri {
        let shared =
            Arc::new(Shared { inner: Mutex::new(Inner { next_id: 1, ..Default::default() }), changed: Notify::new() });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned()).await;
        });
        FakeAri { addr, shared, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Client settings for this fake, with the captures' credentials.
    pub fn settings(&self) -> asterai::ari::AriSettings {
        asterai::ari::AriSettings {
            url: self.url(),
            username: USER.into(),
            password: asterai::config::Secret::new(PASSWORD),
            auth: asterai::ari::Auth::Header,
            timeout: Duration::from_secs(5),
            ca_file: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap()
    }

    /// Queues what the next originate does.
    pub fn plan(&self, plan: Plan) {
        self.lock().plans.push_back(plan);
    }

    /// What every originate does when no plan is queued (by default: the whole of
    /// originate-stasis).
    pub fn default_plan(&self, plan: Plan) {
        self.lock().default_plan = Some(plan);
    }

    /// Answers every later request for `method` whose path ends with `suffix` with `canned`.
    pub fn force(&self, method: Method, suffix: &str, canned: Canned) {
        let mut inner = self.lock();
        inner.overrides.retain(|(m, s, _)| !(m == method && s == suffix));
        inner.overrides.push((method, suffix.to_owned(), canned));
    }

    /// Makes a scenario's exchanges answer requests, with ids as captured.
    pub fn activate(&self, scenario: &str) {
        let scenario = Arc::new(Scenario::load(scenario));
        self.lock().active.push(Active { scenario, ids: Vec::new(), used: Vec::new() });
    }

    /// Makes only this scenario's exchanges answer requests.
    pub fn activate_only(&self, scenario: &str) {
        self.lock().active.clear();
        self.activate(scenario);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.lock().requests.clone()
    }

    /// Requests with this method whose path ends with `suffix`.
    pub fn requests_to(&self, method: &str, suffix: &str) -> Vec<Seen> {
        self.requests().into_iter().filter(|r| r.method == method && r.path.ends_with(suffix)).collect()
    }

    pub fn originates(&self) -> Vec<Seen> {
        self.requests_to("POST", "/ari/channels")
    }

    /// WebSocket connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.lock().connections
    }

    pub fn refused_upgrades(&self) -> u64 {
        self.lock().refused_upgrades
    }

    pub fn live_channels(&self) -> Vec<String> {
        self.lock().channels.keys().cloned().collect()
    }

    /// Waits until `check` holds, re-checking whenever the fake sees something.
    pub async fn wait_until(&self, what: &str, mut check: impl FnMut(&FakeAri) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let changed = self.shared.changed.notified();
            if check(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() && !check(self) {
                panic!("the fake ARI never saw: {what}");
            }
        }
    }

    /// Waits for `n` WebSocket connections in all.
    pub async fn wait_connections(&self, n: u64) {
        self.wait_until(&format!("{n} WebSocket connections"), |f| {
            f.connections() >= n && !f.lock().sockets.is_empty()
        })
        .await;
    }

    /// Closes every WebSocket abruptly, as a restarted Asterisk or a network cut would.
    pub fn drop_sockets(&self) {
        let mut inner = self.lock();
        for socket in inner.sockets.drain(..) {
            let _ = socket.tx.send(WsCommand::Close);
        }
    }

    /// Ends a channel without telling anyone (its events are lost while the client is away).
    pub fn end_channel(&self, id: &str) {
        let mut inner = self.lock();
        inner.channels.remove(id);
        inner.held.remove(id);
        self.shared.changed.notify_waiters();
    }

    /// Pushes the events a plan held back for the channel `id`.
    pub fn release(&self, id: &str) {
        let mut inner = self.lock();
        if let Some((app, all)) = inner.held.remove(id) {
            push(&mut inner, &app, &all);
        }
        self.shared.changed.notify_waiters();
    }

    /// Pushes event lines to every connection (the same lines to app and subscribeAll ones).
    pub fn push_lines(&self, lines: &[String]) {
        let mut inner = self.lock();
        push(&mut inner, lines, lines);
        self.shared.changed.notify_waiters();
    }

    pub fn stop(&self) {
        self.stop.cancel();
        self.drop_sockets();
    }
}

impl Drop for FakeAri {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends lines to the sockets, with the application name each expects; follows channel ends.
fn push(inner: &mut Inner, app_lines: &[String], all_lines: &[String]) {
    for (lines, all) in [(app_lines, false), (all_lines, true)] {
        for line in lines {
            if let Ok(value) = serde_json::from_str::<Value>(line)
                && value["type"] == "ChannelDestroyed"
                && let Some(id) = value["channel"]["id"].as_str()
            {
                inner.channels.remove(id);
            }
            for socket in inner.sockets.iter().filter(|s| s.subscribe_all == all) {
                let text = line
                    .replace("\"application\":\"ai-dialer\"", &format!("\"application\":{:?}", socket.app))
                    .replace("\"application\":\"ai-monitor\"", &format!("\"application\":{:?}", socket.app));
                let _ = socket.tx.send(WsCommand::Text(text));
            }
        }
    }
}

fn authorized(headers: &HeaderMap, query: &BTreeMap<String, String>) -> bool {
    use base64::Engine as _;
    let expected = format!("{USER}:{PASSWORD}");
    if query.get("api_key") == Some(&expected) {
        return true;
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .is_some_and(|decoded| decoded == expected.as_bytes())
}

fn respond(status: u16, content_type: Option<&str>, body: String) -> Response {
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("Server", "Asterisk/22.10.1")
        .header("Cache-Control", "no-cache, no-store");
    if let Some(content_type) = content_type {
        builder = builder.header("Content-type", content_type);
    }
    builder.body(Body::from(body)).unwrap()
}

fn canned(c: &Canned) -> Response {
    respond(c.status, c.content_type.as_deref(), c.body.clone())
}

/// A captured JSON error (`{"message": …}` as Asterisk sends it).
fn message(status: u16, text: &str) -> Response {
    respond(status, Some("application/json"), serde_json::json!({ "message": text }).to_string())
}

fn parse_query(uri: &axum::http::Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    let decode = |s: &str| {
                        percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned()
                    };
                    (decode(k), decode(v))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = parse_query(request.uri());
    let headers = request.headers().clone();
    if path == "/ari/events" {
        return events(shared, request, query).await;
    }
    let body = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap_or_else(|_| Bytes::new());
    let body = String::from_utf8_lossy(&body).into_owned();
    let response = answer(&shared, &method, &path, &query, &headers, &body);
    let mut inner = shared.inner.lock().unwrap();
    inner.requests.push(Seen {
        method: method.to_string(),
        path,
        query,
        headers,
        body,
        status: response.status().as_u16(),
    });
    drop(inner);
    shared.changed.notify_waiters();
    response
}

fn answer(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &str,
) -> Response {
    let info = Scenario::load("asterisk-info");
    if !authorized(headers, query) {
        return canned(&Canned::from(info.exchange(5)));
    }
    let mut inner = shared.inner.lock().unwrap();
    if let Some((_, _, c)) =
        inner.overrides.iter().find(|(m, suffix, _)| m == method && path.ends_with(suffix.as_str()))
    {
        return canned(c);
    }
    if method == Method::POST && path == "/ari/channels" {
        let plan = inner.plans.pop_front().or_else(|| inner.default_plan.clone());
        if let Some(plan) = plan {
            return originate(&mut inner, plan, query);
        }
    }
    // A captured exchange of an active scenario.
    let mut query_wo_key = query.clone();
    query_wo_key.remove("api_key");
    for active in inner.active.iter_mut() {
        let found = active.scenario.exchanges.iter().find(|e| {
            !active.used.contains(&e.seq)
                && e.method == method.as_str()
                && active.rewrite(&e.path) == path
                && e.query
                    .iter()
                    .filter(|(k, _)| k.as_str() != "api_key")
                    .map(|(k, v)| (k.clone(), active.rewrite(v)))
                    .collect::<BTreeMap<_, _>>()
                    == query_wo_key
                && same_body(e.body.as_deref(), body)
        });
        if let Some(e) = found {
            let (seq, status, content_type, text) =
                (e.seq, e.status, e.content_type().map(str::to_owned), active.rewrite(&e.body_text));
            active.used.push(seq);
            return respond(status, content_type.as_deref(), text);
        }
    }
    if method == Method::POST && path == "/ari/channels" {
        // No plan and no matching capture: the plain app-mode originate of originate-stasis.
        return originate(&mut inner, Plan::replay("originate-stasis", 1), query);
    }
    generic(&mut inner, &info, method, path)
}

/// The same request body: both empty, or equal JSON (or equal text when not JSON).
fn same_body(captured: Option<&str>, sent: &str) -> bool {
    match captured.filter(|c| !c.is_empty()) {
        None => sent.trim().is_empty(),
        Some(captured) => match (serde_json::from_str::<Value>(captured), serde_json::from_str::<Value>(sent)) {
            (Ok(a), Ok(b)) => a == b,
            _ => captured == sent,
        },
    }
}

/// Routes the captures do not script, answered as Asterisk does (see the module docs).
fn generic(inner: &mut Inner, info: &Scenario, method: &Method, path: &str) -> Response {
    let parts: Vec<&str> = path.trim_start_matches("/ari/").split('/').collect();
    let not_found = || message(404, "Channel not found");
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["asterisk", "info"]) => canned(&Canned::from(info.exchange(1))),
        ("GET", ["asterisk", "ping"]) => canned(&Canned::from(info.exchange(4))),
        ("GET", ["channels"]) => {
            if inner.channels.is_empty() {
                canned(&Canned::from(info.exchange(8)))
            } else {
                let list: Vec<&Value> = inner.channels.values().collect();
                respond(200, Some("application/json"), serde_json::to_string(&list).unwrap())
            }
        }
        ("GET", ["applications"]) => {
            if inner.sockets.is_empty() {
                canned(&Canned::from(info.exchange(7)))
            } else {
                let mut names: Vec<&str> = inner.sockets.iter().map(|s| s.app.as_str()).collect();
                names.dedup();
                let list: Vec<Value> = names
                    .iter()
                    .map(|n| serde_json::json!({"name": n, "channel_ids": [], "bridge_ids": [], "endpoint_ids": [], "device_names": [], "events_allowed": [], "events_disallowed": []}))
                    .collect();
                respond(200, Some("application/json"), serde_json::to_string(&list).unwrap())
            }
        }
        ("GET", ["channels", id]) => match inner.channels.get(*id) {
            Some(channel) => {
                let mut channel = channel.clone();
                channel["state"] = Value::String("Up".into());
                respond(200, Some("application/json"), channel.to_string())
            }
            None => not_found(),
        },
        ("DELETE", ["channels", id]) => {
            if inner.channels.remove(*id).is_some() {
                inner.held.remove(*id);
                respond(204, None, String::new())
            } else {
                not_found()
            }
        }
        ("POST", ["channels", id, "continue" | "redirect" | "answer" | "ring" | "dtmf"]) => {
            if inner.channels.contains_key(*id) { respond(204, None, String::new()) } else { not_found() }
        }
        _ => canned(&Canned::from(info.exchange(11))),
    }
}

fn originate(inner: &mut Inner, plan: Plan, query: &BTreeMap<String, String>) -> Response {
    if let Some(c) = &plan.response {
        return canned(c);
    }
    let scenario = Arc::new(Scenario::load(&plan.scenario));
    let exchange = scenario.exchange(plan.seq).clone();
    let captured_id = exchange.channel_id();
    let id = match query.get("channelId") {
        Some(id) => id.clone(),
        None => {
            inner.next_id += 1;
            format!("1895000000.{}", inner.next_id)
        }
    };
    if exchange.status != 200 || captured_id.is_none() {
        return canned(&Canned::from(&exchange));
    }
    let captured_id = captured_id.unwrap();
    if inner.channels.contains_key(&id) {
        let duplicate = Scenario::load("caller-hangup-in-stasis");
        return canned(&Canned::from(duplicate.exchange(3)));
    }
    let mut ids = vec![(captured_id.clone(), id.clone())];
    if let Some(other) = query.get("otherChannelId") {
        // The captured ;2 half: the id after the originated one.
        if let Some((prefix, n)) = captured_id.rsplit_once('.')
            && let Ok(n) = n.parse::<u64>()
        {
            ids.push((format!("{prefix}.{}", n + 1), other.clone()));
        }
    }
    let active = Active { scenario: scenario.clone(), ids, used: vec![plan.seq] };
    let body = active.rewrite(&exchange.body_text);
    if let Ok(channel) = serde_json::from_str::<Value>(&body) {
        inner.channels.insert(id.clone(), channel);
    }
    let (ws, all) = scenario.windows(plan.seq);
    let mut app_lines: Vec<String> =
        if plan.no_window { Vec::new() } else { scenario.events[ws].iter().map(|l| active.rewrite(l)).collect() };
    let mut all_lines: Vec<String> =
        if plan.no_window { Vec::new() } else { scenario.all_events[all].iter().map(|l| active.rewrite(l)).collect() };
    let extra: Vec<String> = plan.extra.iter().map(|l| active.rewrite(l)).collect();
    app_lines.extend(extra.iter().cloned());
    all_lines.extend(extra);
    inner.active.insert(0, active);
    if let Some(n) = plan.events {
        let later = (app_lines.split_off(n.min(app_lines.len())), all_lines.split_off(n.min(all_lines.len())));
        inner.held.insert(id.clone(), later);
    }
    let response = respond(exchange.status, exchange.content_type(), body);
    push(inner, &app_lines, &all_lines);
    response
}

/// `GET /ari/events`: Asterisk's upgrade, or its refusals as captured.
async fn events(shared: Arc<Shared>, request: Request, query: BTreeMap<String, String>) -> Response {
    let refuse = |note: &str| {
        let attempt = handshake(note);
        let status = attempt["status"].as_u64().unwrap() as u16;
        let content_type = attempt["headers"]["Content-type"].as_str().map(str::to_owned);
        let mut response = respond(status, content_type.as_deref(), attempt["body_text"].as_str().unwrap().to_owned());
        if status == 401 {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Basic realm=\"Asterisk REST Interface\"".parse().unwrap());
        }
        response
    };
    if !authorized(request.headers(), &query) {
        shared.inner.lock().unwrap().refused_upgrades += 1;
        shared.changed.notify_waiters();
        return refuse("bad api_key");
    }
    let Some(app) = query.get("app").cloned().filter(|a| !a.is_empty()) else {
        shared.inner.lock().unwrap().refused_upgrades += 1;
        shared.changed.notify_waiters();
        return refuse("no app parameter");
    };
    let Ok(accept) = asterai::http::upgrade::accept(request.headers()) else {
        return message(400, "not a WebSocket upgrade");
    };
    let subscribe_all = query.get("subscribeAll").is_some_and(|v| v == "true");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = {
        let mut inner = shared.inner.lock().unwrap();
        inner.next_socket += 1;
        inner.connections += 1;
        let id = inner.next_socket;
        inner.sockets.push(Socket { id, app, subscribe_all, tx });
        id
    };
    shared.changed.notify_waiters();
    let upgrade = hyper::upgrade::on(request);
    let task_shared = shared.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        loop {
            tokio::select! {
                command = rx.recv() => match command {
                    Some(WsCommand::Text(text)) => {
                        if ws.send(Message::Text(text.into())).await.is_err() {
                            break;
                        }
                    }
                    // Abrupt: no close frame, the TCP connection just ends.
                    Some(WsCommand::Close) | None => break,
                },
                incoming = ws.next() => match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        task_shared.inner.lock().unwrap().sockets.retain(|s| s.id != id);
        task_shared.changed.notify_waiters();
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap()
}

/// A captured event line with some fields changed: how tests derive the events the captures do
/// not contain (a busy far end, ringing) from real ones.
pub fn derive(line: &str, changes: &[(&str, Value)]) -> String {
    let mut value: Value = serde_json::from_str(line).unwrap();
    for (pointer, new) in changes {
        let target = value.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer} in {line}"));
        *target = new.clone();
    }
    value.to_string()
}

/// The first line of a scenario's app events of `kind` about channel `id` (`peer` for Dial).
pub fn line_of(scenario: &Scenario, kind: &str, id: &str) -> String {
    scenario
        .events
        .iter()
        .find(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["type"] == kind && (v["channel"]["id"] == id || v["peer"]["id"] == id)
        })
        .cloned()
        .unwrap_or_else(|| panic!("{} has no {kind} for {id}", scenario.name))
}
