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
//! And, from the daemon's own log (`asterai::conversation::stream` at debug), where the time
//! goes inside it: per barge-in the speech the detector needed, the caller frames still queued
//! for the ear when it decided, and the time to write FLUSH_MEDIA; per call the frames its
//! writer sent late (after the far end's playout clock had run dry while they waited). The
//! bench's own CPU is printed beside the daemon's, and `--daemon-cpus` / `--bench-cpus` pin
//! each process to CPUs of its own (`taskset` lists), to tell the daemon's delays from the
//! simulated callers'.
//!
//! ```text
//! bench_stream --asterai target/release/asterai --runs 1,50,200 [--daemon-cpus 0 --bench-cpus 1]
//! ```

#[path = "common/bench.rs"]
mod bench;
#[path = "../tests/support/fake_pbx.rs"]
mod fake_pbx;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bench::{Mocks, arg, free_port};
use fake_pbx::{FakePbx, Step};

const STT_MS: u64 = 150;
const LLM_FIRST_MS: u64 = 300;
const TTS_FIRST_MS: u64 = 120;
const ENDPOINT_MS: u64 = 500;
const BARGE_IN_MIN_MS: u64 = 250;
const APP: &str = "asterai-bench";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cpus = arg(&args, "--bench-cpus", "");
    if !cpus.is_empty() {
        pin_self(&cpus);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(&args));
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

/// The mocked providers (see the module docs): three sentences of 1.5 s of audio each.
async fn mocks() -> String {
    Mocks {
        stt: Duration::from_millis(STT_MS),
        llm_first: Duration::from_millis(LLM_FIRST_MS),
        llm_next: Duration::from_millis(10),
        sentences: 3,
        sentence: |n, i| format!("Reply {n} sentence number {i} is here."),
        tts_first: Duration::from_millis(TTS_FIRST_MS),
        tts_seconds: 1.5,
    }
    .start()
    .await
}

/// Runs this process (the threads started from now on) on the CPUs listed (`0,1`).
fn pin_self(cpus: &str) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it; the call reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in cpus.split(',').filter_map(|c| c.trim().parse::<usize>().ok()) {
            libc::CPU_SET(cpu, &mut set);
        }
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "cannot pin the bench to CPUs {cpus}");
    }
}

/// What the daemon logged about the calls of one run (see the module docs).
#[derive(Default)]
struct DaemonSide {
    /// Per barge-in: the detector's speech, the ear's backlog (ms of frames), writing the flush.
    speech: Vec<f64>,
    backlog: Vec<f64>,
    flush: Vec<f64>,
    frames_sent: u64,
    late_frames: u64,
}

fn field(line: &str, name: &str) -> Option<f64> {
    line.split_whitespace().find_map(|token| token.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

impl DaemonSide {
    fn read(log: &str) -> DaemonSide {
        let mut side = DaemonSide::default();
        for line in log.lines() {
            if line.contains("barge-in: FLUSH_MEDIA sent") {
                side.speech.extend(field(line, "speech_ms"));
                side.backlog.extend(field(line, "backlog_frames").map(|f| f * 20.0));
                side.flush.extend(field(line, "flush_ms"));
            } else if line.contains("streaming call's outbound audio") {
                side.frames_sent += field(line, "frames_sent").unwrap_or(0.0) as u64;
                side.late_frames += field(line, "late_frames").unwrap_or(0.0) as u64;
            }
        }
        side
    }
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
level = "warn,asterai::conversation::stream=debug"
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
    let log = dir.path().join("daemon.log");
    let daemon_cpus = arg(args, "--daemon-cpus", "");
    let daemon = bench::serve(&bin, &config, "bench", &log, Some(daemon_cpus.as_str()).filter(|c| !c.is_empty()));
    let pid = daemon.id();
    tokio::time::timeout(Duration::from_secs(30), pbx.wait_connected()).await.expect("asterai connected to ARI");

    let ask = Arc::new(fake_pbx::espeak16(bench::TRANSCRIPT));
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
        let bench_cpu_before = cpu_seconds(std::process::id());
        let log_before = std::fs::metadata(&log).map(|m| m.len() as usize).unwrap_or(0);
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
        let bench_cpu = cpu_seconds(std::process::id()) - bench_cpu_before;
        sampling.abort();
        let load = bench::loadavg();
        // Let asterai take its channels down.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while (!pbx.live_channels().is_empty() || pbx.bridges() > 0) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (mut v2v, mut barge, mut jitter, mut lateness) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut caller_lag = Vec::new();
        let (mut late, mut frames, mut failed) = (0u64, 0usize, 0usize);
        for log in &logs {
            if log.bridged_at.is_none() || log.agent_frames.is_empty() {
                failed += 1;
            }
            // The first answer follows the greeting's wait; the last utterance is the barge-in.
            v2v.extend(log.voice_to_voice().iter().map(|d| d.as_secs_f64() * 1000.0));
            barge.extend(log.barge_in().iter().map(|d| d.as_secs_f64() * 1000.0));
            caller_lag.extend(log.talked_over_lag.iter().map(|d| d.as_secs_f64() * 1000.0));
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
            "the bench's callers: worst lateness of the first 300 ms of speech over the agent (ms): {}",
            summary(&mut caller_lag)
        );
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
        println!(
            "bench process CPU (callers, fake Asterisk, mocks): {bench_cpu:.2} s = {:.0} % of one core; daemon {:.0} %",
            bench_cpu / seconds * 100.0,
            cpu / seconds * 100.0
        );
        println!("left in Asterisk after the calls: {leaked} channels, {} bridges", pbx.bridges());
        // Give the calls' last log lines a moment, then read what the daemon says of them.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let text = std::fs::read(&log).unwrap_or_default();
        let mut side = DaemonSide::read(&String::from_utf8_lossy(text.get(log_before..).unwrap_or_default()));
        println!(
            "in the daemon: barge-in speech the detector needed (ms): {}; caller audio queued for the ear then (ms): {}; \
             writing FLUSH_MEDIA (ms): {}",
            summary(&mut side.speech),
            summary(&mut side.backlog),
            summary(&mut side.flush)
        );
        println!("in the daemon: frames sent {}, sent late {}", side.frames_sent, side.late_frames);
    }
    let warnings = bench::stop(daemon, &log);
    println!("daemon warnings: {}", warnings.len());
    for line in warnings.iter().take(8) {
        println!("  {line}");
    }
}
