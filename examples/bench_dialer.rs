//! Dialer benchmark: several daemons' campaign runners on one PostgreSQL database, dialing one
//! campaign through a fake ARI. Reports the origination rate, the claim latency, double dials
//! and the concurrency overshoot.
//!
//! ```text
//! bench_dialer run [--originations 1500] [--daemons 3] [--max-concurrent 100] [--talk-ms 3000]
//!                  [--ring-ms 200] [--pacing 0s] [--poll 1s] [--admin-url postgres://…/postgres]
//! bench_dialer daemon --ari URL --app NAME --database URL [--poll 1s]   (started by `run`)
//! ```
//!
//! `run` creates a fresh database (dropped at the end), one organization and one campaign with
//! `--originations` contacts, and starts the fake ARI: `POST /ari/channels` answers like the
//! captured Asterisk 22 originate (200, channel in state `Down`), then the channel's events,
//! copied from the captured `originate-stasis` events with ids rewritten, go to the socket of the
//! application that originated it: `Dial`, `ChannelStateChange` `Up`, `Dial` `ANSWER`,
//! `StasisStart` after `--ring-ms`; `StasisEnd` when the daemon continues the channel to the
//! dialplan; `ChannelHangupRequest` and `ChannelDestroyed` with cause 16 after `--talk-ms`.
//!
//! Each daemon is a process of its own (`daemon`), wired as `asterai serve` wires it
//! ([`asterai::cli::serve::start_ari`]: event stream, tracker, dialer, campaign runner with the
//! system clock) with its own connection pool and feed hub, one Stasis application each on the
//! one fake Asterisk. It records `asterai_campaign_claim_seconds` (each claim transaction) and
//! prints the samples when its stdin closes.
//!
//! `scripts/bench-dialer` builds this in release mode and runs it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asterai::config::{Config, Dur, LogFormat};
use asterai::feed::{Hub, Publisher};
use asterai::store::contacts::NewContactRow;
use asterai::store::{Store, StoreOptions};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::Write;

use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;

const CAPTURED_ID: &str = "1795222386.55";
const ENTITY_ID: &str = "02:fc:00:00:00:01";
const CLAIM_METRIC: &str = "asterai_campaign_claim_seconds";

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("run") => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
            runtime.block_on(run(&args));
        }
        Some("daemon") => {
            let claims = Arc::new(Mutex::new(Vec::new()));
            metrics::set_global_recorder(Capture { claims: claims.clone() }).expect("recorder");
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
            runtime.block_on(daemon(&args, claims));
        }
        _ => eprintln!("usage: bench_dialer run|daemon … (see the doc comment)"),
    }
}

// ---------------------------------------------------------------------------------------------
// The daemons.

/// A metrics recorder that keeps every claim sample (and drops the rest).
struct Capture {
    claims: Arc<Mutex<Vec<f64>>>,
}

struct Samples(Arc<Mutex<Vec<f64>>>);

impl metrics::HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

impl metrics::Recorder for Capture {
    fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
        if key.name() == CLAIM_METRIC {
            metrics::Histogram::from_arc(Arc::new(Samples(self.claims.clone())))
        } else {
            metrics::Histogram::noop()
        }
    }
}

async fn daemon(args: &[String], claims: Arc<Mutex<Vec<f64>>>) {
    let level = arg(args, "--log-level", "info");
    asterai::logging::init(LogFormat::Text, &level, vec![]);
    // The fake Asterisk's calls have no agent, so no agent audio: every answered call would
    // count as abandoned and slow the campaign down; the benchmark measures the dialer itself.
    let compliance = std::env::temp_dir().join(format!("bench-dialer-compliance-{}.toml", std::process::id()));
    std::fs::write(&compliance, "[defaults]\nabandon = { threshold = 100.0 }\n").expect("write the compliance file");
    let toml = format!(
        "[database]\nurl = {db:?}\n\n[ari]\nurl = {ari:?}\nusername = \"bench\"\npassword = \"bench\"\napp = {app:?}\n\n\
         [dialer]\ncaller_id = \"Bench <+15550000000>\"\npoll_interval = {poll:?}\nclaim_lease = \"120s\"\ncompliance = {compliance:?}\n",
        compliance = compliance.display().to_string(),
        db = arg(args, "--database", ""),
        ari = arg(args, "--ari", ""),
        app = arg(args, "--app", "asterai"),
        poll = arg(args, "--poll", "1s"),
    );
    let config = Config::from_toml(&toml).expect("config");
    let store = Store::connect(&StoreOptions {
        url: config.database.url.expose().to_owned(),
        max_connections: config.database.max_connections,
        connect_timeout: config.database.connect_timeout.0,
    })
    .await
    .expect("database");
    let stop = CancellationToken::new();
    let hub = Hub::new();
    tokio::spawn(hub.clone().run(
        store.clone(),
        config.feed.poll_interval.0,
        config.feed.batch_window.0,
        stop.child_token(),
    ));
    let publisher = Publisher::new(store, hub);
    let supervisor = asterai::supervise::Supervisor::new(stop.clone());
    asterai::cli::serve::start_ari(&config, publisher, &supervisor).expect("ARI").expect("ari.url is set");
    // Runs until the benchmark closes stdin.
    let _ = tokio::task::spawn_blocking(|| std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())).await;
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let claims = claims.lock().unwrap();
    let micros: Vec<String> = claims.iter().map(|s| format!("{:.0}", s * 1e6)).collect();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "claims {}", micros.join(","));
    let _ = out.flush();
}

