//! Listen-path benchmark (`scripts/bench-listen`): the latency asterai adds between a frame of a
//! call's audio arriving (what the ARI media session hands over) and that frame reaching a
//! supervisor's WebSocket, with 1 and with N listeners on one call.
//!
//! In one process: a [`Tap`] fed 20 ms frames of 16 kHz audio at real-time pace, N listeners
//! each served by [`listen::relay`] over a real WebSocket on loopback TCP, and N clients that
//! read them. Each frame carries its sequence number in its first samples; a client's receive
//! time minus the frame's hand-over time is the figure (an upper bound of asterai's share: it
//! includes the loopback hop and the client's own read).
//!
//! `bench_listen [listeners…] [--seconds S]` (default: 1 10, 20 s each).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use asterai::conversation::listen::{self, Tap};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const FRAME: Duration = Duration::from_millis(20);
const SAMPLES: usize = 320;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn run(listeners: usize, seconds: u64) {
    let (tx, rx) = mpsc::channel(listen::LISTENER_QUEUE);
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let first = Tap::start(16_000, rx, CancellationToken::new(), async {});
    let tap = first.tap.clone();
    let mut holders = vec![first];
    let call_stop = CancellationToken::new();
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let mut clients = Vec::new();
    for i in 0..listeners {
        let mut holder = if i == 0 { holders.pop().unwrap() } else { tap.join().expect("the tap runs") };
        let connect = tokio::spawn(tokio_tungstenite::connect_async(format!("ws://{addr}/")));
        let (tcp, _) = server.accept().await.unwrap();
        let _ = tcp.set_nodelay(true);
        let stop = call_stop.clone();
        tokio::spawn(async move {
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            listen::relay(&mut ws, &mut holder, "bench", &stop).await
        });
        let (mut ws, _) = connect.await.unwrap().unwrap();
        let sent = sent.clone();
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while let Some(Ok(message)) = ws.next().await {
                let Message::Binary(pcm) = message else { continue };
                let now = Instant::now();
                let seq = u16::from_le_bytes([pcm[0], pcm[1]]) as usize
                    | (u16::from_le_bytes([pcm[2], pcm[3]]) as usize) << 16;
                if let Some(at) = sent.lock().unwrap().get(seq) {
                    latencies.push(now.saturating_duration_since(*at).as_secs_f64() * 1000.0);
                }
            }
            latencies
        }));
    }
    let frames = (seconds * 1000 / FRAME.as_millis() as u64) as usize;
    let mut tick = tokio::time::interval(FRAME);
    for seq in 0..frames {
        tick.tick().await;
        let mut samples = vec![0i16; SAMPLES];
        for (i, sample) in samples.iter_mut().enumerate().skip(2) {
            *sample = ((i as f32 * 0.3).sin() * 8000.0) as i16;
        }
        samples[0] = (seq & 0xffff) as u16 as i16;
        samples[1] = (seq >> 16) as u16 as i16;
        sent.lock().unwrap().push(Instant::now());
        let _ = tx.try_send(samples);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tx);
    let mut all = Vec::new();
    for client in clients {
        all.extend(tokio::time::timeout(Duration::from_secs(10), client).await.unwrap().unwrap());
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let expected = frames * listeners;
    println!(
        "listeners={listeners} frames={frames} received={} lost={} p50={:.3} ms p99={:.3} ms max={:.3} ms",
        all.len(),
        expected.saturating_sub(all.len()),
        percentile(&all, 50.0),
        percentile(&all, 99.0),
        all.last().copied().unwrap_or(f64::NAN)
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut counts = Vec::new();
    let mut seconds = 20;
    while let Some(arg) = args.next() {
        if arg == "--seconds" {
            seconds = args.next().and_then(|s| s.parse().ok()).expect("--seconds N");
        } else {
            counts.push(arg.parse::<usize>().expect("a number of listeners"));
        }
    }
    if counts.is_empty() {
        counts = vec![1, 10];
    }
    for listeners in counts {
        run(listeners, seconds).await;
    }
}
