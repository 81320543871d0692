//! Tool round-trip benchmark: how long asterai itself takes from the model asking for an HTTP
//! tool to the tool's result being in the model's next request, beyond the tool's own time.
//!
//! ```text
//! bench_tools [--calls 300] [--concurrency 1] [--tool-ms 0]
//! ```
//!
//! Everything runs in this process, over loopback TCP, through the real paths: the FastAGI
//! server and the conversation core with an agent that has one HTTP tool, a simulated Asterisk
//! caller (`asterai::demo::caller`), and one small HTTP server (axum) playing the OpenAI
//! speech-to-text, chat completion and text-to-speech endpoints and the tool's receiver. Each
//! call has one turn: the first chat completion streams a tool call in OpenAI's chunk shapes,
//! asterai checks the arguments against the schema, signs and sends the tool request, and asks
//! the model again with the result.
//!
//! Four instants per call, all on this process's monotonic clock, taken in the mock servers:
//! `t0` the first completion's last byte handed to the HTTP server, `t1` the tool request
//! received whole, `t2` the tool's answer's last byte handed over, `t3` the second completion
//! request received whole. The overhead is `(t1 - t0) + (t3 - t2)`: assembling the streamed call,
//! the schema check, signing, both HTTP exchanges on the client side, and building the next
//! request. The tool's own time (`t2 - t1`, `--tool-ms`) is left out. `scripts/bench-tools`
//! builds it in release mode and runs it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asterai::agi::{AgiServer, Router, ServerConfig, Shutdown};
use asterai::config::{Config, Dur, Secret};
use asterai::conversation::{Conversations, Providers, Settings};
use asterai::demo::caller::{Caller, Line};
use asterai::feed::{Hub, Publisher};
use asterai::store::{Store, StoreOptions};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::routing::post;
use tokio_util::sync::CancellationToken;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

/// The instants of each tool call, by its id.
#[derive(Default)]
struct Marks {
    t0: HashMap<String, Instant>,
    t1: HashMap<String, Instant>,
    t2: HashMap<String, Instant>,
    t3: HashMap<String, Instant>,
}

#[derive(Clone)]
struct Mock {
    marks: Arc<Mutex<Marks>>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
    tool_delay: Duration,
    wav: Bytes,
}

/// A body of one chunk that records when the server has taken it (its end is polled).
fn marked_body(
    bytes: Bytes,
    marks: Arc<Mutex<Marks>>,
    which: fn(&mut Marks) -> &mut HashMap<String, Instant>,
    id: String,
) -> Body {
    let stream = futures_util::stream::unfold(Some(bytes), move |state| {
        let marks = marks.clone();
        let id = id.clone();
        async move {
            match state {
                Some(bytes) => Some((Ok::<Bytes, std::io::Error>(bytes), None)),
                None => {
                    which(&mut marks.lock().unwrap()).insert(id, Instant::now());
                    None
                }
            }
        }
    });
    Body::from_stream(stream)
}

