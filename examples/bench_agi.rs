//! Load generator for the FastAGI `health` route. It plays Asterisk: connect, send a real
//! environment block, answer the three health commands, wait for the daemon to close.
//!
//! ```text
//! bench_agi floor --listen 127.0.0.1:4600            # the minimal responder (the ceiling for everyone)
//! bench_agi load  --target 127.0.0.1:4573 --concurrency 100 --seconds 10
//! bench_agi hold  --target 127.0.0.1:4573 --sessions 10000 --pid <daemon pid>
//! ```
//!
//! `scripts/bench-agi` runs all three against a release build and prints the figures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const REPLIES: [&str; 3] = ["200 result=1\n", "200 result=1 (PJSIP/trunk-00000001)\n", "200 result=1\n"];

fn env_block(n: u64) -> String {
    format!(
        "agi_network: yes\nagi_network_script: health\nagi_request: agi://127.0.0.1:4573/health\n\
         agi_channel: PJSIP/trunk-{n:08x}\nagi_language: en\nagi_type: PJSIP\nagi_uniqueid: 1795222058.{n}\n\
         agi_version: 22.10.1\nagi_callerid: +15551230000\nagi_calleridname: Load Test\nagi_callingpres: 0\n\
         agi_callingani2: 0\nagi_callington: 0\nagi_callingtns: 0\nagi_dnid: 5550100\nagi_rdnis: unknown\n\
         agi_context: from-trunk\nagi_extension: 5550100\nagi_priority: 2\nagi_enhanced: 0.0\n\
         agi_accountcode: \nagi_threadid: 140512191747776\n\n"
    )
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("floor") => floor(arg(&args, "--listen", "127.0.0.1:4600").parse().unwrap()).await,
        Some("load") => {
            let target: SocketAddr = arg(&args, "--target", "127.0.0.1:4573").parse().unwrap();
            let concurrency: usize = arg(&args, "--concurrency", "100").parse().unwrap();
            let seconds: u64 = arg(&args, "--seconds", "10").parse().unwrap();
            load(target, concurrency, Duration::from_secs(seconds)).await;
        }
        Some("hold") => {
            let target: SocketAddr = arg(&args, "--target", "127.0.0.1:4573").parse().unwrap();
            let sessions: usize = arg(&args, "--sessions", "10000").parse().unwrap();
            let pid: u32 = arg(&args, "--pid", "0").parse().unwrap();
            hold(target, sessions, pid).await;
        }
        _ => eprintln!("usage: bench_agi floor|load|hold … (see the source's doc comment)"),
    }
}

/// The floor: reads lines up to the blank line, writes the three health commands, reads one
/// line after each, closes. No parsing, no checking.
async fn floor(listen: SocketAddr) {
    let listener = TcpListener::bind(listen).await.unwrap();
    eprintln!("floor listening on {listen}");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            let mut line = String::new();
            loop {
                line.clear();
                if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if line == "\n" {
                    break;
                }
            }
            for command in ["VERBOSE \"asterai ok\" 1\n", "GET VARIABLE CHANNEL\n", "SET VARIABLE ASTERAI_HEALTH ok\n"]
            {
                if write.write_all(command.as_bytes()).await.is_err() {
                    return;
                }
                line.clear();
                if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
            }
            let _ = write.shutdown().await;
        });
    }
}

/// One complete health session as Asterisk would run it.
async fn session(target: SocketAddr, n: u64) -> std::io::Result<()> {
    let stream = TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write.write_all(env_block(n).as_bytes()).await?;
    let mut line = String::new();
    for reply in REPLIES {
        line.clear();
        if read.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        write.write_all(reply.as_bytes()).await?;
    }
    // The daemon closes when its handler is done; Asterisk then sends HANGUP and closes too.
    let mut rest = Vec::new();
    read.read_to_end(&mut rest).await?;
    let _ = write.write_all(b"HANGUP\n").await;
    Ok(())
}

async fn load(target: SocketAddr, concurrency: usize, duration: Duration) {
    let running = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let running = running.clone();
        workers.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let mut errors = 0u64;
            let mut n = worker as u64 * 1_000_000;
            while running.load(Ordering::Relaxed) {
                let t = Instant::now();
                n += 1;
                match session(target, n).await {
                    Ok(()) => times.push(t.elapsed().as_micros() as u32),
                    Err(_) => errors += 1,
                }
            }
            (times, errors)
        }));
    }
    tokio::time::sleep(duration).await;
    running.store(false, Ordering::Relaxed);
    let mut times = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (t, e) = worker.await.unwrap();
        times.extend(t);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    times.sort_unstable();
    let pct = |p: f64| {
        times.get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1))).copied().unwrap_or(0)
    };
    println!(
        "target={target} concurrency={concurrency} sessions={} errors={errors} sessions_per_s={:.0} p50_ms={:.2} p99_ms={:.2}",
        times.len(),
        times.len() as f64 / elapsed,
        pct(0.50) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Opens `sessions` sessions, lets each get its first command, and holds them there.
async fn hold(target: SocketAddr, sessions: usize, pid: u32) {
    // Warm up the daemon's allocator and runtime so the baseline is not an idle process.
    for n in 0..200 {
        let _ = session(target, n).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let mut held = Vec::with_capacity(sessions);
    let mut batch = Vec::new();
    for n in 0..sessions {
        batch.push(tokio::spawn(async move {
            let stream = TcpStream::connect(target).await?;
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            write.write_all(env_block(10_000_000 + n as u64).as_bytes()).await?;
            let mut line = String::new();
            read.read_line(&mut line).await?;
            Ok::<_, std::io::Error>((read, write))
        }));
        if batch.len() == 500 {
            for task in batch.drain(..) {
                held.push(task.await.unwrap().expect("held session"));
            }
        }
    }
    for task in batch.drain(..) {
        held.push(task.await.unwrap().expect("held session"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    let per_session = (after.saturating_sub(before)) as f64 * 1024.0 / sessions as f64;
    println!(
        "held_sessions={} rss_before_kib={before} rss_after_kib={after} rss_growth_per_session_bytes={per_session:.0}",
        held.len()
    );
    drop(held);
}
