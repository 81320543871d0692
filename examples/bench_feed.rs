//! Live-feed benchmark: N WebSocket clients on one daemon while events are published at a fixed
//! rate. Reports delivery latency (from the event's `at`, stamped in the write transaction, to
//! receipt) and events lost.
//!
//! ```text
//! bench_feed server  --addr 127.0.0.1:4700 --rate 200 --seconds 30 --clients 1000 [--database URL]
//! bench_feed clients --addr 127.0.0.1:4700 --token <token> --clients 1000
//! ```
//!
//! `scripts/bench-feed` runs both (separate processes) and prints the figures.
//!
//! The server is the daemon's own feed path: the HTTP server, `GET /v1/feed`'s upgrade and one
//! subscriber per client (tokio-tungstenite). It reports the CPU time it spent while events were
//! published and delivered.

use std::time::{Duration, Instant};

use asterai::feed::subscriber::SubscriberConfig;
use asterai::feed::{Hub, Publisher};
use asterai::http::{AppState, HttpParts};
use asterai::store::{CallStatus, Direction, FinishCall, Latency, NewCall, NewTurn, Outcome, Store, StoreOptions};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    match args.get(1).map(String::as_str) {
        Some("server") => runtime.block_on(server(&args)),
        Some("clients") => runtime.block_on(clients(&args)),
        _ => eprintln!("usage: bench_feed server|clients … (see the doc comment)"),
    }
}

