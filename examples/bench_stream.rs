//! Streaming-path benchmark (issue 12: `scripts/bench-stream`).
//!
//! Runs the real `asterai serve` binary (a second process) with `ari.url` pointing at a fake
//! Asterisk in this process (`tests/support/fake_pbx.rs`: ARI REST, the event WebSocket and
//! chan_websocket media sockets). Each simulated caller enters `Stasis(app,ai?org=bench)`, is
//! bridged with the external media channel asterai creates, hears the greeting, asks two
//! questions (espeak-ng speech, sent in real time as 20 ms slin16 frames, nothing while silent
//! as chan_websocket does), talks over the second answer, hears the answer to that, and hangs up.
//!
//! Mocked providers (OpenAI shapes) answer with the issue's fixed delays: speech-to-text 150 ms
//! after the utterance is posted, the chat completion's first sentence after 300 ms (two more
//! right after), text-to-speech's first PCM chunk after 120 ms (the rest faster than real time).
//!
//! Figures, per run of N concurrent calls, measured on the caller's side of the wire:
//! * voice to voice: the caller's last frame → asterai's first frame of the answer;
//! * barge-in: the first frame of speech over the agent → FLUSH_MEDIA;
//! * late frames: agent frames that arrived after the caller's playback had run dry inside an
//!   answer, and jitter (|inter-arrival − 20 ms| of frames inside an answer past the lead);
//! * the daemon's CPU (utime + stime from `/proc/<pid>/stat`) per call as % of one core, and its
//!   resident memory per call (peak VmRSS during the run − VmRSS before it);
//! * channels and bridges left in the fake Asterisk once the calls ended.
//!
//! ```text
//! bench_stream --asterai target/release/asterai --runs 1,50,200
//! ```

#[path = "../tests/support/fake_pbx.rs"]
mod fake_pbx;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::response::Response;
use axum::routing::post;
use fake_pbx::{FakePbx, Step};
use futures_util::StreamExt;

const STT_MS: u64 = 150;
const LLM_FIRST_MS: u64 = 300;
const TTS_FIRST_MS: u64 = 120;
const ENDPOINT_MS: u64 = 500;
const BARGE_IN_MIN_MS: u64 = 250;
const APP: &str = "asterai-bench";

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(&args));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn summary(values: &mut [f64]) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "p50={:.0} p99={:.0} max={:.0} (n={})",
        percentile(values, 0.50),
        percentile(values, 0.99),
        values.last().copied().unwrap_or(f64::NAN),
        values.len()
    )
}

/// One second of a 300 Hz tone at 24 kHz.
fn tone_24k(seconds: f32) -> Vec<i16> {
    (0..(24000.0 * seconds) as usize)
        .map(|i| ((i as f32 * 2.0 * std::f32::consts::PI * 300.0 / 24000.0).sin() * 9000.0) as i16)
        .collect()
}

fn sse_chunk(content: &str) -> Bytes {
    let chunk = serde_json::json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_795_000_000,
        "model": "bench", "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]});
    Bytes::from(format!("data: {chunk}\n\n"))
}