fn chunk(delta: serde_json::Value, finish: Option<&str>) -> String {
    let chunk = serde_json::json!({"id": "chatcmpl-b", "object": "chat.completion.chunk", "created": 1_795_000_000,
        "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
    format!("data: {chunk}\n\n")
}

async fn completions(State(mock): State<Mock>, body: Bytes) -> axum::response::Response {
    let now = Instant::now();
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let last = request["messages"].as_array().and_then(|m| m.last()).cloned().unwrap_or_default();
    let sse = |body: String, marked: Option<String>| {
        let body = Bytes::from(body);
        let body = match marked {
            Some(id) => marked_body(body, mock.marks.clone(), |m| &mut m.t0, id),
            None => Body::from(body),
        };
        axum::response::Response::builder().header("content-type", "text/event-stream").body(body).unwrap()
    };
    if last["role"] == "tool" {
        let id = last["tool_call_id"].as_str().unwrap_or_default().to_owned();
        mock.marks.lock().unwrap().t3.insert(id, now);
        let mut text = chunk(serde_json::json!({"role": "assistant", "content": ""}), None);
        text.push_str(&chunk(serde_json::json!({"content": "Your order has shipped."}), None));
        text.push_str(&chunk(serde_json::json!({}), Some("stop")));
        text.push_str("data: [DONE]\n\n");
        return sse(text, None);
    }
    let id = format!("call_b{}", mock.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let mut text = chunk(serde_json::json!({"role": "assistant", "content": null}), None);
    text.push_str(&chunk(
        serde_json::json!({"tool_calls": [{"index": 0, "id": id, "type": "function", "function": {"name": "lookup_order", "arguments": ""}}]}),
        None,
    ));
    for piece in ["{\"order", "_id\": \"A-", "12345\"}"] {
        text.push_str(&chunk(
            serde_json::json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
            None,
        ));
    }
    text.push_str(&chunk(serde_json::json!({}), Some("tool_calls")));
    text.push_str("data: [DONE]\n\n");
    sse(text, Some(id))
}

async fn tool(State(mock): State<Mock>, body: Bytes) -> axum::response::Response {
    let now = Instant::now();
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = request["tool_call_id"].as_str().unwrap_or_default().to_owned();
    mock.marks.lock().unwrap().t1.insert(id.clone(), now);
    if !mock.tool_delay.is_zero() {
        tokio::time::sleep(mock.tool_delay).await;
    }
    let answer = Bytes::from(r#"{"status": "shipped", "eta": "2026-12-03"}"#);
    let body = marked_body(answer, mock.marks.clone(), |m| &mut m.t2, id);
    axum::response::Response::builder().header("content-type", "application/json").body(body).unwrap()
}

async fn speech(State(mock): State<Mock>) -> axum::response::Response {
    axum::response::Response::builder().header("content-type", "audio/wav").body(Body::from(mock.wav.clone())).unwrap()
}

async fn transcriptions() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"text": "Where is my order A-12345?"}))
}

/// A 24 kHz mono 16-bit WAV tone, as OpenAI's speech endpoint returns.
fn wav_24k(ms: u32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 24000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = std::io::Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut out, spec).unwrap();
    for i in 0..(24 * ms) {
        writer.write_sample(((i as f32 * 0.0785).sin() * 9000.0) as i16).unwrap();
    }
    writer.finalize().unwrap();
    out.into_inner()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(&args));
}