// ---------------------------------------------------------------------------------------------
// The fake ARI.

/// Event templates from the capture, for the captured originated channel.
struct Templates {
    /// The originate's 200 body.
    channel: Value,
    answer: Vec<Value>,
    stasis_end: Value,
    hangup: Vec<Value>,
}

impl Templates {
    fn load(fixtures: &str) -> Templates {
        let rest: Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{fixtures}/rest/originate-stasis.json")).unwrap())
                .unwrap();
        let originate = rest["exchanges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["request"]["method"] == "POST" && e["request"]["path"] == "/ari/channels")
            .expect("the captured originate");
        assert_eq!(originate["response"]["status"], 200);
        let channel = originate["response"]["body_json"].clone();
        let text = std::fs::read_to_string(format!("{fixtures}/events/originate-stasis.jsonl")).unwrap();
        let events: Vec<Value> =
            text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
        let ours = |e: &Value| e["channel"]["id"] == CAPTURED_ID || e["peer"]["id"] == CAPTURED_ID;
        let find = |kind: &str, pick: &dyn Fn(&Value) -> bool| {
            events.iter().find(|e| e["type"] == kind && ours(e) && pick(e)).cloned().unwrap_or_else(|| panic!("{kind}"))
        };
        let answer = vec![
            find("Dial", &|e| e["dialstatus"] == ""),
            find("ChannelStateChange", &|e| e["channel"]["state"] == "Up"),
            find("Dial", &|e| e["dialstatus"] == "ANSWER"),
            find("ChannelVarset", &|e| e["variable"] == "STASISSTATUS"),
            find("StasisStart", &|_| true),
        ];
        let stasis_end = find("StasisEnd", &|_| true);
        let mut request = find("ChannelHangupRequest", &|_| true);
        request["cause"] = json!(16);
        request.as_object_mut().unwrap().remove("soft");
        let mut destroyed = find("ChannelDestroyed", &|_| true);
        destroyed["cause"] = json!(16);
        destroyed["cause_txt"] = json!("Normal Clearing");
        Templates { channel, answer, stasis_end, hangup: vec![request, destroyed] }
    }
}

/// One channel's identity at the fake.
#[derive(Clone)]
struct Chan {
    id: String,
    name: String,
    app: String,
}

impl Chan {
    fn body(&self, template: &Value, state: &str) -> Value {
        let mut c = template.clone();
        c["id"] = json!(self.id);
        c["name"] = json!(self.name);
        c["state"] = json!(state);
        c
    }

    /// A captured event, rewritten for this channel.
    fn event(&self, template: &Value) -> String {
        let mut e = template.clone();
        for key in ["channel", "peer"] {
            if e.get(key).is_some_and(|c| c["id"] == CAPTURED_ID) {
                e[key]["id"] = json!(self.id);
                e[key]["name"] = json!(self.name);
            }
        }
        e["application"] = json!(self.app);
        e["timestamp"] = json!(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string());
        e.to_string()
    }
}

#[derive(Default)]
struct Fake {
    sockets: HashMap<String, mpsc::UnboundedSender<String>>,
    connections: u64,
    live: HashMap<String, (Chan, bool)>,
    max_live: usize,
    /// Originates per number.
    per_number: HashMap<String, u32>,
    /// When each originate came, from the start of the benchmark.
    times: Vec<Duration>,
    continues: u64,
    other_requests: BTreeMap<String, u64>,
}

struct Shared {
    fake: Mutex<Fake>,
    templates: Templates,
    started: Instant,
    ring: Duration,
    talk: Duration,
    next: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Fake> {
        self.fake.lock().unwrap()
    }