/// The mock providers; returns their base URL (up to `/v1`).
async fn mocks() -> String {
    let replies = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route(
            "/v1/audio/transcriptions",
            post(|_body: Bytes| async {
                tokio::time::sleep(Duration::from_millis(STT_MS)).await;
                axum::Json(serde_json::json!({"text": "Could you tell me more about the plan?"}))
            }),
        )
        .route(
            "/v1/chat/completions",
            post(move |_body: Bytes| {
                let n = replies.fetch_add(1, Ordering::Relaxed);
                async move {
                    let stream = futures_util::stream::iter(0..=3).then(move |i| async move {
                        if i == 3 {
                            return Ok::<_, std::convert::Infallible>(Bytes::from_static(b"data: [DONE]\n\n"));
                        }
                        tokio::time::sleep(Duration::from_millis(if i == 0 { LLM_FIRST_MS } else { 10 })).await;
                        Ok(sse_chunk(&format!(
                            "Reply {n} sentence number {} is here.{}",
                            i + 1,
                            if i < 2 { " " } else { "" }
                        )))
                    });
                    Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(Body::from_stream(stream))
                        .unwrap()
                }
            }),
        )
        .route(
            "/v1/audio/speech",
            post(|body: Bytes| async move {
                let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                tokio::time::sleep(Duration::from_millis(TTS_FIRST_MS)).await;
                let samples = tone_24k(1.5);
                if request["response_format"] == "wav" {
                    let wav = asterai::speech::audio::encode_wav_at(&samples, 24000);
                    return Response::builder().header("content-type", "audio/wav").body(Body::from(wav)).unwrap();
                }
                // Raw 24 kHz PCM, 100 ms chunks five times faster than real time.
                let chunks: Vec<Bytes> = samples
                    .chunks(2400)
                    .map(|c| Bytes::from(c.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>()))
                    .collect();
                let stream = futures_util::stream::iter(chunks.into_iter().enumerate()).then(|(i, chunk)| async move {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Ok::<_, std::convert::Infallible>(chunk)
                });
                Response::builder()
                    .header("content-type", "application/octet-stream")
                    .body(Body::from_stream(stream))
                    .unwrap()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

fn asterai(bin: &str, config: &std::path::Path, args: &[&str]) {
    let status = std::process::Command::new(bin)
        .args(args)
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "asterai {args:?} failed");
}

/// The daemon's CPU time so far (utime + stime), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// The daemon's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn run(args: &[String]) {
    let bin = arg(args, "--asterai", "target/release/asterai");
    let runs: Vec<usize> =
        arg(args, "--runs", "1,50,200").split(',').filter_map(|n| n.trim().parse().ok()).filter(|n| *n > 0).collect();
    let ramp = Duration::from_millis(arg(args, "--ramp-ms", "3000").parse().unwrap());

    let dir = tempfile::tempdir().unwrap();
    let url = mocks().await;
    let pbx = FakePbx::start(APP).await;
    let config = dir.path().join("asterai.toml");
    let max = runs.iter().max().copied().unwrap_or(1);
    std::fs::write(
        &config,
        format!(
            r#"[daemon]
data_dir = "{data}"
[log]
level = "warn"
[agi]
listen = "127.0.0.1:{agi}"
max_sessions = {sessions}
[http]
listen = "127.0.0.1:{http}"
[ari]
url = "{ari}"
username = "asterai"
password = "bench"
app = "{APP}"
[stream]
endpoint_silence = "{ENDPOINT_MS}ms"
barge_in_min_speech = "{BARGE_IN_MIN_MS}ms"
no_input = "20s"
[conversation]
company = "Bench"
greeting_inbound = "Hello, this is Bench."
ai_disclosure = false
max_turns = 10
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
            agi = free_port(),
            sessions = max + 10,
            http = free_port(),
            ari = pbx.url(),
        ),
    )
    .unwrap();
    asterai(&bin, &config, &["migrate"]);
    asterai(&bin, &config, &["org", "create", "bench"]);
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut daemon = std::process::Command::new(&bin)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = daemon.id();
    tokio::time::timeout(Duration::from_secs(30), pbx.wait_connected()).await.expect("asterai connected to ARI");

    let ask = Arc::new(fake_pbx::espeak16("Could you tell me more about the plan?"));
    let interrupt = Arc::new(fake_pbx::espeak16("Wait, wait, one more question."));
    let script = vec![
        Step::AwaitAnswer(Duration::from_millis(300)),
        Step::Say(ask.clone()),
        Step::AwaitAnswer(Duration::from_millis(300)),
        Step::Say(ask.clone()),
        Step::SayOver { after: Duration::from_millis(800), samples: interrupt.clone() },
        Step::AwaitAnswer(Duration::from_millis(300)),
        Step::HangUp,
    ];
    // One call first, so the greeting is synthesized once and cached as on a running system.
    pbx.call("warmup", "ai?org=bench", script.clone());
    pbx.wait_log("warmup", "the warm-up call", Duration::from_secs(120), |l| l.script_done).await;

    println!(
        "targets (issue 12, endpoint_silence {ENDPOINT_MS} ms): voice_to_voice p50 <= {} ms, p99 <= {} ms at 200 calls; \
         barge-in p99 <= {} ms; CPU <= 0.5 % of a core per call; late or dropped frames: 0",
        ENDPOINT_MS + 570 + 30,
        ENDPOINT_MS + 570 + 60,
        BARGE_IN_MIN_MS + 40
    );
    println!("mocks: STT {STT_MS} ms, LLM first sentence {LLM_FIRST_MS} ms, TTS first chunk {TTS_FIRST_MS} ms");
    for (r, calls) in runs.iter().copied().enumerate() {
        let ids: Vec<String> = (0..calls).map(|i| format!("run{r}-call{i}")).collect();
        let rss_before = rss_kib(pid);
        let cpu_before = cpu_seconds(pid);
        let wall = std::time::Instant::now();
        let peak = Arc::new(AtomicU64::new(rss_before));
        let sampling = {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        for id in &ids {
            pbx.call(id, "ai?org=bench", script.clone());
            if calls > 1 {
                tokio::time::sleep(ramp / calls as u32).await;
            }
        }
        let mut logs = Vec::new();
        for id in &ids {
            logs.push(pbx.wait_log(id, "the end of the script", Duration::from_secs(300), |l| l.script_done).await);
        }
        let seconds = wall.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pid) - cpu_before;
        sampling.abort();
        let load = loadavg();
        // Let asterai take its channels down.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while (!pbx.live_channels().is_empty() || pbx.bridges() > 0) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (mut v2v, mut barge, mut jitter, mut lateness) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut late, mut frames, mut failed) = (0u64, 0usize, 0usize);
        for log in &logs {
            if log.bridged_at.is_none() || log.agent_frames.is_empty() {
                failed += 1;
            }
            // The first answer follows the greeting's wait; the last utterance is the barge-in.
            v2v.extend(log.voice_to_voice().iter().map(|d| d.as_secs_f64() * 1000.0));
            barge.extend(log.barge_in().iter().map(|d| d.as_secs_f64() * 1000.0));
            jitter.extend(log.jitter.iter().map(|d| d.as_secs_f64() * 1000.0));
            lateness.extend(log.lateness.iter().map(|d| d.as_secs_f64() * 1000.0));
            late += log.late_frames;
            frames += log.agent_frames.len();
        }
        let leaked = pbx.live_channels().len();
        println!("== {calls} concurrent calls ({seconds:.1} s, load average {load}, failed calls {failed})");
        println!("voice_to_voice (ms): {}", summary(&mut v2v));
        println!("barge-in, speech onset -> FLUSH_MEDIA (ms): {}", summary(&mut barge));
        println!(
            "agent frames: {frames}, late {late} (lateness ms: {}), jitter ms: {}",
            summary(&mut lateness),
            summary(&mut jitter)
        );
        println!(
            "daemon CPU: {:.2} s over {seconds:.1} s = {:.3} % of one core per call; memory: peak RSS {} KiB, before {} KiB, {:.0} KiB per call",
            cpu,
            cpu / seconds / calls as f64 * 100.0,
            peak.load(Ordering::Relaxed),
            rss_before,
            (peak.load(Ordering::Relaxed).saturating_sub(rss_before)) as f64 / calls as f64
        );
        println!("left in Asterisk after the calls: {leaked} channels, {} bridges", pbx.bridges());
    }
    let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
    let _ = daemon.wait();
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
    println!("daemon warnings: {}", warnings.len());
    for line in warnings.iter().take(8) {
        println!("  {line}");
    }
}