async fn run(args: &[String]) {
    let calls: usize = arg(args, "--calls", "300").parse().expect("--calls N");
    let concurrency: usize = arg(args, "--concurrency", "1").parse().expect("--concurrency N");
    let tool_ms: u64 = arg(args, "--tool-ms", "0").parse().expect("--tool-ms N");
    let dir = tempfile::tempdir().unwrap();

    let mock = Mock {
        marks: Arc::default(),
        next_id: Arc::default(),
        tool_delay: Duration::from_millis(tool_ms),
        wav: Bytes::from(wav_24k(200)),
    };
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/audio/speech", post(speech))
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/tool", post(tool))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{mock_addr}/v1");

    let url = format!("sqlite://{}", dir.path().join("asterai.db").display());
    let store = Store::connect(&StoreOptions { url, max_connections: 8, connect_timeout: Duration::from_secs(5) })
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let acme = store.create_org("acme", "Acme Inc.").await.unwrap();
    // SAFETY: set before the runtime's other tasks read the environment.
    unsafe { std::env::set_var("ASTERAI_SECRET_BENCH_SIGNING", "whsec-bench") };
    let spec = format!(
        r#"name = "bench"
ai_disclosure = false
greeting_inbound = "Hi."
[limits]
max_turns = 1
[[http_tools]]
name = "lookup_order"
description = "Look up an order"
url = "http://{mock_addr}/tool"
timeout = "5s"
signing_secret = "env:ASTERAI_SECRET_BENCH_SIGNING"
parameters = {{ type = "object", properties = {{ order_id = {{ type = "string", minLength = 3 }} }}, required = ["order_id"], additionalProperties = false }}
"#
    );
    let spec = asterai::agent::AgentSpec::parse(&spec).unwrap();
    asterai::agent::create(&store, acme.id, &spec, true).await.unwrap();

    let mut config = Config::default();
    config.daemon.data_dir = dir.path().display().to_string();
    config.stt.provider = "openai".into();
    config.stt.url = base.clone();
    config.stt.api_key = Secret::new("sk-bench");
    config.responder.provider = "openai".into();
    config.responder.url = base.clone();
    config.responder.api_key = Secret::new("sk-bench");
    config.tts.provider = "openai".into();
    config.tts.url = base.clone();
    config.conversation.turn_budget = Dur::secs(10);
    std::fs::create_dir_all(config.recordings_dir()).unwrap();
    let providers = Providers::from_config(&config).unwrap();
    let settings = Settings::from_config(&config);
    let publisher = Publisher::new(store.clone(), Hub::new());
    let conversations = Conversations::new(publisher, providers, settings, None);
    let server = AgiServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        Router::new().route("ai", conversations.handler()),
        ServerConfig::default(),
    )
    .await
    .unwrap();
    let agi = server.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(server.run(Shutdown::new(stop.clone(), Duration::from_secs(5))));

    // One call first, so connection pools and the agent's profile are warm.
    let caller = |i: usize| {
        let mut caller = Caller::new(vec![Line::Say("where is my order".into())], "acme");
        caller.uniqueid = format!("1795000000.{i}");
        caller
    };
    caller(0).call(agi).await.expect("the warm-up call");
    mock.marks.lock().unwrap().t0.clear();

    let started = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::new();
    for i in 1..=calls {
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let caller = caller(i);
        tasks.push(tokio::spawn(async move {
            let log = caller.call(agi).await;
            drop(permit);
            log
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("a call");
    }
    let elapsed = started.elapsed();
    stop.cancel();

    let marks = mock.marks.lock().unwrap();
    let mut overhead = Vec::new();
    let mut tool_own = Vec::new();
    let mut to_tool = Vec::new();
    let mut to_model = Vec::new();
    for (id, t0) in &marks.t0 {
        let (Some(t1), Some(t2), Some(t3)) = (marks.t1.get(id), marks.t2.get(id), marks.t3.get(id)) else {
            eprintln!("tool call {id} did not complete the round trip");
            continue;
        };
        let ask = t1.saturating_duration_since(*t0).as_secs_f64() * 1000.0;
        let back = t3.saturating_duration_since(*t2).as_secs_f64() * 1000.0;
        to_tool.push(ask);
        to_model.push(back);
        overhead.push(ask + back);
        tool_own.push(t2.saturating_duration_since(*t1).as_secs_f64() * 1000.0);
    }
    for list in [&mut overhead, &mut tool_own, &mut to_tool, &mut to_model] {
        list.sort_by(f64::total_cmp);
    }
    let line = |name: &str, v: &[f64]| {
        println!(
            "{name:<38} p50 {:>7.3} ms  p90 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms",
            percentile(v, 50.0),
            percentile(v, 90.0),
            percentile(v, 99.0),
            v.last().copied().unwrap_or(f64::NAN)
        )
    };
    println!(
        "{} tool round trips of {calls} calls, concurrency {concurrency}, tool time {tool_ms} ms, {:.1} s",
        overhead.len(),
        elapsed.as_secs_f64()
    );
    line("model's call -> tool request (t1-t0)", &to_tool);
    line("tool's answer -> next request (t3-t2)", &to_model);
    line("round-trip overhead (target p99 <= 5)", &overhead);
    line("tool's own time (excluded)", &tool_own);
}