    fn push(&self, chan: &Chan, templates: &[&Value]) {
        let fake = self.lock();
        if let Some(socket) = fake.sockets.get(&chan.app) {
            for t in templates {
                let _ = socket.send(chan.event(t));
            }
        }
    }
}

fn json_response(status: u16, body: Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn empty(status: u16) -> Response {
    Response::builder().status(status).body(Body::empty()).unwrap()
}

fn query(uri: &axum::http::Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            (k.to_owned(), percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned())
        })
        .collect()
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let q = query(request.uri());
    let method = request.method().clone();
    let parts: Vec<&str> = path.trim_start_matches("/ari/").split('/').collect();
    match (&method, parts.as_slice()) {
        (&Method::GET, ["events"]) => events(shared, request, q).await,
        (&Method::POST, ["channels"]) => originate(&shared, &q),
        (&Method::GET, ["channels"]) => {
            let fake = shared.lock();
            let list: Vec<Value> = fake
                .live
                .values()
                .map(|(c, up)| c.body(&shared.templates.channel, if *up { "Up" } else { "Down" }))
                .collect();
            json_response(200, Value::Array(list))
        }
        (&Method::GET, ["channels", id]) => match shared.lock().live.get(*id) {
            Some((c, up)) => json_response(200, c.body(&shared.templates.channel, if *up { "Up" } else { "Down" })),
            None => json_response(404, json!({"message": "Channel not found"})),
        },
        (&Method::POST, ["channels", id, "continue"]) => {
            let chan = {
                let mut fake = shared.lock();
                fake.continues += 1;
                fake.live.get(*id).map(|(c, _)| c.clone())
            };
            match chan {
                Some(chan) => {
                    shared.push(&chan, &[&shared.templates.stasis_end]);
                    empty(204)
                }
                None => json_response(404, json!({"message": "Channel not found"})),
            }
        }
        (&Method::DELETE, ["channels", id]) => {
            let chan = shared.lock().live.remove(*id).map(|(c, _)| c);
            match chan {
                Some(chan) => {
                    let t = &shared.templates;
                    shared.push(&chan, &[&t.hangup[0], &t.hangup[1]]);
                    empty(204)
                }
                None => json_response(404, json!({"message": "Channel not found"})),
            }
        }
        (&Method::GET, ["asterisk", "info"]) => {
            json_response(200, json!({"system": {"version": "22.10.1", "entity_id": ENTITY_ID}}))
        }
        (&Method::GET, ["applications"]) => {
            let apps: Vec<Value> = shared.lock().sockets.keys().map(|a| json!({"name": a})).collect();
            json_response(200, Value::Array(apps))
        }
        _ => {
            *shared.lock().other_requests.entry(format!("{method} {path}")).or_default() += 1;
            json_response(404, json!({"message": "Resource not found"}))
        }
    }
}

/// `POST /ari/channels`: the captured 200 (state `Down`), then the answered call's events.
fn originate(shared: &Arc<Shared>, q: &BTreeMap<String, String>) -> Response {
    let n = shared.next.fetch_add(1, Ordering::Relaxed);
    let id = q.get("channelId").cloned().unwrap_or_else(|| format!("1795300000.{n}"));
    let endpoint = q.get("endpoint").cloned().unwrap_or_default();
    let number = endpoint.split('/').nth(1).and_then(|r| r.split('@').next()).unwrap_or_default().to_owned();
    let chan =
        Chan { id: id.clone(), name: format!("PJSIP/trunk-{n:08x}"), app: q.get("app").cloned().unwrap_or_default() };
    {
        let mut fake = shared.lock();
        fake.times.push(shared.started.elapsed());
        *fake.per_number.entry(number).or_default() += 1;
        fake.live.insert(id.clone(), (chan.clone(), false));
        fake.max_live = fake.max_live.max(fake.live.len());
    }
    let body = chan.body(&shared.templates.channel, "Down");
    let task = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(task.ring).await;
        if let Some(entry) = task.lock().live.get_mut(&chan.id) {
            entry.1 = true;
        }
        let answer: Vec<&Value> = task.templates.answer.iter().collect();
        task.push(&chan, &answer);
        tokio::time::sleep(task.talk).await;
        // Gone from the channel list before its ChannelDestroyed, as in Asterisk.
        if task.lock().live.remove(&chan.id).is_some() {
            let t = &task.templates;
            task.push(&chan, &[&t.hangup[0], &t.hangup[1]]);
        }
    });
    json_response(200, body)
}