async fn server(args: &[String]) {
    let addr: std::net::SocketAddr = arg(args, "--addr", "127.0.0.1:4700").parse().unwrap();
    let rate: u64 = arg(args, "--rate", "200").parse().unwrap();
    let seconds: u64 = arg(args, "--seconds", "30").parse().unwrap();
    let clients: usize = arg(args, "--clients", "1000").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let default_db = format!("sqlite://{}", dir.path().join("bench.db").display());
    let url = arg(args, "--database", &default_db);
    let store = Store::connect(&StoreOptions { url, max_connections: 10, connect_timeout: Duration::from_secs(5) })
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let org = store.create_org(&format!("bench{}", std::process::id()), "Bench").await.unwrap();
    let token = asterai::auth::create_token(&store, org.id, "bench", asterai::auth::Scopes::all()).await.unwrap().token;

    let stop = CancellationToken::new();
    let hub = Hub::new();
    hub.prime(&store).await.unwrap();
    tokio::spawn(hub.clone().run(
        store.clone(),
        Duration::from_secs(1),
        Duration::from_millis(arg(args, "--window-ms", "5").parse().unwrap()),
        stop.clone(),
    ));
    let state = AppState::new(HttpParts {
        store: store.clone(),
        hub: hub.clone(),
        feed: SubscriberConfig {
            ping_interval: Duration::from_secs(20),
            queue: 1024,
            write_timeout: Duration::from_secs(10),
            max_message_bytes: 65536,
        },
        metrics: None,
        shutdown: CancellationToken::new(),
        limits: Default::default(),
        supervisor: None,
        dialer: None,
    });
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(asterai::http::serve(listener, state, stop.clone()));
    println!("token {token}");

    // Wait for every client to subscribe.
    let waiting = Instant::now();
    while hub.subscribers() < clients {
        if waiting.elapsed() > Duration::from_secs(120) {
            eprintln!("only {} clients connected", hub.subscribers());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("{} clients connected; publishing {rate}/s for {seconds}s", hub.subscribers());

    let publisher = Publisher::new(store.clone(), hub.clone());
    let mut calls = Vec::new();
    for i in 0..20 {
        let call = publisher
            .call_started(&NewCall {
                id: None,
                org_id: org.id,
                direction: Direction::Outbound,
                from: "+15550000000".into(),
                to: format!("+155512300{i:02}"),
                channel: None,
                campaign_id: None,
                contact_id: None,
            })
            .await
            .unwrap();
        publisher.call_status(org.id, &call.id, CallStatus::InProgress, None).await.unwrap();
        calls.push((call.id, 0));
    }
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = rate * seconds;
    let started = Instant::now();
    let cpu_at_start = cpu_seconds();
    for n in 0..total {
        tick.tick().await;
        let (call_id, turn) = &mut calls[(n % 20) as usize];
        *turn += 1;
        publisher
            .conversation_turn(
                org.id,
                &NewTurn {
                    call_id: call_id.clone(),
                    turn: *turn,
                    caller: "how much does the premium plan cost per month?".into(),
                    agent: "The premium plan is 20 dollars a month, and the first month is free.".into(),
                    emotion: Some("neutral".into()),
                    intent: Some("question".into()),
                    confidence: Some(0.91),
                    latency: Latency {
                        endpoint: 1000,
                        stt: 300,
                        llm_first: 400,
                        tts_first: 200,
                        total: 1900,
                        overhead_us: None,
                        voice_to_voice: None,
                    },
                    interrupted: false,
                    tools: Vec::new(),
                },
            )
            .await
            .unwrap();
    }
    let took = started.elapsed();
    let cpu_at_end_of_publishing = cpu_seconds();
    // The end marker: clients stop when they see it.
    let finish = FinishCall {
        status: CallStatus::Completed,
        reason: None,
        outcome: Some(Outcome::Completed),
        outcome_reason: None,
        emotion: None,
        intent_score: None,
    };
    publisher.call_ended(org.id, &calls[0].0, &finish).await.unwrap();
    println!(
        "published {total} conversation_turn events in {:.1}s ({:.0}/s)",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    );
    // Every client has had the end marker by now (the clients' process reports any loss).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu = cpu_seconds() - cpu_at_start;
    println!(
        "server_cpu_s {cpu:.2} ({:.2} while publishing, the rest draining; {:.1} µs per delivery)",
        cpu_at_end_of_publishing - cpu_at_start,
        cpu * 1e6 / (total as f64 * clients.max(1) as f64)
    );
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// User and system CPU time of this process so far (from /proc/self/stat, in clock ticks of
/// 1/100 s on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// The string value after `key` (which ends with the opening quote).
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(key)? + key.len();
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

async fn clients(args: &[String]) {
    let addr = arg(args, "--addr", "127.0.0.1:4700");
    let token = arg(args, "--token", "");
    let count: usize = arg(args, "--clients", "1000").parse().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..count {
        let url = format!("ws://{addr}/v1/feed");
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut request = url.into_client_request().unwrap();
            request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
            // A small read buffer: tungstenite zero-fills it on every read (128 KiB by default).
            let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
            let (mut ws, _) =
                tokio_tungstenite::connect_async_with_config(request, Some(config), false).await.expect("connect");
            let mut latencies = Vec::new();
            let mut ids: Vec<i64> = Vec::new();
            // One deadline for the whole run: a timer per message would cost more than the
            // message.
            let run = async {
                while let Some(Ok(message)) = ws.next().await {
                    let Message::Text(text) = message else { continue };
                    let received = chrono::Utc::now();
                    // Read only the three fields measured, as a lean client would; the load
                    // generator must not be what the benchmark measures.
                    let text = text.as_str();
                    match field(text, "\"type\":\"") {
                        Some("conversation_turn") => {
                            let at = chrono::DateTime::parse_from_rfc3339(field(text, "\"at\":\"").unwrap_or_default())
                                .unwrap();
                            latencies.push((received - at.with_timezone(&chrono::Utc)).num_microseconds().unwrap_or(0));
                            let id = text
                                .strip_prefix("{\"id\":")
                                .and_then(|t| t.split(',').next())
                                .and_then(|n| n.parse().ok());
                            ids.push(id.unwrap_or_default());
                        }
                        Some("call_ended") => break,
                        _ => {}
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(600), run).await;
            (latencies, ids)
        }));
    }
    let mut all = Vec::new();
    let mut received = 0usize;
    let mut out_of_order = 0usize;
    for task in tasks {
        let (latencies, ids) = task.await.unwrap();
        received += ids.len();
        out_of_order += ids.windows(2).filter(|w| w[0] >= w[1]).count();
        all.extend(latencies);
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "clients={count} received={received} out_of_order={out_of_order} latency_ms p50={:.2} p99={:.2} max={:.2}",
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
}
