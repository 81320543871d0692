//! What the benchmarks that run the real `asterai serve` against mocked providers share
//! (`bench_conversation`, `bench_stream`; each includes this file with `#[path]`): the mocked
//! providers in OpenAI's shapes with fixed delays, running the `asterai` binary, and the
//! machine's load average.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::response::Response;
use axum::routing::post;
use futures_util::StreamExt;

/// What the caller says, as the mocked speech-to-text hears it.
pub const TRANSCRIPT: &str = "Could you tell me more about the plan?";

/// `--name value` from the command line, or `default`.
pub fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The mocked providers' fixed delays and answers.
#[derive(Clone)]
pub struct Mocks {
    /// Speech-to-text answers this long after the utterance is posted.
    pub stt: Duration,
    /// The chat completion's first sentence comes after this…
    pub llm_first: Duration,
    /// …and each further one this much later.
    pub llm_next: Duration,
    /// Sentences per answer; answer `n`'s sentence `i` (from 1) reads `sentence(n, i)` (each
    /// different, so nothing comes from the speech cache).
    pub sentences: usize,
    pub sentence: fn(u64, usize) -> String,
    /// Text-to-speech's first audio comes after this: the whole WAV (`response_format: wav`),
    /// or the first chunk of raw 24 kHz PCM (`pcm`), the rest in 100 ms chunks five times
    /// faster than real time.
    pub tts_first: Duration,
    /// Seconds of audio (a 300 Hz tone) per sentence.
    pub tts_seconds: f32,
}

/// A tone of 300 Hz at 24 kHz.
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

impl Mocks {
    /// Serves the mocked providers on a free loopback port; returns their base URL (up to
    /// `/v1`).
    pub async fn start(self) -> String {
        let replies = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(tone_24k(self.tts_seconds));
        let wav = Bytes::from(asterai::speech::audio::encode_wav_at(&samples, 24000));
        let Mocks { stt, llm_first, llm_next, sentences, sentence, tts_first, .. } = self;
        let app = Router::new()
            .route(
                "/v1/audio/transcriptions",
                post(move |_body: Bytes| async move {
                    tokio::time::sleep(stt).await;
                    axum::Json(serde_json::json!({ "text": TRANSCRIPT }))
                }),
            )
            .route(
                "/v1/chat/completions",
                post(move |_body: Bytes| {
                    let n = replies.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let stream = futures_util::stream::iter(0..=sentences).then(move |i| async move {
                            if i == sentences {
                                return Ok::<_, std::convert::Infallible>(Bytes::from_static(b"data: [DONE]\n\n"));
                            }
                            tokio::time::sleep(if i == 0 { llm_first } else { llm_next }).await;
                            let last = i + 1 == sentences;
                            Ok(sse_chunk(&format!("{}{}", sentence(n, i + 1), if last { "" } else { " " })))
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
                post(move |body: Bytes| {
                    let (samples, wav) = (samples.clone(), wav.clone());
                    async move {
                        let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                        tokio::time::sleep(tts_first).await;
                        if request["response_format"] == "wav" {
                            return Response::builder()
                                .header("content-type", "audio/wav")
                                .body(Body::from(wav))
                                .unwrap();
                        }
                        let chunks: Vec<Bytes> = samples
                            .chunks(2400)
                            .map(|c| Bytes::from(c.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>()))
                            .collect();
                        let stream =
                            futures_util::stream::iter(chunks.into_iter().enumerate()).then(|(i, chunk)| async move {
                                if i > 0 {
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                                Ok::<_, std::convert::Infallible>(chunk)
                            });
                        Response::builder()
                            .header("content-type", "application/octet-stream")
                            .body(Body::from_stream(stream))
                            .unwrap()
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/v1")
    }
}

/// Runs `asterai <args> --config <config>` to its end.
pub fn asterai(bin: &str, config: &std::path::Path, args: &[&str]) {
    let status = std::process::Command::new(bin)
        .args(args)
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "asterai {args:?} failed");
}

/// Migrates the store of `config`, creates the organization `org`, and starts `asterai serve`
/// with its output in `log`; with `cpus` (`taskset`'s list, e.g. `0`), on those CPUs only.
pub fn serve(
    bin: &str,
    config: &std::path::Path,
    org: &str,
    log: &std::path::Path,
    cpus: Option<&str>,
) -> std::process::Child {
    asterai(bin, config, &["migrate"]);
    asterai(bin, config, &["org", "create", org]);
    let log = std::fs::File::create(log).unwrap();
    let mut command = match cpus {
        // taskset execs asterai: the child's pid is the daemon's.
        Some(cpus) => {
            let mut command = std::process::Command::new("taskset");
            command.args(["-c", cpus, bin]);
            command
        }
        None => std::process::Command::new(bin),
    };
    command.args(["serve", "--config"]).arg(config).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap()
}

/// Stops the daemon (SIGTERM) and waits for it; returns its log's warning and error lines.
pub fn stop(mut daemon: std::process::Child, log: &std::path::Path) -> Vec<String> {
    let _ = std::process::Command::new("kill").arg(daemon.id().to_string()).status();
    let _ = daemon.wait();
    let log = std::fs::read_to_string(log).unwrap_or_default();
    log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).map(str::to_owned).collect()
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
