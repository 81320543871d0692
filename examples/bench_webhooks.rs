//! Webhook outbox benchmark: deliveries per second from the outbox to a local receiver, and the
//! caller's side (appending an event with its outbox row) with and without the worker running.
//!
//! ```text
//! bench_webhooks [--deliveries 10000] [--appends 2000] [--concurrency 64] [--database URL]
//! ```
//!
//! 1. Appends `--appends` `call_started` events one after another with no worker running, and
//!    times each (the event, its call row and its outbox row, in one transaction).
//! 2. Fills the outbox up to `--deliveries` rows.
//! 3. Starts the worker (`webhooks.concurrency` = `--concurrency`) against an axum receiver on
//!    127.0.0.1 that checks every signature, and meanwhile appends `--appends` more events,
//!    timed the same way. Reports the deliveries per second until the outbox is empty, and the
//!    append latency of both runs (p50, p99, max).
//!
//! `scripts/bench-webhooks` builds it in release mode and runs it on SQLite (and PostgreSQL
//! when one answers on 127.0.0.1:5432).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use asterai::dialer::SystemClock;
use asterai::feed::{Hub, Publisher};
use asterai::store::webhooks::NewWebhookEndpoint;
use asterai::store::{Direction, NewCall, Store, StoreOptions};
use asterai::webhooks::{Worker, WorkerConfig};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "bench-secret";

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    bad: AtomicU64,
}

async fn receive(State(counts): State<Arc<Counts>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let timestamp: i64 = header("x-asterai-timestamp").parse().unwrap_or_default();
    if !asterai::signing::verify(SECRET.as_bytes(), timestamp, &body, &header("x-asterai-signature")) {
        counts.bad.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    counts.accepted.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(label: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{label}: {} appends, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or_default()
    );
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn new_call(org_id: i64, n: u64) -> NewCall {
    NewCall {
        id: None,
        org_id,
        direction: Direction::Inbound,
        from: format!("+1555{n:07}"),
        to: "+15550000000".into(),
        channel: None,
        campaign_id: None,
        contact_id: None,
    }
}

/// Appends `n` call_started events one after another; each one's time in ms.
async fn appends(publisher: &Publisher, org_id: i64, first: u64, n: u64) -> Vec<f64> {
    let mut times = Vec::with_capacity(n as usize);
    for i in first..first + n {
        let started = Instant::now();
        publisher.call_started(&new_call(org_id, i)).await.expect("append");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(bench(&args));
}

async fn bench(args: &[String]) {
    let deliveries: u64 = arg(args, "--deliveries", "10000").parse().unwrap();
    let n_appends: u64 = arg(args, "--appends", "2000").parse().unwrap();
    let concurrency: usize = arg(args, "--concurrency", "64").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let default_db = format!("sqlite://{}", dir.path().join("bench.db").display());
    let url = arg(args, "--database", &default_db);
    let store = Store::connect(&StoreOptions {
        url: url.clone(),
        max_connections: 10,
        connect_timeout: Duration::from_secs(5),
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let org = store.create_org(&format!("bench{}", std::process::id()), "Bench").await.unwrap();

    let counts = Arc::new(Counts::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(counts.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    store
        .add_webhook_endpoint(&NewWebhookEndpoint {
            org_id: org.id,
            url: receiver,
            secret: "env:ASTERAI_SECRET_BENCH".into(),
            events: vec!["call.started".into()],
            enabled: true,
        })
        .await
        .unwrap();
    let publisher = Publisher::new(store.clone(), Hub::new());
    println!(
        "== {} ({} backend), concurrency {concurrency}",
        if url.starts_with("postgres") { "PostgreSQL" } else { "SQLite" },
        store.backend()
    );

    let idle = appends(&publisher, org.id, 0, n_appends).await;
    let fill = deliveries.saturating_sub(n_appends);
    let filling = Instant::now();
    let mut tasks = Vec::new();
    for part in 0..4u64 {
        let publisher = publisher.clone();
        let first = n_appends + part * fill / 4;
        let count = (part + 1) * fill / 4 - part * fill / 4;
        tasks.push(tokio::spawn(async move { appends(&publisher, org.id, first, count).await }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let backlog = store.webhook_backlog().await.unwrap();
    println!("outbox filled: {backlog} pending deliveries ({:.1} s to append them)", filling.elapsed().as_secs_f64());

    let config = WorkerConfig {
        concurrency,
        timeout: Duration::from_secs(10),
        retry_for: Duration::from_secs(24 * 3600),
        poll_interval: Duration::from_millis(100),
    };
    let worker = Worker::new(store.clone(), Arc::new(SystemClock), config, "bench")
        .with_env(Arc::new(|name| (name == "ASTERAI_SECRET_BENCH").then(|| SECRET.to_owned())));
    let stop = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(worker.run(stop.clone()));
    let busy = appends(&publisher, org.id, deliveries, n_appends).await;
    let total = backlog as u64 + n_appends;
    while counts.accepted.load(Ordering::Relaxed) < total {
        if started.elapsed() > Duration::from_secs(600) {
            println!("gave up after 600 s");
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let load = loadavg();
    stop.cancel();
    running.await.unwrap().unwrap();
    let accepted = counts.accepted.load(Ordering::Relaxed);
    println!(
        "delivered {accepted} of {total} in {elapsed:.2} s: {:.0} deliveries/s (bad signatures {}, still pending {})",
        accepted as f64 / elapsed,
        counts.bad.load(Ordering::Relaxed),
        store.webhook_backlog().await.unwrap()
    );
    summary("append without the worker", idle);
    summary("append while the worker delivers", busy);
    println!("load average at the end: {load}");
    store.close().await;
}