/// `GET /ari/events?app=…`: one socket per application.
async fn events(shared: Arc<Shared>, request: Request, q: BTreeMap<String, String>) -> Response {
    let Some(app) = q.get("app").cloned() else { return json_response(400, json!({"message": "app"})) };
    let Ok(accept) = asterai::http::upgrade::accept(request.headers()) else { return empty(400) };
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    {
        let mut fake = shared.lock();
        fake.sockets.insert(app.clone(), tx);
        fake.connections += 1;
    }
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        loop {
            tokio::select! {
                text = rx.recv() => match text {
                    Some(text) => if ws.send(Message::Text(text.into())).await.is_err() { break },
                    None => break,
                },
                incoming = ws.next() => match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The run.

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn run(args: &[String]) {
    let originations: usize = arg(args, "--originations", "1500").parse().unwrap();
    let daemons: usize = arg(args, "--daemons", "3").parse().unwrap();
    let max_concurrent: usize = arg(args, "--max-concurrent", "100").parse().unwrap();
    let talk = Duration::from_millis(arg(args, "--talk-ms", "3000").parse().unwrap());
    let ring = Duration::from_millis(arg(args, "--ring-ms", "200").parse().unwrap());
    let pacing = arg(args, "--pacing", "0s");
    let poll = arg(args, "--poll", "1s");
    pacing.parse::<Dur>().expect("--pacing");
    poll.parse::<Dur>().expect("--poll");
    let admin_url = arg(args, "--admin-url", "postgres://postgres@127.0.0.1:5432/postgres");
    let fixtures = arg(args, "--fixtures", "tests/fixtures/asterisk/ari");
    let logs = std::path::PathBuf::from(arg(args, "--logs", "target/bench-dialer"));
    std::fs::create_dir_all(&logs).unwrap();

    // A fresh database.
    let admin = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&admin_url).await.expect("PostgreSQL");
    let name = format!("asterai_bench_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&admin).await.unwrap();
    let base = admin_url.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
    let url = format!("{base}/{name}");
    let result = bench(&url, originations, daemons, max_concurrent, talk, ring, &pacing, &poll, &fixtures, &logs).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
        .execute(&admin)
        .await
        .unwrap();
    if let Err(e) = result {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

#[allow(clippy::too_many_arguments)]
async fn bench(
    url: &str,
    originations: usize,
    daemons: usize,
    max_concurrent: usize,
    talk: Duration,
    ring: Duration,
    pacing: &str,
    poll: &str,
    fixtures: &str,
    logs: &std::path::Path,
) -> Result<(), String> {
    let store = Store::connect(&StoreOptions {
        url: url.to_owned(),
        max_connections: 4,
        connect_timeout: Duration::from_secs(5),
    })
    .await
    .map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    let org = store.create_org("bench", "Bench").await.map_err(|e| e.to_string())?;
    let settings = json!({
        "max_concurrent": max_concurrent,
        "pacing": pacing,
        "ring_timeout": "30s",
        "window": {"start": "00:00", "end": "23:59", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
    });
    let campaign = store.create_campaign(org.id, "bench", &settings).await.map_err(|e| e.to_string())?;
    let rows: Vec<NewContactRow> = (0..originations)
        .map(|i| NewContactRow { phone: format!("+1555{:07}", 1_000_000 + i), ..Default::default() })
        .collect();
    for chunk in rows.chunks(500) {
        store.add_contacts(org.id, campaign.id, chunk).await.map_err(|e| e.to_string())?;
    }

    // The fake ARI.
    let shared = Arc::new(Shared {
        fake: Mutex::new(Fake::default()),
        templates: Templates::load(fixtures),
        started: Instant::now(),
        ring,
        talk,
        next: AtomicU64::new(1),
    });
    let app = axum::Router::new().fallback(handle).with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ari = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    // The daemons.
    let exe = std::env::current_exe().unwrap();
    let mut children = Vec::new();
    for d in 1..=daemons {
        let log = std::fs::File::create(logs.join(format!("daemon-{d}.log"))).unwrap();
        let child = tokio::process::Command::new(&exe)
            .args(["daemon", "--ari", &ari, "--app", &format!("bench-{d}"), "--database", url, "--poll", poll])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| e.to_string())?;
        children.push(child);
    }
    let waiting = Instant::now();
    while shared.lock().connections < daemons as u64 {
        if waiting.elapsed() > Duration::from_secs(30) {
            return Err("the daemons did not connect to the fake ARI".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Their resync (channel list, store) runs after the connect.
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!(
        "{daemons} daemons connected; campaign of {originations} contacts, max_concurrent {max_concurrent}, pacing {pacing}, \
         poll {poll}, ring {ring:?}, talk {talk:?}"
    );
    store.set_campaign_status(org.id, campaign.id, "running").await.map_err(|e| e.to_string())?;
    let start = shared.started.elapsed();

    // Until every contact was dialed and every call ended, or the deadline.
    let budget = Duration::from_secs(60)
        + (talk + ring + Duration::from_secs(2)) * (originations / max_concurrent.max(1) + 1) as u32
        + (Duration::from_millis(120) + pacing.parse::<Dur>().map(|d| d.0).unwrap_or_default()) * originations as u32;
    let deadline = Instant::now() + budget;
    let mut last_report = Instant::now();
    loop {
        let (dialed, live) = {
            let fake = shared.lock();
            (fake.per_number.len(), fake.live.len())
        };
        if dialed >= originations && live == 0 {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("deadline: {dialed} of {originations} numbers dialed, {live} calls live");
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            eprintln!("  {:>5.1}s: {dialed} dialed, {live} live", (shared.started.elapsed() - start).as_secs_f64());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the runners settle the last attempts.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Stop the daemons; collect their claim samples.
    let mut claims: Vec<f64> = Vec::new();
    for child in &mut children {
        drop(child.stdin.take());
    }
    for child in &mut children {
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await {
            if let Some(samples) = line.strip_prefix("claims ") {
                claims.extend(samples.split(',').filter_map(|s| s.parse::<f64>().ok()).map(|us| us / 1000.0));
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    }
    claims.sort_by(f64::total_cmp);

    // The figures.
    let (times, total, double_dials, numbers_twice, max_live, continues, other_requests) = {
        let fake = shared.lock();
        let mut times: Vec<f64> = fake.times.iter().map(|t| (*t - start).as_secs_f64()).collect();
        times.sort_by(f64::total_cmp);
        let total = times.len();
        let double_dials: u32 = fake.per_number.values().map(|n| n.saturating_sub(1)).sum();
        let numbers_twice = fake.per_number.values().filter(|n| **n > 1).count();
        (times, total, double_dials, numbers_twice, fake.max_live, fake.continues, fake.other_requests.clone())
    };
    let overshoot = max_live.saturating_sub(max_concurrent);
    // The steady part: from the 10th to the 90th percentile of the originations, past the
    // first wave (all slots free at once) and before the tail.
    let (lo, hi) = (total / 10, (total * 9 / 10).max(1) - 1);
    let steady =
        if total > 10 && times[hi] > times[lo] { (hi - lo) as f64 / (times[hi] - times[lo]) * 60.0 } else { 0.0 };
    let overall = if total > 1 { total as f64 / (times[total - 1] - times[0]).max(1e-9) * 60.0 } else { 0.0 };

    let pg = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(url).await.map_err(|e| e.to_string())?;
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM contacts WHERE campaign_id = $1 GROUP BY status ORDER BY status")
            .bind(campaign.id)
            .fetch_all(&pg)
            .await
            .map_err(|e| e.to_string())?;
    let calls_twice: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT contact_id FROM calls WHERE campaign_id = $1 GROUP BY contact_id HAVING COUNT(*) > 1) t",
    )
    .bind(campaign.id)
    .fetch_one(&pg)
    .await
    .map_err(|e| e.to_string())?;
    let call_statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM calls WHERE campaign_id = $1 GROUP BY status ORDER BY status")
            .bind(campaign.id)
            .fetch_all(&pg)
            .await
            .map_err(|e| e.to_string())?;
    pg.close().await;
    store.close().await;

    let mut warnings = 0;
    for d in 1..=daemons {
        let text = std::fs::read_to_string(logs.join(format!("daemon-{d}.log"))).unwrap_or_default();
        warnings += text.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).count();
    }
    println!("originations {total} of {originations} contacts, by {daemons} daemons (target: 1,000/min)");
    println!(
        "origination rate steady (10th–90th percentile) {steady:.0}/min, overall {overall:.0}/min, first-to-last {:.1}s",
        times.last().copied().unwrap_or(0.0) - times.first().copied().unwrap_or(0.0)
    );
    println!(
        "claim latency ms p50 {:.2} p99 {:.2} max {:.2} ({} claims)",
        percentile(&claims, 0.50),
        percentile(&claims, 0.99),
        percentile(&claims, 1.0),
        claims.len()
    );
    println!(
        "double dials {double_dials} (numbers originated more than once: {numbers_twice}; contacts with more than one call in the store: {calls_twice})"
    );
    println!("max live calls {max_live} with max_concurrent {max_concurrent}: overshoot {overshoot}");
    println!("contacts {statuses:?}; calls {call_statuses:?}; continues {continues}; daemon log warnings {warnings}");
    if !other_requests.is_empty() {
        println!("unexpected ARI requests: {other_requests:?}");
    }
    Ok(())
}
