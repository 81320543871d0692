//! Conversation-loop latency benchmark.
//!
//! Runs the real `asterai serve` binary on a temporary SQLite store with every speech provider
//! pointed at in-process mocks of fixed latency, in the OpenAI shapes:
//!
//! * speech-to-text answers after 300 ms;
//! * the chat completion streams its first sentence after 400 ms and each further one 150 ms
//!   later (three sentences, different on every turn so nothing comes from the TTS cache);
//! * text-to-speech answers each sentence after 200 ms with one second of 24 kHz WAV.
//!
//! Simulated Asterisk callers (the same one `asterai demo` uses) speak in real time, play every
//! file in real time, and time each turn from the recording's return to the first `STREAM FILE`.
//! After the calls the daemon is stopped and asterai's own per-turn overhead (the critical path
//! less the time spent waiting on providers, which the daemon stores with every turn) is read
//! back from the store.
//!
//! ```text
//! bench_conversation --asterai target/release/asterai --calls 10 --turns 4 --pipelining on
//! ```
//!
//! `--stt-ms`, `--llm-first-ms` and `--tts-ms` change the three delays (`scripts/bench-stream`
//! runs this bench at the streaming bench's delays, to compare the two paths in one run).
//!
//! `scripts/bench-conversation` runs the three configurations the figures come from.

#[path = "common/bench.rs"]
mod bench;

use std::net::SocketAddr;
use std::time::Duration;

use asterai::demo::caller::{Caller, Line};
use bench::{Mocks, arg, free_port};

const STT_MS: u64 = 300;
const LLM_FIRST_MS: u64 = 400;
const LLM_NEXT_MS: u64 = 150;
const TTS_MS: u64 = 200;
const SENTENCES: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(&args));
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn summary(values: &mut [u64]) -> String {
    values.sort_unstable();
    format!(
        "p50={} p90={} p99={} max={} (n={})",
        percentile(values, 0.50),
        percentile(values, 0.90),
        percentile(values, 0.99),
        values.last().copied().unwrap_or(0),
        values.len()
    )
}

/// The mocked providers (see the module docs): one second of WAV per sentence.
async fn mocks(delays: Delays) -> String {
    Mocks {
        stt: Duration::from_millis(delays.stt),
        llm_first: Duration::from_millis(delays.llm_first),
        llm_next: Duration::from_millis(LLM_NEXT_MS),
        sentences: SENTENCES,
        sentence: |n, i| format!("Reply {n} sentence {i}."),
        tts_first: Duration::from_millis(delays.tts),
        tts_seconds: 1.0,
    }
    .start()
    .await
}

/// The providers' delays, in milliseconds.
#[derive(Clone, Copy)]
struct Delays {
    stt: u64,
    llm_first: u64,
    tts: u64,
}

async fn run(args: &[String]) {
    let bin = arg(args, "--asterai", "target/release/asterai");
    let ms = |name: &str, default: u64| -> u64 {
        let text = arg(args, name, &default.to_string());
        text.parse().unwrap_or_else(|_| panic!("{name}: expected milliseconds, got {text:?}"))
    };
    let delays = Delays {
        stt: ms("--stt-ms", STT_MS),
        llm_first: ms("--llm-first-ms", LLM_FIRST_MS),
        tts: ms("--tts-ms", TTS_MS),
    };
    let calls: usize = arg(args, "--calls", "10").parse().unwrap();
    let turns: usize = arg(args, "--turns", "4").parse().unwrap();
    let pipelining = arg(args, "--pipelining", "on") == "on";
    let ramp = Duration::from_millis(arg(args, "--ramp-ms", "5000").parse().unwrap());

    let dir = tempfile::tempdir().unwrap();
    let url = mocks(delays).await;
    let agi: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("asterai.toml");
    std::fs::write(
        &config,
        format!(
            r#"[daemon]
data_dir = "{data}"
[log]
level = "warn"
[agi]
listen = "{agi}"
max_sessions = {sessions}
[http]
listen = "127.0.0.1:{http}"
[conversation]
company = "Bench"
pipelining = {pipelining}
max_turns = {max_turns}
[stt]
provider = "openai"
url = "{url}"
[responder]
provider = "openai"
url = "{url}"
[tts]
provider = "openai"
url = "{url}"
"#,
            data = dir.path().display(),
            sessions = calls + 10,
            http = free_port(),
            max_turns = turns + 5,
        ),
    )
    .unwrap();
    let log = dir.path().join("daemon.log");
    let daemon = bench::serve(&bin, &config, "bench", &log, None);
    let started = std::time::Instant::now();
    while tokio::net::TcpStream::connect(agi).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "asterai did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let script = vec![Line::Say(bench::TRANSCRIPT.into()); turns];
    let caller = |i: usize| {
        let mut caller = Caller::new(script.clone(), "bench");
        caller.uniqueid = format!("1795000000.{i}");
        caller.playback_speed = 1.0;
        caller.max_playback = Duration::from_secs(30);
        caller.speak_in_real_time = Some(Duration::from_secs(1));
        caller
    };
    // One call first, so the greeting is synthesized once and cached like on a running system.
    caller(0).call(agi).await.unwrap();

    let wall = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 1..=calls {
        let caller = caller(i);
        tasks.push(tokio::spawn(async move { caller.call(agi).await }));
        if calls > 1 {
            tokio::time::sleep(ramp / calls as u32).await;
        }
    }
    let mut first_play = Vec::new();
    let mut failed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(log) => first_play.extend(log.first_play_after_record_ms),
            Err(e) => {
                failed += 1;
                eprintln!("a call failed: {e}");
            }
        }
    }
    let wall = wall.elapsed();
    let load = bench::loadavg();
    let warning_lines = bench::stop(daemon, &log);
    let pool =
        sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.path().join("asterai.db").display())).await.unwrap();
    // Every call's answered turns but the warm-up call's (uniqueid 1795000000.0).
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT t.latency FROM call_turns t JOIN calls c ON c.id = t.call_id \
         WHERE t.turn > 0 AND c.channel <> 'PJSIP/demo-17950000000'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut overhead: Vec<u64> = rows
        .iter()
        .filter_map(|(json,)| serde_json::from_str::<serde_json::Value>(json).ok())
        .filter_map(|v| v["overhead_us"].as_u64())
        .collect();
    let warnings = warning_lines.len();
    for line in warning_lines.iter().take(5) {
        eprintln!("daemon: {line}");
    }

    let nominal = delays.stt + delays.llm_first + delays.tts;
    println!(
        "pipelining={} calls={calls} turns/call={turns} failed_calls={failed} wall={:.1}s daemon_warnings={warnings} load average {load}",
        if pipelining { "on" } else { "off" },
        wall.as_secs_f64()
    );
    println!(
        "recording returned -> first STREAM FILE (ms): {}  [providers alone: {nominal} ms; target <= {:.0} ms]",
        summary(&mut first_play),
        nominal as f64 * 1.05
    );
    println!("asterai overhead per turn (us): {}  [target p99 < 2000 us]", summary(&mut overhead));
}
